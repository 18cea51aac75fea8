"""The training engine: the state a run trains and saves, one evaluation pass, and the epoch
loop with its hooks.

:class:`Trainer.fit` runs the epochs: training pass, validation pass, the run log,
then every :class:`Hook` in order (health, checkpoint, probes, capture + stats...). A new job
is a new hook in the list that ``cpc/train.py`` builds; the loop does not change.

The training pass is written for accelerators, where every read of a device value stalls the
host until the device has caught up:

* batches are built ahead in a background thread (pinned memory on CUDA), copied
  asynchronously;
* ``--update_freq K`` micro-batches are accumulated into one update, without DDP's gradient
  all-reduce on the first K - 1 (``no_sync``);
* the epoch's sums, the health figures and the count of non-finite losses stay on the device;
  every ``--logging_step`` updates (and at the epoch's end) one *sync point* reads them all
  at once, averaged over the ranks: one host synchronisation per logging step;
* a stop signal (SIGTERM, first Ctrl-C) and rank 0's checkpoint clock are voted on without
  blocking (:class:`~cpc.utils.distributed.FlagVote`), so all ranks stop or save at the same
  step.

A stop, or a step checkpoint (``--save_interval_steps`` / ``--save_interval_minutes``), records
the epoch's *progress*: batches done, sums so far, every rank's random state. Rerunning the
command replays the epoch's plan, passes over its done batches and continues exactly.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from cpc.audio_check import name_some, suspect_audio
from cpc.criterion.base import CriterionOutput
from cpc.criterion.objective import Objective
from cpc.data.batch import Batch
from cpc.data.corpus import CorpusData
from cpc.data.loader import AudioLoader
from cpc.data.plan import EPOCH_STREAM, mix_seed
from cpc.data.prefetch import Prefetcher
from cpc.precision import autocast
from cpc.run_log import TensorBoard, append_logs, epoch_scalars, record_epoch_time
from cpc.utils import checkpoint as ckpt
from cpc.utils.constants import SAMPLE_RATE
from cpc.utils.distributed import (DistInfo, FlagVote, barrier, gather_objects, mean_over_ranks,
                                   min_over_ranks, sum_over_ranks)
from cpc.utils.errors import CPCError
from cpc.utils.optim import LearningRate, Updater
from cpc.utils.signals import StopRequest


# --------------------------------------------------------------------------------------------
# Random state
# --------------------------------------------------------------------------------------------

def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally forbid nondeterministic kernels."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic != torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic)  # imports torch._inductor (~2.5 s)
    seed_generators(seed)


def seed_generators(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int, generation: int, rank: int) -> None:
    """Seed every generator for one epoch of one rank: an epoch's draws (negatives, dropout)
    depend only on these numbers, so a run resumed at an epoch's start needs no saved state."""
    seed_generators(mix_seed(seed, epoch, generation, rank, EPOCH_STREAM))


