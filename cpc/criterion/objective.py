"""What a training step minimises, as one interface: a criterion of the registry (CPC, CPC-CTC,
a supervised one) or a recipe of PASE workers.

The trainer, validation, DDP, checkpoints, the collapse guard, capture and plots ask the
:class:`Objective` what they need (the split of Lightning's ``LightningModule`` from its
``Trainer``); none of them tests which objective it holds:

* ``objective(batch, c_feature, encoded)`` -> :class:`~cpc.criterion.base.CriterionOutput`,
  whose ``step_losses`` are the criterion's per-step (or per-position) losses, or one loss per
  worker (NaN for a worker that could not use the batch), named by ``step_names``;
* ``state_key``: the checkpoint key of its weights (CPC_audio's ``cpcCriterion``, ``workers``);
* ``parameter_parts()``: its parameters by part, for gradient norms and clipping;
* ``rate_groups(model)``: its optimisers, each a parameter list with its learning rate and
  per-epoch schedule (one Adam over model and criterion; PASE: one for the encoder and one
  per worker, on the recipe's rates);
* ``validation_sampling``: how validation batches are drawn;
* ``chance_loss()``: the loss of a model that knows nothing (None where there is none);
* ``capture_kinds`` and ``capture_module``: what a capture can ask of it (cpc.capture.kinds);
* ``prepare(batches)``: once before the first epoch of a fresh run (PASE: the workers' target
  statistics).

``build_objective`` builds the one a run's options ask for.
"""
from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable

import torch
import torch.nn as nn

from cpc.criterion.base import CriterionOutput
from cpc.criterion.registry import build_criterion
from cpc.criterion.workers import (WorkerBatchError, build_workers, check_sampling,
                                   estimate_target_stats, total_worker_loss)
from cpc.data.batch import Batch
from cpc.utils.optim import lr_factor, pase_lr_factor

# The capture kinds (cpc.capture.kinds) a registered criterion produces with ``capture=True``:
# the self-supervised criteria; the supervised ones and PASE workers produce none.
CRITERION_CAPTURES: dict[str, tuple[str, ...]] = {
    "cpc": ("pred",),
    "cpcctc": ("pred", "cpcctc_align", "cpcctc_log_scores"),
}


@dataclass(frozen=True)
class RateGroup:
    """One optimiser's parameters, base learning rate and per-epoch rate multiplier."""

    params: list[nn.Parameter]
    lr: float
    schedule: Callable[[int], float]


class Objective(ABC):
    """What a training step minimises (see the module docstring)."""

    state_key: ClassVar[str]
    validation_sampling: ClassVar[str] = "sequential"
    has_unused_parameters: ClassVar[bool] = False  # parameters some batches give no gradient
    uses_rate_flags: ClassVar[bool] = True  # whether --learningRate and the schedule flags apply
    module: nn.Module  # its trained parameters
    step_names: list[str] | None = None  # names of the step losses (None: numbered steps)
    capture_kinds: tuple[str, ...] = ()

    @abstractmethod
    def __call__(self, batch: Batch, c_feature: torch.Tensor,
                 encoded: torch.Tensor) -> CriterionOutput:
        """The loss of one batch from the model's outputs."""

    @abstractmethod
    def rate_groups(self, model: nn.Module) -> dict[str, RateGroup]:
        """The optimisers to build, by name ("model" first), over ``model`` and this objective."""

    @property
    def capture_module(self) -> nn.Module | None:
        """The module a capture calls with ``capture=True`` (None: it produces no kind)."""
        return None

    def parameter_parts(self) -> dict[str, list[nn.Parameter]]:
        """Its parameters by part, beside the model's encoder and context parts."""
        return {}

    def chance_loss(self) -> float | None:
        """The loss of a model that knows nothing (None: no such level)."""
        return None

    def prepare(self, batches: Callable[[], Iterable[Batch]]) -> None:
        """Once, before the first epoch of a fresh run (on rank 0 under torchrun, whose
        state DDP copies to the others); ``batches`` makes training batches."""

    def load_weights(self, state: dict) -> None:
        """Its weights from a checkpoint's content."""
        self.module.load_state_dict(state[self.state_key])


