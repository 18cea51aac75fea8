"""What every PASE worker shares: the output type, the base class, the loss sum and the MLP head.

A worker is a small network on the encoder output ``encoded (B, T, D)`` plus a loss; its
target comes from a labeller computed on the batch's audio, on the training device. The
training loop calls ``worker(encoded, audio (B, 1, S), speaker (B,))`` and optimises each worker
with its own optimizer over ``worker.parameters()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn as nn

from cpc.dropout import Dropout
from cpc.utils.errors import ConfigError


@dataclass
class WorkerOutput:
    """``loss``: scalar to backpropagate (already reduced); ``name``: the worker's name."""

    loss: torch.Tensor
    name: str


class WorkerBatchError(ConfigError):
    """A batch a worker cannot use (e.g. a single speaker for LIM / GIM); the message says which flag to change."""


class Worker(nn.Module):
    """Base of the workers: ``forward(encoded (B, T, D), audio (B, 1, S), speaker (B,)) -> WorkerOutput``.

    ``kind`` is "regressor" or "classifier" (its section of ``workers_config``); ``weight``
    scales the worker's loss in :func:`total_worker_loss`.
    """

    kind: str = ""

    def __init__(self, name: str, weight: float = 1.0):
        super().__init__()
        self.name = name
        self.weight = float(weight)

    def forward(self, encoded: torch.Tensor, audio: torch.Tensor, speaker: torch.Tensor) -> WorkerOutput:
        raise NotImplementedError


def total_worker_loss(outputs: Iterable[WorkerOutput], workers: nn.ModuleDict) -> torch.Tensor:
    """``sum(workers[o.name].weight * o.loss)``: PASE sums the worker losses (SpeechBrain's recipe
    averages them: give every worker ``weight: 1 / n_workers`` to get that)."""
    terms = [workers[output.name].weight * output.loss for output in outputs]
    if not terms:
        raise ValueError("no worker output to sum")
    return torch.stack(terms).sum()


def check_sampling(workers: nn.ModuleDict, sampling_type: str) -> None:
    """Refuse, before training, workers that need several speakers per batch (LIM, GIM) with a
    sampler other than ``uniform`` (samespeaker and samesequence batch one speaker, sequential
    mostly one)."""
    needy = sorted(name for name, worker in workers.items() if getattr(worker, "needs_other_speakers", False))
    if needy and sampling_type != "uniform":
        raise ConfigError(f"workers {', '.join(needy)} draw negatives from other speakers of the batch, "
                          f"but --samplingType {sampling_type} batches windows of a single speaker: "
                          f"use --samplingType uniform")


def mlp_head(dim_in: int, dim_out: int, *, hidden_size: int = 256, hidden_layers: int = 1,
             dropout: float = 0.0) -> nn.Sequential:
    """PASE's MLP minion, applied on the last dimension: ``hidden_layers`` x (Linear, PReLU,
    Dropout), then a Linear to ``dim_out``. The PReLUs have one slope each (PASE's have one per
    channel), so the head works on ``(..., dim_in)`` of any rank."""
    if hidden_layers < 0 or hidden_size < 1:
        raise ValueError(f"hidden_layers must be >= 0 and hidden_size >= 1; got {hidden_layers}, {hidden_size}")
    layers: list[nn.Module] = []
    width = dim_in
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden_size), nn.PReLU(), Dropout(dropout)]
        width = hidden_size
    layers.append(nn.Linear(width, dim_out))
    return nn.Sequential(*layers)