def rng_state(device: torch.device) -> dict:
    """This process's generators (the current GPU's only), for resuming mid-epoch."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                       *np_state[2:])}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------------------------
# Epoch sums and statistics
# --------------------------------------------------------------------------------------------

@dataclass
class EpochStats:
    """Per-step losses and accuracies averaged over the windows of an epoch."""

    loss: float = float("nan")  # the criterion's own loss (CPC: sum over steps; CPC-CTC: mean cost)
    step_losses: list[float] = field(default_factory=list)
    step_accuracies: list[float] = field(default_factory=list)
    n_windows: int = 0
    seconds: float = 0.0
    batches_done: int = 0  # batches of the epoch done, counting skipped and resumed-over ones
    cut: bool = False  # the run stopped in this epoch (a signal or a hook), before its end
    audio_seconds: float = 0.0  # audio of the windows passed over
    totals: dict = field(default_factory=dict)  # EpochTotals state, all ranks summed
    nonfinite_batches: int = 0  # batches whose loss is NaN or infinite (then ``loss`` is too)
    nonfinite_files: list[str] = field(default_factory=list)  # the files those batches read

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.step_accuracies)) if self.step_accuracies else float("nan")

    def describe(self) -> str:
        accuracy = "" if np.isnan(self.accuracy) else f" acc {self.accuracy:.3f}"
        return f"loss {self.loss:.4f}{accuracy}"


class EpochTotals:
    """Window-weighted sums of an epoch's per-step values (NaN entries, undefined for a batch,
    left out), windows and samples, kept on ``device`` (adding one reads nothing back). A
    batch's loss is never left out: one non-finite loss makes the epoch's loss non-finite, and
    such batches are counted. A cut epoch's totals are saved with its checkpoint and taken up
    when it resumes, so its logged means equal an uninterrupted epoch's."""

    def __init__(self, state: dict | None = None, device: torch.device | str = "cpu") -> None:
        state = state or {}
        self.device = torch.device(device)
        self.sums = {k: v.to(self.device) for k, v in state.get("sums", {}).items()}
        self.counts = {k: v.to(self.device) for k, v in state.get("counts", {}).items()}
        self.n_windows = int(state.get("n_windows", 0))
        self.n_samples = int(state.get("n_samples", 0))
        self.seconds = float(state.get("seconds", 0.0))
        self.nonfinite = torch.as_tensor(state.get("nonfinite", 0.0), dtype=torch.float64,
                                         device=self.device)

    def add(self, name: str, values: torch.Tensor, size: int, keep_nan: bool = False) -> None:
        """Add a batch's ``values`` weighted by its ``size`` windows; NaN entries count as
        undefined and are left out, unless ``keep_nan``."""
        values = values.detach().double().reshape(-1)
        defined = torch.ones_like(values, dtype=torch.bool) if keep_nan else ~torch.isnan(values)
        weighted = torch.where(defined, values, 0.0) * size
        counted = defined.double() * size
        self.sums[name] = self.sums[name] + weighted if name in self.sums else weighted
        self.counts[name] = self.counts[name] + counted if name in self.counts else counted

    def add_batch(self, out: CriterionOutput, size: int, n_samples: int) -> None:
        """One batch: its loss, per-step losses and accuracies, windows and samples."""
        self.add("loss", out.loss, size, keep_nan=True)
        self.nonfinite = self.nonfinite + (~torch.isfinite(out.loss.detach())).double().sum()
        self.add("steps", out.step_losses, size)
        self.add("accs", out.step_accuracies, size)
        self.n_windows += size
        self.n_samples += n_samples

    def reduced(self, info: DistInfo) -> "EpochTotals":
        """The totals of every rank, in one collective. A rank may have had no batch (the
        ranks' validation shares differ), so the layout is agreed on first."""
        layout = {name: value.numel() for name, value in self.sums.items()}
        if info.active:
            layout = {name: size for sizes in gather_objects(layout, info)
                      for name, size in sizes.items()}
        zeros = lambda size: torch.zeros(size, dtype=torch.float64, device=self.device)  # noqa
        flat = torch.cat([self.sums.get(name, zeros(size)) for name, size in layout.items()] +
                         [self.counts.get(name, zeros(size)) for name, size in layout.items()] +
                         [torch.tensor([self.n_windows, self.n_samples], dtype=torch.float64,
                                       device=self.device), self.nonfinite.reshape(1)])
        sums, counts, sizes = sum_over_ranks(flat, info).split(
            [sum(layout.values()), sum(layout.values()), 3])
        out = EpochTotals({"seconds": self.seconds}, self.device)
        out.sums = dict(zip(layout, sums.split(list(layout.values()))))
        out.counts = dict(zip(layout, counts.split(list(layout.values()))))
        out.n_windows, out.n_samples, nonfinite = sizes.tolist()
        out.n_windows, out.n_samples = int(out.n_windows), int(out.n_samples)
        out.nonfinite = torch.tensor(nonfinite, dtype=torch.float64, device=self.device)
        return out

    def state(self) -> dict:
        """Plain CPU values, for a checkpoint."""
        return {"sums": {k: v.cpu() for k, v in self.sums.items()},
                "counts": {k: v.cpu() for k, v in self.counts.items()},
                "n_windows": self.n_windows, "n_samples": self.n_samples,
                "seconds": self.seconds, "nonfinite": float(self.nonfinite)}

    def stats(self, batches_done: int, *, cut: bool) -> EpochStats:
        if self.n_windows == 0:
            return EpochStats(seconds=self.seconds, batches_done=batches_done,
                              cut=cut, totals=self.state())
        mean = {name: (self.sums[name] / self.counts[name]).tolist() for name in self.sums}
        return EpochStats(loss=mean["loss"][0], step_losses=mean["steps"],
                          step_accuracies=mean["accs"], n_windows=self.n_windows,
                          seconds=self.seconds, batches_done=batches_done,
                          cut=cut, audio_seconds=self.n_samples / SAMPLE_RATE,
                          totals=self.state(), nonfinite_batches=int(self.nonfinite))


# --------------------------------------------------------------------------------------------
# Non-finite losses
# --------------------------------------------------------------------------------------------

