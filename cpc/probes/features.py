"""The frozen features of a dataset's windows, computed once per probe run.

The encoder is frozen, so recomputing the features every probe epoch would be waste; they are
computed from the datasets already in memory. Speaker probes need one pooled vector per window
(the last context frame, CPC_audio's choice, and the time mean); phone probes need every frame,
kept in float16 within a memory budget (beyond it a regular subset of the windows is used, and
the logs say so).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm import tqdm

from cpc.data.packs import AudioBatchData
from cpc.utils.constants import FRAME_SIZE


@dataclass
class FeatureSet:
    """Frozen features of the windows of one dataset, with their labels."""

    last: torch.Tensor  # (N, Dc) last context frame of each window
    mean: torch.Tensor  # (N, Dc) time mean of the contexts
    speakers: torch.Tensor  # (N,)
    frames: torch.Tensor | None = None  # (N, T, D) float16, contexts or encoded frames
    phones: torch.Tensor | None = None  # (N, T)
    kept_fraction: float = 1.0  # fraction of the windows kept within the memory budget


@torch.no_grad()
def extract_features(model: nn.Module, dataset: AudioBatchData, *, batch_size: int,
                     device: torch.device, with_frames: bool, budget_gb: float,
                     get_encoded: bool = False) -> FeatureSet:
    """Run the frozen model once over the dataset's windows (sequential, no random offset);
    ``with_frames`` keeps every frame (phone probes) within ``budget_gb``, of the encoder
    output z under ``get_encoded``."""
    loader = dataset.getDataLoader(batch_size, "sequential", randomOffset=False)
    stride = 1
    if with_frames:
        frames = dataset.size_window // FRAME_SIZE
        per_window = frames * feature_dim(model, get_encoded) * 2  # float16
        max_windows = max(1, int(budget_gb * 2**30 // per_window))
        stride = max(1, math.ceil(dataset.n_windows() / max_windows))
    was_training = model.training
    model.eval()
    last, mean, speakers, frame_feats, phones = [], [], [], [], []
    for index, batch in enumerate(tqdm(loader, desc="features", leave=False, mininterval=5)):
        if index % stride:
            continue
        c_feature, encoded, _ = model(batch.audio.to(device), None)
        last.append(c_feature[:, -1].float().cpu())
        mean.append(c_feature.mean(dim=1).float().cpu())
        speakers.append(batch.speaker)
        if with_frames:
            if batch.phones is None:
                raise ValueError("phone probes need phone labels (--path_phone_data)")
            chosen = encoded if get_encoded else c_feature
            n = min(chosen.shape[1], batch.phones.shape[1])
            frame_feats.append(chosen[:, :n].half().cpu())
            phones.append(batch.phones[:, :n])
    model.train(was_training)
    return FeatureSet(last=torch.cat(last), mean=torch.cat(mean), speakers=torch.cat(speakers),
                      frames=torch.cat(frame_feats) if with_frames else None,
                      phones=torch.cat(phones) if with_frames else None,
                      kept_fraction=1.0 / stride)


def feature_dim(model: nn.Module, get_encoded: bool) -> int:
    """Width of the features probed: the encoder output z's or the contexts c's."""
    return model.dim_encoded if get_encoded else model.dim_context


def probe_inputs(name: str, features: FeatureSet) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (N, T', D), labels) of a probe: pooled vectors are sequences of length 1."""
    if name == "speaker":
        return features.last[:, None], features.speakers
    if name == "speaker_mean":
        return features.mean[:, None], features.speakers
    return features.frames, features.phones
