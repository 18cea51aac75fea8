"""Frame features to cluster or quantize: which model makes them, and a disk cache of a corpus's.

A feature maker is a trained checkpoint's, its architecture with seeded random weights
(``random_init``), or MFCCs: the three rows of the "what did pretraining buy" table. The
clustering reads a corpus's features once into a float32 cache file (appended file by file,
then memory-mapped), so corpora larger than memory can be clustered, and every Lloyd
iteration reads features instead of re-running the model.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from cpc.feature_loader import FeatureModule, buildFeature, loadModel
from cpc.hub import LayerFeatureModule, layer_feature_maker
from cpc.model import CPCModel, MFCCEncoder, NoAR
from cpc.utils.errors import ConfigError


def build_feature_maker(source: str, checkpoint: str | None, *, encoder_layer: bool = False,
                        level_gru: int | None = None, mfcc_dim: int = 13, seed: int = 0,
                        state_dict: dict | None = None) -> nn.Module:
    """Eval-mode feature maker ``(B, 1, S) -> (B, T, D)`` of ``source`` (see the module doc).

    ``level_gru`` K takes context-network layer K (1-based), ``encoder_layer`` the encoder
    output. ``random_init`` weights are drawn under ``torch.manual_seed(seed)``, unless
    ``state_dict`` gives them (as saved in a clustering checkpoint).
    """
    if source == "mfcc":
        if encoder_layer or level_gru is not None:
            raise ConfigError("--features mfcc has no encoder or context layers: drop "
                              "--encoder_layer / --level_gru")
        return FeatureModule(CPCModel(MFCCEncoder(mfcc_dim), NoAR(mfcc_dim)), get_encoded=False).eval()
    if source not in ("checkpoint", "random_init"):
        raise ConfigError(f"unknown feature source {source!r}")
    if not checkpoint or checkpoint == "-":
        raise ConfigError(f"--features {source} needs a checkpoint (pathCheckpoint)")
    torch.manual_seed(seed)
    model = loadModel([checkpoint], loadStateDict=(source == "checkpoint"))[0]
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return layer_feature_maker(model, get_encoded=encoder_layer, level=level_gru, level_flag="--level_gru",
                               encoded_flag="--encoder_layer")


def model_weights(maker: nn.Module) -> dict[str, torch.Tensor]:
    """The CPC model's state dict inside a feature maker (what ``state_dict`` takes back)."""
    inner = maker.model if isinstance(maker, LayerFeatureModule) else maker.featureMaker
    return {name: tensor.cpu() for name, tensor in inner.state_dict().items()}


@dataclass
class FeatureCache:
    """Features of several files, concatenated in a float32 file: ``frames()`` maps it;
    file ``i`` holds rows ``offsets[i]:offsets[i + 1]``."""

    path: Path
    dim: int
    stems: list[str]
    offsets: list[int]

    @property
    def n_frames(self) -> int:
        return self.offsets[-1]

    def frames(self) -> np.ndarray:
        return np.memmap(self.path, dtype=np.float32, mode="r", shape=(self.n_frames, self.dim))


def cache_features(maker: nn.Module, files: list[tuple[str, Path]], path: str | Path, *,
                   chunk_samples: int, buffer_bytes: int, device: torch.device,
                   progress: bool = True) -> FeatureCache:
    """Write the features of ``files`` (``(stem, audio path)``) to the cache file ``path``,
    buffering up to ``buffer_bytes`` in memory between writes; the model runs on chunks of
    ``chunk_samples`` (non-strict: a file's last chunk is shorter)."""
    maker = maker.to(device)
    path = Path(path)
    stems, offsets, buffer, buffered, dim = [], [0], [], 0, None
    with open(path, "wb") as handle:
        for stem, audio in tqdm(files, desc="features", unit="file", file=sys.stderr,
                                disable=not progress):
            features = buildFeature(maker, audio, strict=False, maxSizeSeq=chunk_samples)[0]
            array = features.numpy().astype(np.float32, copy=False)
            dim = array.shape[1] if dim is None else dim
            stems.append(stem)
            offsets.append(offsets[-1] + array.shape[0])
            buffer.append(array)
            buffered += array.nbytes
            if buffered >= buffer_bytes:
                handle.write(np.concatenate(buffer).tobytes())
                buffer, buffered = [], 0
        if buffer:
            handle.write(np.concatenate(buffer).tobytes())
        handle.flush()
        os.fsync(handle.fileno())
    return FeatureCache(path, dim, stems, offsets)