class NonFiniteLoss(CPCError):
    """The loss became NaN or infinite more often than --allow_nan_steps allows; ``suspect``
    says why the batch's audio may be at fault (None: nothing found)."""

    def __init__(self, message: str, suspect: str | None = None) -> None:
        super().__init__(message)
        self.suspect = suspect


def files_union(files: Sequence[list[str]]) -> list[str]:
    """The sorted union of several ranks' file lists."""
    return sorted({name for part in files for name in part})


def read_from(files: list[str]) -> str:
    """``', reading <files>'`` for a message about a batch, or nothing without files."""
    return f", reading {name_some(files)}" if files else ""


class NonFiniteWatch:
    """Training batches whose loss is not finite.

    By default (``--allow_nan_steps 0``) they are counted on the device and the count is read
    at the next sync point, or before anything is saved: the run then stops, naming the epoch's
    first such batch, and no state computed after it is ever written. With ``allowed > 0``
    every loss is read at once (one host sync per batch) so that such a batch can be skipped,
    up to ``allowed`` of them in the run. Every message names the files the batch reads
    (``batch_files``, set by the trainer to the training loader's
    :meth:`~cpc.data.loader.AudioLoader.files_of_batches`).
    """

    def __init__(self, allowed: int, device: torch.device) -> None:
        self.allowed, self.used, self.device = allowed, 0, device
        self.batch_files: Callable[[list[int]], list[str]] = lambda indices: []
        self.epoch = 0
        self._count = torch.zeros((), device=device)
        self._first = torch.full((), -1, dtype=torch.long, device=device)

    @property
    def eager(self) -> bool:
        return self.allowed > 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._count.zero_()
        self._first.fill_(-1)

    def admit(self, loss: torch.Tensor, index: int) -> bool:
        """Whether batch ``index``'s loss may be trained on (always, unless eager)."""
        if self.eager:
            if torch.isfinite(loss):
                return True
            self.used += 1
            files = self.batch_files([index])
            where = f"epoch {self.epoch} train, batch {index}{read_from(files)}"
            if self.used > self.allowed:
                raise NonFiniteLoss(f"non-finite loss at {where} (--allow_nan_steps "
                                    f"{self.allowed})", suspect_audio(files))
            print(f"warning: non-finite loss at {where}: batch skipped ({self.used} of "
                  f"--allow_nan_steps {self.allowed})", file=sys.stderr, flush=True)
            return False
        bad = ~torch.isfinite(loss.detach())
        self._count += bad
        self._first = torch.where(bad & (self._first < 0), index, self._first)
        return True

    def sync_values(self) -> dict[str, torch.Tensor]:
        return {} if self.eager else {"nonfinite_batches": self._count}

    def check(self, values: dict[str, float], info: DistInfo) -> None:
        """Stop the run if a sync point found a non-finite loss on any rank."""
        if values.get("nonfinite_batches", 0) > 0:
            local = int(self._first)
            first = min_over_ranks(local if local >= 0 else 2**62, info)
            files = files_union(gather_objects(  # read by the rank(s) whose batch it was
                self.batch_files([first]) if local == first else [], info))
            raise NonFiniteLoss(f"non-finite loss at epoch {self.epoch} train, batch {first}"
                                f"{read_from(files)} (--allow_nan_steps 0)",
                                suspect_audio(files))

    def resolve(self, info: DistInfo) -> None:
        """Read the count now (before a checkpoint is written)."""
        if not self.eager:
            count = mean_over_ranks(self._count[None].float(), info)
            self.check({"nonfinite_batches": float(count[0])}, info)


# --------------------------------------------------------------------------------------------
# One evaluation pass
# --------------------------------------------------------------------------------------------

def evaluate(module: torch.nn.Module, loader: AudioLoader, device: torch.device,
             info: DistInfo = DistInfo(), desc: str = "") -> EpochStats:
    """Losses and accuracies of ``module`` over one epoch of ``loader`` (no gradients), summed
    over the ranks' shares. ``module`` must not be DDP-wrapped: ranks hold different numbers of
    batches here, and only the final sums are exchanged."""
    module.eval()
    totals = EpochTotals(device=device)
    bad: list[torch.Tensor] = []  # per batch, whether its loss is not finite (on the device)
    start = time.time()
    with torch.no_grad(), Prefetcher(loader, pin=device if device.type == "cuda" else None) as batches:
        for batch in tqdm(batches, total=len(loader), desc=desc, leave=False,
                          dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0,
                          disable=not info.is_main):
            batch = batch.to(device)
            out = module(batch)
            totals.add_batch(out, len(batch), batch.audio.shape[0] * batch.audio.shape[-1])
            bad.append(~torch.isfinite(out.loss.detach()).all())
    totals.seconds = time.time() - start
    stats = totals.reduced(info).stats(len(loader), cut=False)
    if stats.nonfinite_batches:  # (every rank knows the sum): name the files of those batches
        local = torch.stack(bad).nonzero().flatten().tolist() if bad else []
        stats.nonfinite_files = files_union(gather_objects(loader.files_of_batches(local),
                                                           info))
    return stats


