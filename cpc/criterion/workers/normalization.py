"""Z-normalisation statistics of the regression targets, estimated on training audio before training.

The statistics are the global mean and standard deviation of each target channel over *all
frames* of the audio seen (Chan et al.'s parallel update of count / mean / M2, in float64), not
PASE's ``std`` of per-utterance ``std``s, which ignores how utterance means differ and so
under-estimates the spread. They are stored as buffers of each regressor (``target_mean``,
``target_std``, ``stats_frames``), hence saved in its state dict.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

MIN_STD = 1e-6  # channels flatter than this are only centred (their std is set to 1)


class RunningMoments:
    """Per-channel count, mean and sum of squared deviations, updated batch by batch."""

    def __init__(self, n_channels: int, device: torch.device | str | None = None):
        self.count = 0
        self.mean = torch.zeros(n_channels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_channels, dtype=torch.float64, device=device)

    def update(self, values: torch.Tensor) -> None:
        """Add the frames of ``values (B, C, T)``."""
        frames = values.transpose(1, 2).reshape(-1, values.shape[1]).to(torch.float64)
        n = frames.shape[0]
        if n == 0:
            return
        mean = frames.mean(dim=0)
        m2 = (frames - mean).square().sum(dim=0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    def std(self) -> torch.Tensor:
        """Population standard deviation (numpy's ``std`` with ``ddof=0``)."""
        return (self.m2 / max(self.count, 1)).sqrt()


@torch.no_grad()
def estimate_target_stats(workers: nn.ModuleDict | Iterable[nn.Module], batches: Iterable,
                          max_batches: int) -> None:
    """Fill ``target_mean`` / ``target_std`` of every normalising regressor from ``batches``.

    ``batches`` yields audio tensors ``(B, 1, S)`` (any ``S``, varying between batches) or
    objects with an ``audio`` attribute (:class:`cpc.data.batch.Batch`); at most ``max_batches`` are
    read. Audio is moved to each regressor's device. Targets of flat channels keep a std of 1.
    """
    modules = workers.values() if isinstance(workers, nn.ModuleDict) else workers
    regressors = [w for w in modules if getattr(w, "normalize", False)]
    if not regressors or max_batches < 1:
        return
    moments = [RunningMoments(w.labeller.dim, w.target_mean.device) for w in regressors]
    seen = 0
    for batch in batches:
        if seen >= max_batches:
            break
        audio = getattr(batch, "audio", batch)
        for worker, moment in zip(regressors, moments):
            moment.update(worker.labeller(audio.to(worker.target_mean.device)))
        seen += 1
    if seen == 0:
        raise ValueError("no batch to estimate the target statistics from")
    for worker, moment in zip(regressors, moments):
        std = moment.std()
        worker.target_mean.copy_(moment.mean)
        worker.target_std.copy_(torch.where(std < MIN_STD, torch.ones_like(std), std))
        worker.stats_frames.fill_(moment.count)