class CriterionObjective(Objective):
    """A criterion of the registry on the contexts and encoded frames. Its labels are the
    batch's field named by the criterion's ``label_field`` (``phones`` for the phone
    criteria), else the speakers."""

    state_key = "cpcCriterion"

    def __init__(self, criterion: nn.Module, name: str = "cpc", lr: float = 2e-4,
                 schedule: Callable[[int], float] = lambda epoch: 1.0) -> None:
        self.criterion = self.module = criterion
        self.name, self.lr, self.schedule = name, lr, schedule
        self.capture_kinds = CRITERION_CAPTURES.get(name, ())

    def __call__(self, batch: Batch, c_feature: torch.Tensor,
                 encoded: torch.Tensor) -> CriterionOutput:
        labels = getattr(batch, getattr(self.criterion, "label_field", "speaker"))
        return self.criterion(c_feature, encoded, labels)

    @property
    def capture_module(self) -> nn.Module | None:
        return self.criterion if self.capture_kinds else None

    def rate_groups(self, model: nn.Module) -> dict[str, RateGroup]:
        return {"model": RateGroup(list(model.parameters()) + list(self.criterion.parameters()),
                                   self.lr, self.schedule)}

    def parameter_parts(self) -> dict[str, list[nn.Parameter]]:
        return {"criterion": list(self.criterion.parameters())}

    def chance_loss(self) -> float | None:
        chance = getattr(self.criterion, "chance_loss", None)
        return float(chance()) if chance is not None else None


class WorkerObjective(Objective):
    """PASE workers on the encoded frames; the loss is the weighted sum of the worker losses.

    A worker that cannot use a batch (LIM / GIM on a batch of a single speaker, which uniform
    sampling can draw on a corpus of few speakers) is left out of that batch's loss. Workers
    get the speaker labels on the host, so that checking them never waits for the GPU. Each
    worker has its own optimiser; the recipe (``--config``) sets the rates and their decay.
    Validation batches are drawn uniformly: the classifiers need several speakers per batch,
    which sequential windows rarely have.
    """

    state_key = "workers"
    validation_sampling = "uniform"
    has_unused_parameters = True  # the workers a batch leaves out
    uses_rate_flags = False

    def __init__(self, workers: nn.ModuleDict, recipe: dict, stats_batches: int) -> None:
        self.workers = self.module = workers
        self.recipe = recipe  # cpc.config_file's reading of --config (cpc.criterion.recipe)
        self.stats_batches = stats_batches
        self.step_names = list(workers.keys())

    def __call__(self, batch: Batch, c_feature: torch.Tensor,
                 encoded: torch.Tensor) -> CriterionOutput:
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

    def rate_groups(self, model: nn.Module) -> dict[str, RateGroup]:
        recipe = self.recipe
        schedule = lambda epoch: pase_lr_factor(epoch, recipe["lr_update_interval"],  # noqa
                                                recipe["decay_factor"])
        groups = {"model": RateGroup(list(model.parameters()), recipe["encoder_lr_start"],
                                     schedule)}
        groups.update({f"worker_{name}": RateGroup(list(worker.parameters()),
                                                   recipe["worker_lr_start"], schedule)
                       for name, worker in self.workers.items()})
        return groups

    def parameter_parts(self) -> dict[str, list[nn.Parameter]]:
        return {"workers": list(self.workers.parameters())}

    def prepare(self, batches: Callable[[], Iterable[Batch]]) -> None:
        """The normalising regressors' target mean and std, from ``stats_batches`` batches."""
        print(f"estimating the workers' target statistics on {self.stats_batches} batches",
              flush=True)
        estimate_target_stats(self.workers, batches(), self.stats_batches)


def build_objective(args: argparse.Namespace, criterion: str, recipe: dict | None, *,
                    dim_context: int, dim_encoded: int, n_speakers: int = 0,
                    n_phones: int = 0) -> Objective:
    """The objective of a run: the PASE workers of ``recipe`` (``--config``), else the
    registered ``criterion`` on CPC_audio's learning rate and per-epoch schedule."""
    if recipe:
        workers = build_workers(recipe["workers_config"], dim_encoded)
        check_sampling(workers, args.samplingType)
        return WorkerObjective(workers, recipe, args.pase_stats_batches)
    module = build_criterion(criterion, args, dim_context=dim_context, dim_encoded=dim_encoded,
                             n_speakers=n_speakers, n_phones=n_phones)
    return CriterionObjective(module, criterion, args.learningRate,
                              lambda epoch: lr_factor(epoch, args.schedulerRamp,
                                                      args.schedulerStep))


def objective_capture_kinds(criterion: str, recipe: dict | None) -> tuple[str, ...]:
    """The criterion kinds a run's objective can capture, known before it is built."""
    return () if recipe else CRITERION_CAPTURES.get(criterion, ())


def chance_loss_of(args: argparse.Namespace, criterion: str) -> float | None:
    """The chance level of a saved run's self-supervised criterion, built from its args alone
    (None for PASE workers and the supervised criteria, whose class counts are not saved)."""
    if getattr(args, "pase_settings", None) or criterion not in CRITERION_CAPTURES:
        return None
    return CriterionObjective(build_criterion(criterion, args, dim_context=args.hiddenGar,
                                              dim_encoded=args.hiddenEncoder),
                              criterion).chance_loss()