# --------------------------------------------------------------------------------------------
# What a run trains and saves
# --------------------------------------------------------------------------------------------

@dataclass
class TrainedState:
    """Everything a run trains and saves: the model, its objective, their optimisers and, with
    ``--precision fp16``, the loss scaler."""

    model: torch.nn.Module
    objective: Objective
    optimizers: dict[str, torch.optim.Optimizer]  # "model", and "worker_<name>" for PASE
    rates: dict[str, LearningRate]  # the owner of each optimiser's learning rate
    scaler: torch.amp.GradScaler | None = None

    @property
    def lr(self) -> float:
        """The model's current learning rate."""
        return self.optimizers["model"].param_groups[0]["lr"]

    def lrs(self) -> dict[str, float]:
        """The epoch's learning rate of every optimiser, the warm-up aside: the model's and
        each PASE worker's."""
        return {name: rate.scheduled() for name, rate in self.rates.items()}

    def start_epoch(self, epoch: int) -> None:
        """Every learning rate follows its schedule into ``epoch``."""
        for rate in self.rates.values():
            rate.set_epoch(epoch)

    def scale_lr(self, factor: float) -> None:
        """Multiply every base learning rate (a collapse rollback)."""
        for rate in self.rates.values():
            rate.scale(factor)

    def parameter_parts(self) -> dict[str, list[torch.nn.Parameter]]:
        """The trained parameters by part, for gradient norms and clipping."""
        return {"encoder": list(self.model.gEncoder.parameters()),
                "context": list(self.model.gAR.parameters()),
                **self.objective.parameter_parts()}

    def state(self, epoch: int) -> dict:
        """Checkpoint content: CPC_audio's keys (the objective's weights under its
        ``state_key``), plus the model's ``model_args`` and the PASE workers' optimisers."""
        state = {ckpt.MODEL_KEY: self.model.state_dict(), "model_args": self.model.model_args,
                 "epoch": epoch, self.objective.state_key: self.objective.module.state_dict(),
                 "optimizer": self.optimizers["model"].state_dict(),
                 "scheduler": self.rates["model"].state_dict(),
                 "worker_optimizers": {name: opt.state_dict()
                                       for name, opt in self.optimizers.items() if name != "model"},
                 "worker_schedulers": {name: rate.state_dict()
                                       for name, rate in self.rates.items() if name != "model"}}
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load(self, state: dict, with_optimizers: bool = True) -> None:
        ckpt.load_model_weights(self.model, state)
        self.objective.load_weights(state)
        if with_optimizers:
            self.optimizers["model"].load_state_dict(state["optimizer"])
            self.rates["model"].load_state_dict(state["scheduler"])
            for name, opt_state in state.get("worker_optimizers", {}).items():
                self.optimizers[name].load_state_dict(opt_state)
            for name, rate_state in state.get("worker_schedulers", {}).items():
                self.rates[name].load_state_dict(rate_state)
            if self.scaler is not None and "grad_scaler" in state:  # fp16 before and now
                self.scaler.load_state_dict(state["grad_scaler"])


class StepModule(torch.nn.Module):
    """The model and its objective as one module, ``batch -> CriterionOutput``: the unit that
    DistributedDataParallel wraps (gradients of the criterion or workers are averaged too).
    The forward runs under ``precision``'s autocast (see :mod:`cpc.precision`)."""

    def __init__(self, model: torch.nn.Module, objective: Objective,
                 precision: str = "fp32") -> None:
        super().__init__()
        self.model = model
        self.objective_module = objective.module
        self.objective = objective
        self.precision = precision

    def forward(self, batch: Batch) -> CriterionOutput:
        with autocast(self.precision, batch.audio.device):
            c_feature, encoded, _ = self.model(batch.audio, batch.speaker)
            out = self.objective(batch, c_feature, encoded)
        out.context, out.encoded = c_feature.detach(), encoded.detach()
        return out


# --------------------------------------------------------------------------------------------
# The epoch loop and its hooks
# --------------------------------------------------------------------------------------------

