"""What a training step minimises: a CPC / CPC-CTC criterion, or a set of PASE workers.

Both give a :class:`~cpc.criterion.base.CriterionOutput` for a batch and the model's outputs,
so one training loop serves both. ``step_losses`` holds the criterion's per-step (or
per-position) losses, or one loss per worker (NaN for a worker that could not use the batch).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from cpc.criterion.base import CriterionOutput
from cpc.criterion.workers import WorkerBatchError, total_worker_loss
from cpc.data.batch import Batch
from cpc.precision import autocast


class CriterionObjective:
    """A criterion of the registry (cpc, cpcctc, or a supervised one) on the contexts and
    encoded frames. Its labels are the batch's field named by the criterion's ``label_field``
    (``phones`` for the phone criteria), else the speakers."""

    def __init__(self, criterion: nn.Module) -> None:
        self.criterion = criterion
        self.modules = [criterion]
        self.step_names: list[str] | None = None

    def __call__(self, batch: Batch, c_feature: torch.Tensor, encoded: torch.Tensor) -> CriterionOutput:
        labels = getattr(batch, getattr(self.criterion, "label_field", "speaker"))
        return self.criterion(c_feature, encoded, labels)


class WorkerObjective:
    """PASE workers on the encoded frames; the loss is the weighted sum of the worker losses.

    A worker that cannot use a batch (LIM / GIM on a batch of a single speaker, which uniform
    sampling can draw on a corpus of few speakers) is left out of that batch's loss. Workers
    get the speaker labels on the host, so that checking them never waits for the GPU.
    """

    def __init__(self, workers: nn.ModuleDict) -> None:
        self.workers = workers
        self.modules = [workers]
        self.step_names = list(workers.keys())

    def __call__(self, batch: Batch, c_feature: torch.Tensor, encoded: torch.Tensor) -> CriterionOutput:
        outputs, losses = [], []
        speaker = batch.speaker_host if batch.speaker_host is not None else batch.speaker
        for worker in self.workers.values():
            try:
                out = worker(encoded, batch.audio, speaker)
            except WorkerBatchError:
                losses.append(encoded.new_full((), float("nan")))
                continue
            outputs.append(out)
            losses.append(out.loss.detach())
        return CriterionOutput(total_worker_loss(outputs, self.workers), torch.stack(losses),
                               encoded.new_zeros(0))


class TrainStep(nn.Module):
    """The model and its objective as one module, ``batch -> CriterionOutput``: the unit that
    DistributedDataParallel wraps (gradients of the criterion or workers are averaged too).
    The forward runs under ``precision``'s autocast (see :mod:`cpc.precision`)."""

    def __init__(self, model: nn.Module, objective: CriterionObjective | WorkerObjective,
                 precision: str = "fp32") -> None:
        super().__init__()
        self.model = model
        self.objective_modules = nn.ModuleList(objective.modules)
        self.objective = objective
        self.precision = precision

    def forward(self, batch: Batch) -> CriterionOutput:
        with autocast(self.precision, batch.audio.device):
            c_feature, encoded, _ = self.model(batch.audio, batch.speaker)
            out = self.objective(batch, c_feature, encoded)
        out.context, out.encoded = c_feature.detach(), encoded.detach()
        return out
