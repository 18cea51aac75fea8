"""Clustering checkpoints in CPC_audio's layout, so that its tools and ours read each other's.

``<name>.pt`` is a ``torch.save`` dict with ``state_dict`` (``{"Ck": 1 x k x D}``, the state of
CPC_audio's ``kMeanCluster``), ``encoder_layer``, ``n_clusters`` and ``dim``; the intermediate
``checkpoint_last.pt`` / ``checkpoint_<iter>.pt`` add ``iteration`` and ``lastDiff``. Beside it,
``<name>_args.json`` holds the clustering's flags (``pathCheckpoint``, ``level_gru``, ...), from
which the quantizer rebuilds the feature maker. Ours add ``kmeans_state`` (to resume exactly)
and, for ``--features random_init``, ``feature_weights`` (the random model's weights).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cpc.utils import checkpoint as ckpt
from cpc.utils.errors import CheckpointError


def args_path(checkpoint: str | Path) -> Path:
    """``<name>_args.json`` beside ``<name>.pt`` (CPC_audio's naming)."""
    return Path(f"{os.path.splitext(checkpoint)[0]}_args.json")


def clustering_content(centroids: torch.Tensor, *, encoder_layer: bool, **extra) -> dict:
    """The dict saved for ``k x D`` centroids, with CPC_audio's keys first."""
    k, dim = centroids.shape
    return {"state_dict": {"Ck": centroids.detach().cpu().float().view(1, k, dim)},
            "encoder_layer": bool(encoder_layer), "n_clusters": k, "dim": dim, **extra}


def save_clustering(path: str | Path, content: dict) -> None:
    """Atomically write a clustering checkpoint (temp name, then rename)."""
    ckpt.save_torch(path, content)


@dataclass
class Clustering:
    """A loaded clustering checkpoint: centroids ``k x D`` and the flags that made them."""

    centroids: torch.Tensor
    args: dict
    content: dict


def read_args(checkpoint: str | Path) -> dict:
    """The clustering's flags: ``<name>_args.json``, else ``checkpoint_args.json`` beside it."""
    for candidate in (args_path(checkpoint), Path(checkpoint).parent / ckpt.ARGS_FILE):
        if candidate.is_file():
            return ckpt.read_json(candidate)
    raise CheckpointError(f"{args_path(checkpoint)} does not exist: the clustering's flags are "
                          f"written there by cpc.units.cluster; copy it beside {checkpoint}")


def load_clustering(path: str | Path, with_args: bool = True) -> Clustering:
    """Read a clustering checkpoint (ours or CPC_audio's); anything else is a
    :class:`CheckpointError` naming the file."""
    content = ckpt.load_torch(path)
    try:
        centroids = content["state_dict"]["Ck"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path} is not a clustering checkpoint (no state_dict.Ck "
                              f"centroids): give the .pt written by cpc.units.cluster") from None
    if centroids.dim() != 3 or centroids.shape[0] != 1:
        raise CheckpointError(f"{path}: centroids of shape {tuple(centroids.shape)}, expected "
                              f"1 x k x D")
    return Clustering(centroids[0].float(), read_args(path) if with_args else {}, content)