@dataclass
class Run:
    """What the loop shares with its hooks: the trained state, the data, the log and the step."""

    training: TrainedState
    data: CorpusData
    logs: dict
    board: TensorBoard
    info: DistInfo
    run_dir: str | None  # where rank 0 writes (None on the other ranks, or without one)
    seed: int = 0
    epoch: int = 0
    global_step: int = 0  # optimiser updates so far
    data_generation: int = 0  # data orders drawn anew (collapse rollbacks)
    hooks: list[Hook] = field(default_factory=list)  # set by the Trainer

    def state(self, epoch: int) -> dict:
        """A checkpoint of the run at ``epoch``: the trained state, the update count, the data
        order (collapse rollbacks draw it anew), the number of processes that trained it and
        the state of every hook that has one (under its ``name``)."""
        hooks = {hook.name: hook.state_dict() for hook in self.hooks}
        return {**self.training.state(epoch), "global_step": self.global_step,
                "data_generation": self.data_generation, "world_size": self.info.world_size,
                "hooks": {name: state for name, state in hooks.items() if state}}


@dataclass
class EpochEnd:
    """One finished epoch, as the hooks see it."""

    epoch: int
    train: EpochStats
    val: EpochStats
    lrs: dict[str, float]  # the learning rate of each optimiser the epoch trained with
    started: float  # time.time() at the epoch's start

    @property
    def lr(self) -> float:
        """The model's learning rate."""
        return self.lrs["model"]


@dataclass
class EpochProgress:
    """How far the epoch in progress is, with all a rerun needs to continue it exactly."""

    epoch: int
    generation: int  # the data order the epoch was planned with
    batches_done: int  # micro-batches done, skipped ones included
    totals: dict  # EpochTotals state of those batches, all ranks summed
    world_size: int  # processes that trained them (each read its own share of the files)
    rngs: list[dict]  # every rank's random state, in rank order
    plans: list[str]  # every rank's AudioLoader.plan_digest of the epoch, in rank order
    reason: str | None = None  # why the run stops here (None: a periodic step checkpoint)

    def record(self) -> dict:
        """The checkpoint's ``interrupted`` entry."""
        return {"batches_done": self.batches_done, "generation": self.generation,
                "totals": self.totals, "world_size": self.world_size, "rngs": self.rngs,
                "plans": self.plans}


def same_plan(cut: dict, digest: str, n_batches: int, info: DistInfo) -> bool:
    """Whether the cut epoch ``cut`` (a :meth:`EpochProgress.record`) was planned as it is now,
    on every rank: its recorded digest is this rank's ``digest`` (a record without digests,
    from an older version: its done batches fit in the ``n_batches`` of the epoch)."""
    plans = cut.get("plans")
    same = plans[info.rank] == digest if plans else cut["batches_done"] <= n_batches
    return min_over_ranks(int(same), info) == 1


class Hook:
    """A per-run extra of the loop; override what it needs. Hooks run in list order.

    The contract, in the order of a run: ``load_state_dict`` (on resume, with what
    ``state_dict`` saved in the checkpoint under the hook's ``name``); per update
    ``on_train_step``, per sync point ``sync_values`` / ``on_sync``; per epoch ``after_train``
    and ``on_epoch_end``; ``on_progress`` when the epoch's progress is recorded (a step
    checkpoint) and ``on_stop`` when the run stops in an epoch; ``on_exception`` when the loop
    raises; ``close`` at the very end, whatever happened.
    """

    name: str = "hook"  # its key in a checkpoint's "hooks"

    def state_dict(self) -> dict:
        """What a resumed run needs of this hook, saved with every checkpoint (empty: none)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s content, before the first epoch of a resumed run."""

    def on_train_step(self, run: Run, out: CriterionOutput, grad_norms: torch.Tensor) -> None:
        """After every optimiser update (``run.global_step`` already counts it); ``out`` is
        the update's last micro-batch. Nothing here may read a device value (no sync)."""

    def sync_values(self, run: Run) -> dict[str, torch.Tensor]:
        """Scalar device tensors to read at this sync point (every ``--logging_step`` updates
        and at the end of the training pass): all hooks' are read together, once."""
        return {}

    def on_sync(self, run: Run, values: dict[str, float]) -> None:
        """The values of :meth:`sync_values`, averaged over ranks."""

    def after_train(self, run: Run, stats: EpochStats) -> None:
        """After the training pass of an epoch, finished or cut, before validation."""

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        """After the epoch is logged; the run log is written after the last hook."""

    def progress_due(self, run: Run) -> bool:
        """Whether the epoch's progress must be recorded after this update; the same answer
        on every rank (e.g. every N updates)."""
        return False

    def progress_wanted(self, run: Run) -> bool:
        """This rank's wish to record the progress (e.g. rank 0's clock); under torchrun the
        ranks vote, so the record follows at one update on all of them, up to 16 updates
        later."""
        return False

    def on_progress(self, run: Run, progress: EpochProgress) -> None:
        """The epoch's progress, recorded when due (on every rank)."""

    def stop_reason(self) -> str | None:
        """Why the run must stop after the current update, the same on every rank (None: go
        on)."""
        return None

    def on_stop(self, run: Run, progress: EpochProgress) -> None:
        """The run stops in an epoch: ``progress`` is all a rerun needs to continue it
        (on every rank; ``progress.reason`` says why). A hook may raise to end the run with
        an error: every hook's ``on_stop`` still runs, the log is written, then the first
        error is raised."""

    def on_exception(self, run: Run, exc: BaseException) -> BaseException | None:
        """The loop raised ``exc``; return a more telling error to raise in its place (the
        next hooks see that one), or None."""
        return None

    def close(self) -> None:
        """Release what the hook holds (data, files), at the end of the run in any case."""


@dataclass
class Resumption:
    """Where a run starts: its first epoch, its update count, its hooks' saved states and,
    when it resumes in the middle of an epoch, that epoch's progress record
    (:meth:`EpochProgress.record`)."""

    start_epoch: int = 0
    cut: dict | None = None
    global_step: int = 0
    hook_states: dict[str, dict] = field(default_factory=dict)  # a checkpoint's "hooks"


class Trainer:
    """The epoch loop over a :class:`Run`, calling its hooks (see the module docstring)."""

    def __init__(self, run: Run, step_module: torch.nn.Module, updater: Updater, *,
                 train_loader: AudioLoader, val_loader: AudioLoader, device: torch.device,
                 hooks: list[Hook], nonfinite: NonFiniteWatch, logging_step: int,
                 signals: StopRequest) -> None:
        self.run, self.step_module, self.updater = run, step_module, updater
        self.train_loader, self.val_loader, self.device = train_loader, val_loader, device
        self.hooks, self.nonfinite, self.logging_step = hooks, nonfinite, logging_step
        run.hooks = hooks  # their states go into the run's checkpoints
        nonfinite.batch_files = train_loader.files_of_batches  # to name a bad batch's files
        self._signals = signals  # installed for the whole process: a signal during setup
        #                          stops the run after its first update, checkpointed
        self._vote = FlagVote(run.info, n_flags=2)
        self._bar: tqdm | None = None
        self._generation = 0  # of the epoch in progress
        self._plan = ""  # the plan digest of the epoch in progress

    @property
    def eval_module(self) -> torch.nn.Module:
        """The step module without its DDP wrapper (evaluation exchanges only its sums)."""
        return getattr(self.step_module, "module", self.step_module)

    def fit(self, n_epochs: int, resumption: Resumption) -> dict:
        """Train epochs ``resumption.start_epoch .. n_epochs - 1``; returns the run log. An
        error of the loop goes through every hook's ``on_exception`` before it is raised."""
        run = self.run
        run.global_step = resumption.global_step
        for hook in self.hooks:
            if hook.name in resumption.hook_states:
                hook.load_state_dict(resumption.hook_states[hook.name])
        try:
            for epoch in range(resumption.start_epoch, n_epochs):
                cut = resumption.cut if epoch == resumption.start_epoch else None
                if not self._epoch(epoch, cut):
                    break
        except Exception as exc:  # noqa: BLE001 (the hooks' say, then raised again)
            told: BaseException = exc
            for hook in self.hooks:
                told = hook.on_exception(run, told) or told
            if told is exc:
                raise
            raise told from None
        self._warn_if_never_finite()
        return run.logs

    def _warn_if_never_finite(self) -> None:
        """Say so when no epoch of the run had a finite validation loss: then no
        ``checkpoint_best.pt`` and no ``best_epoch`` exist (the run still ends with status 0:
        its epoch checkpoints are written)."""
        losses = self.run.logs.get("loss_val", [])
        if self.run.info.is_main and losses and not any(math.isfinite(x) for x in losses):
            print(f"warning: no epoch had a finite validation loss ({len(losses)} epoch(s), "
                  f"see the warnings above): no best epoch, and no checkpoint_best.pt was "
                  f"written", file=sys.stderr, flush=True)

    # -- one epoch -----------------------------------------------------------------------------
    def _epoch(self, epoch: int, cut: dict | None) -> bool:
        """One epoch (the rest of a cut one); False when the run stopped in it."""
        run = self.run
        run.epoch = epoch
        self._generation = cut["generation"] if cut else run.data_generation
        loader = self.train_loader
        loader.set_epoch(epoch, self._generation)
        loader.limit = min_over_ranks(loader.local_length(), run.info)  # lockstep
        self._plan = loader.plan_digest()
        if cut and not same_plan(cut, self._plan, len(loader), run.info):
            if run.info.is_main:
                print(f"warning: epoch {epoch} was cut after its batch {cut['batches_done']}, "
                      f"but its plan has changed since (other training files or data flags; "
                      f"it now has {len(loader)} batches): it starts again from its first "
                      f"batch", file=sys.stderr, flush=True)
            cut = None
        loader.skip = cut["batches_done"] if cut else 0
        if cut:
            restore_rng_state(cut["rngs"][run.info.rank], self.device)
        else:
            seed_epoch(run.seed, epoch, self._generation, run.info.rank)
        run.training.start_epoch(epoch)
        started, lrs = time.time(), run.training.lrs()
        totals = EpochTotals(cut["totals"] if cut and run.info.is_main else None,  # summed once
                             self.device)
        train = self._train_pass(totals)
        for hook in self.hooks:
            hook.after_train(run, train)
        if train.cut:
            self._stop(train.batches_done, totals)
            return False
        val = evaluate(self.eval_module, self.val_loader, self.device, run.info,
                       desc=f"epoch {epoch} val")
        self._log_epoch(EpochEnd(epoch, train, val, lrs, started))
        return True

    def _train_pass(self, totals: EpochTotals) -> EpochStats:
        """The epoch's training batches (from ``loader.skip`` on); stops early, agreed by every
        rank, when a hook or a signal asks."""
        run, module, updater, loader = self.run, self.step_module, self.updater, self.train_loader
        module.train()
        self.nonfinite.start_epoch(run.epoch)
        n_batches, done = len(loader), loader.skip
        held, last_out, cut = 0, None, False
        start = time.time()
        self._bar = tqdm(total=n_batches, initial=done, desc=f"epoch {run.epoch} train",
                         leave=False, dynamic_ncols=True,
                         mininterval=1.0 if sys.stderr.isatty() else 30.0,
                         disable=not run.info.is_main)
        with Prefetcher(loader, pin=self.device if self.device.type == "cuda" else None) as batches:
            for index, batch in enumerate(batches, start=done):
                batch = batch.to(self.device)
                closes_update = (index + 1) % updater.update_freq == 0 or index + 1 == n_batches
                with self._gradient_sync(closes_update):
                    out = module(batch)
                    if self.nonfinite.admit(out.loss, index):
                        updater.backward(out.loss)
                        totals.add_batch(out, len(batch),
                                         batch.audio.shape[0] * batch.audio.shape[-1])
                        held, last_out = held + 1, out
                done = index + 1
                self._bar.update()
                if not closes_update:
                    continue
                if held:
                    grad_norms = updater.step(held)
                    updater.zero_grad()
                    run.global_step += 1
                    for hook in self.hooks:
                        hook.on_train_step(run, last_out, grad_norms)
                    if self.logging_step > 0 and run.global_step % self.logging_step == 0:
                        self._sync_point()
                held = 0
                stop, save = self._decide()
                if stop:
                    cut = True
                    break
                if save:
                    self._record_progress(done, totals)
        if not cut:  # a signal that came in the last updates, before validation
            cut = self._vote.settle([self._signals.requested, False])[0]
        self._bar.close()
        totals.seconds += time.time() - start
        self._sync_point()  # the epoch's last figures; a non-finite loss stops here at latest
        return totals.reduced(run.info).stats(done, cut=cut)

    def _gradient_sync(self, closes_update: bool) -> contextlib.AbstractContextManager:
        """DDP's gradient all-reduce only on the micro-batch that closes an update."""
        if closes_update or not hasattr(self.step_module, "no_sync"):
            return contextlib.nullcontext()
        return self.step_module.no_sync()

    def _decide(self) -> tuple[bool, bool]:
        """(stop, record progress) after an update, the same on every rank."""
        run = self.run
        stop_signal, wanted = self._vote.poll(
            [self._signals.requested, any(hook.progress_wanted(run) for hook in self.hooks)])
        stop = stop_signal or any(hook.stop_reason() is not None for hook in self.hooks)
        return stop, wanted or any(hook.progress_due(run) for hook in self.hooks)

    def _stop_reason(self) -> str:
        for hook in self.hooks:
            reason = hook.stop_reason()
            if reason is not None:
                return reason
        return self._signals.signal_name or "stop signal (another rank)"

    # -- sync points and progress --------------------------------------------------------------
    def _sync_point(self) -> None:
        """Read every device value due (the non-finite count, the hooks' figures) at once,
        averaged over ranks; a non-finite loss stops the run before any hook sees the state."""
        run = self.run
        parts = [(None, self.nonfinite.sync_values())] + \
                [(hook, hook.sync_values(run)) for hook in self.hooks]
        tensors = [t.detach().to(self.device, torch.float32).reshape(())
                   for _, values in parts for t in values.values()]
        if not tensors:
            return
        host = iter(mean_over_ranks(torch.stack(tensors), run.info).tolist())  # the one sync
        read = [(hook, {name: next(host) for name in values}) for hook, values in parts]
        self.nonfinite.check(read[0][1], run.info)
        for hook, values in read[1:]:
            if values:
                hook.on_sync(run, values)
                if "loss" in values and self._bar is not None:
                    self._bar.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)

    def _progress(self, batches_done: int, totals: EpochTotals,
                  reason: str | None) -> EpochProgress:
        """The epoch's progress; every rank takes part."""
        run = self.run
        self.nonfinite.resolve(run.info)  # nothing computed from a NaN is ever saved
        return EpochProgress(epoch=run.epoch, generation=self._generation,
                             batches_done=batches_done,
                             totals=totals.reduced(run.info).state(),
                             world_size=run.info.world_size,
                             rngs=gather_objects(rng_state(self.device), run.info),
                             plans=gather_objects(self._plan, run.info), reason=reason)

    def _record_progress(self, batches_done: int, totals: EpochTotals) -> None:
        """A step checkpoint's progress, for the hooks."""
        progress = self._progress(batches_done, totals, None)
        for hook in self.hooks:
            hook.on_progress(self.run, progress)

    def _stop(self, batches_done: int, totals: EpochTotals) -> None:
        """Give the hooks the cut epoch's progress, so that rerunning the command replays its
        plan, passes over its done batches and continues exactly (its logged means
        included); then write the log."""
        progress = self._progress(batches_done, totals, self._stop_reason())
        errors = []
        for hook in self.hooks:  # every hook, even after one raised (the checkpoint is saved)
            try:
                hook.on_stop(self.run, progress)
            except Exception as exc:  # noqa: BLE001 (raised below)
                errors.append(exc)
        self._write_logs()
        if errors:
            raise errors[0]

    # -- logs ----------------------------------------------------------------------------------
    def _log_epoch(self, end: EpochEnd) -> None:
        """The epoch's entries, scalars and console line, then the hooks, then the log file."""
        run, names = self.run, self.run.training.objective.step_names
        append_logs(run.logs, end.epoch, end.train, end.val, names, end.lrs)
        run.board.scalars({**epoch_scalars("train", end.train, names),
                           **epoch_scalars("val", end.val, names), "lr": end.lr,
                           **{f"lr/{name}": lr for name, lr in end.lrs.items()}}, end.epoch)
        if run.info.is_main:
            print(f"epoch {end.epoch:3d} | train {end.train.describe()} | val "
                  f"{end.val.describe()} | {end.train.seconds:.1f} s, "
                  f"{end.train.audio_seconds / max(end.train.seconds, 1e-9):.1f} s audio/s | "
                  f"lr {end.lr:.2e}", flush=True)
            if end.val.nonfinite_batches:
                self._warn_non_finite_val(end)
        for hook in self.hooks:
            hook.on_epoch_end(run, end)
        record_epoch_time(run.logs, time.time() - end.started)
        self._write_logs()
        barrier(run.info)  # the other ranks wait for rank 0's probes and captures

    def _warn_non_finite_val(self, end: EpochEnd) -> None:
        """One line: how many validation batches had a non-finite loss, the files they read,
        and whether that audio looks at fault; such an epoch is never the best one."""
        val, files = end.val, end.val.nonfinite_files
        suspect = suspect_audio(files)
        print(f"warning: epoch {end.epoch} val: {val.nonfinite_batches} batch(es) have a "
              f"non-finite loss{read_from(files)}: the validation loss is "
              f"{val.loss}, and this epoch cannot be the best one"
              + (f". {suspect}" if suspect else ""), file=sys.stderr, flush=True)

    def _write_logs(self) -> None:
        if self.run.run_dir:
            ckpt.write_json(Path(self.run.run_dir) / ckpt.LOGS_FILE, self.run.logs)
