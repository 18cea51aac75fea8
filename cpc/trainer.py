"""The training engine: one pass over a loader, the state a run trains and saves, and the epoch
loop with its hooks.

:class:`Trainer.fit` runs the epochs: train pass, validation pass, schedulers, the run log, then
every :class:`Hook` in order (checkpoint, health, probes, capture + stats...). A new per-epoch
job is a new hook in the list that ``cpc/train.py`` builds; the loop does not change. A stop
signal (SIGTERM, first Ctrl-C) or a hook asking to stop ends the current step, and the epoch in
progress is checkpointed so that rerunning the command continues exactly (``cpc/train.py``
installs the signal handlers for the whole process, setup included).
"""
from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from cpc.criterion.base import CriterionOutput
from cpc.dataset import CorpusData
from cpc.objectives import CriterionObjective, WorkerObjective
from cpc.run_log import TensorBoard, append_logs, epoch_scalars, record_epoch_time
from cpc.utils import checkpoint as ckpt
from cpc.utils.constants import SAMPLE_RATE
from cpc.utils.distributed import DistInfo, any_rank, barrier, sum_over_ranks
from cpc.utils.errors import CPCError
from cpc.utils.optim import Updater
from cpc.utils.signals import StopRequest


# --------------------------------------------------------------------------------------------
# Random state (saved in checkpoints for exact resumption)
# --------------------------------------------------------------------------------------------

def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally forbid nondeterministic kernels."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic != torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic)  # imports torch._inductor (~2.5 s)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(data: CorpusData) -> dict:
    """Every generator a run draws from, the data samplers' included."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                       *np_state[2:]),
             "train_data": data.train.rng.getstate(), "val_data": data.val.rng.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, data: CorpusData) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    data.train.rng.setstate(state["train_data"])
    data.val.rng.setstate(state["val_data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# One pass over a loader
# --------------------------------------------------------------------------------------------

@dataclass
class EpochStats:
    """Per-step losses and accuracies averaged over the windows of an epoch."""

    loss: float = float("nan")  # the criterion's own loss (CPC: sum over steps; CPC-CTC: mean cost)
    step_losses: list[float] = field(default_factory=list)
    step_accuracies: list[float] = field(default_factory=list)
    n_windows: int = 0
    seconds: float = 0.0
    batches_done: int = 0  # batches taken from the loader, counting skipped ones
    interrupted: bool = False  # stopped by a signal before the end of the epoch
    audio_seconds: float = 0.0  # audio of the windows passed over
    totals: dict = field(default_factory=dict)  # EpochTotals state, all ranks summed

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.step_accuracies)) if self.step_accuracies else float("nan")

    def describe(self) -> str:
        accuracy = "" if np.isnan(self.accuracy) else f" acc {self.accuracy:.3f}"
        return f"loss {self.loss:.4f}{accuracy}"


class NonFiniteLoss(CPCError):
    """The loss became NaN or infinite more often than --allow_nan_steps allows."""


@dataclass
class NanBudget:
    """How many training batches with a non-finite loss may be skipped (--allow_nan_steps)."""

    allowed: int
    used: int = 0

    def charge(self, where: str) -> None:
        self.used += 1
        if self.used > self.allowed:
            raise NonFiniteLoss(f"non-finite loss at {where} (--allow_nan_steps {self.allowed})")
        print(f"warning: non-finite loss at {where}: batch skipped ({self.used} of "
              f"--allow_nan_steps {self.allowed})", file=sys.stderr, flush=True)


class EpochTotals:
    """Window-weighted sums of an epoch's per-step values (NaN entries, undefined for a batch,
    left out), windows and samples. A cut epoch's totals are saved with its checkpoint and
    carried on when it resumes, so its logged means equal an uninterrupted epoch's."""

    def __init__(self, state: dict | None = None) -> None:
        state = state or {}
        self.sums: dict[str, torch.Tensor] = dict(state.get("sums", {}))
        self.counts: dict[str, torch.Tensor] = dict(state.get("counts", {}))
        self.n_windows = torch.tensor(state.get("n_windows", 0))
        self.n_samples = torch.tensor(state.get("n_samples", 0))
        self.seconds = float(state.get("seconds", 0.0))

    def add(self, name: str, values: torch.Tensor, size: int) -> None:
        values = values.detach().double().cpu().reshape(-1)
        defined = ~torch.isnan(values)
        self.sums[name] = self.sums.get(name, 0) + torch.where(defined, values, 0.0) * size
        self.counts[name] = self.counts.get(name, 0) + defined.double() * size

    def reduced(self, info: DistInfo) -> "EpochTotals":
        """The totals of every rank."""
        out = EpochTotals({"seconds": self.seconds})
        out.sums = {name: sum_over_ranks(value, info) for name, value in self.sums.items()}
        out.counts = {name: sum_over_ranks(value, info) for name, value in self.counts.items()}
        out.n_windows = sum_over_ranks(self.n_windows, info)
        out.n_samples = sum_over_ranks(self.n_samples, info)
        return out

    def state(self) -> dict:
        return {"sums": self.sums, "counts": self.counts, "n_windows": int(self.n_windows),
                "n_samples": int(self.n_samples), "seconds": self.seconds}

    def stats(self, batches_done: int, interrupted: bool) -> EpochStats:
        if int(self.n_windows) == 0:
            return EpochStats(seconds=self.seconds, batches_done=batches_done,
                              interrupted=interrupted, totals=self.state())
        mean = {name: (self.sums[name] / self.counts[name]).tolist() for name in self.sums}
        return EpochStats(mean["loss"][0], mean["steps"], mean["accs"], int(self.n_windows),
                          self.seconds, batches_done, interrupted,
                          int(self.n_samples) / SAMPLE_RATE, self.state())


def run_epoch(step_module: torch.nn.Module, loader, device: torch.device,
              updater: Updater | None = None, desc: str = "",
              on_step: Callable[[CriterionOutput, torch.Tensor | None], None] | None = None,
              should_stop: Callable[[], bool] | None = None, nan_budget: NanBudget | None = None,
              info: DistInfo = DistInfo(), carried: dict | None = None) -> EpochStats:
    """Train (with an updater) or evaluate (without) over one epoch of ``loader``.

    Per-step losses and accuracies are averaged over the windows where they are defined (a
    PASE worker that could not use a batch reports NaN for it), over all ranks when
    distributed, and over the ``carried`` totals of the epoch's part done before a stop. Training
    stops after the current step when ``should_stop()``; a batch with a non-finite loss is
    charged to ``nan_budget`` (which raises when exhausted) and skipped. ``on_step(out,
    grad_norms)`` follows every training step (``grad_norms`` None in evaluation).
    """
    training = updater is not None
    step_module.train(training)
    totals = EpochTotals(carried)
    batches_done = 0
    interrupted = False
    start = time.time()
    bar = tqdm(loader, total=len(loader), desc=desc, leave=False, dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, disable=not info.is_main)
    with torch.set_grad_enabled(training):
        for step, batch in enumerate(bar):
            batch = batch.to(device)
            out = step_module(batch)
            batches_done += 1
            if training and not torch.isfinite(out.loss):  # one device sync per step
                (nan_budget or NanBudget(0)).charge(f"{desc}, batch {step}")
                continue
            grad_norms = None
            if training:
                updater.zero_grad()
                out.loss.backward()
                grad_norms = updater.step()
            size = len(batch)
            totals.add("loss", out.loss, size)
            totals.add("steps", out.step_losses, size)
            totals.add("accs", out.step_accuracies, size)
            totals.n_windows += size
            totals.n_samples += batch.audio.shape[0] * batch.audio.shape[-1]
            if step % 10 == 0:  # .item() synchronises the device: not at every step
                bar.set_postfix(loss=f"{out.loss.item():.3f}", refresh=False)
            if on_step is not None:
                on_step(out, grad_norms)
            if should_stop is not None and should_stop():
                interrupted = True
                break
    totals.seconds += time.time() - start
    return totals.reduced(info).stats(batches_done, interrupted)


# --------------------------------------------------------------------------------------------
# What a run trains and saves
# --------------------------------------------------------------------------------------------

@dataclass
class Training:
    """Everything a run trains and saves: the model, its objective and their optimisers."""

    model: torch.nn.Module
    objective: CriterionObjective | WorkerObjective
    optimizers: dict[str, torch.optim.Optimizer]  # "model", and "worker_<name>" for PASE
    schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR]

    @property
    def criterion(self) -> torch.nn.Module | None:
        return getattr(self.objective, "criterion", None)

    @property
    def workers(self) -> torch.nn.ModuleDict | None:
        return getattr(self.objective, "workers", None)

    @property
    def lr(self) -> float:
        """The model's current learning rate."""
        return self.optimizers["model"].param_groups[0]["lr"]

    def lrs(self) -> dict[str, float]:
        """The current learning rate of every optimiser: the model's and each PASE worker's."""
        return {name: optimizer.param_groups[0]["lr"]
                for name, optimizer in self.optimizers.items()}

    def parameter_parts(self) -> dict[str, list[torch.nn.Parameter]]:
        """The trained parameters by part, for gradient norms and clipping."""
        parts = {"encoder": list(self.model.gEncoder.parameters()),
                 "context": list(self.model.gAR.parameters())}
        if self.criterion is not None:
            parts["criterion"] = list(self.criterion.parameters())
        if self.workers is not None:
            parts["workers"] = list(self.workers.parameters())
        return parts

    def state(self, epoch: int, rng: dict) -> dict:
        """Checkpoint content (CPC_audio's keys, plus the workers and their optimisers)."""
        state = {"gEncoder": self.model.state_dict(), "epoch": epoch, "rng": rng,
                 "optimizer": self.optimizers["model"].state_dict(),
                 "scheduler": self.schedulers["model"].state_dict(),
                 "worker_optimizers": {name: opt.state_dict()
                                       for name, opt in self.optimizers.items() if name != "model"},
                 "worker_schedulers": {name: sched.state_dict()
                                       for name, sched in self.schedulers.items()
                                       if name != "model"}}
        if self.criterion is not None:
            state["cpcCriterion"] = self.criterion.state_dict()
        if self.workers is not None:
            state["workers"] = self.workers.state_dict()
        return state

    def load(self, state: dict, with_optimizers: bool = True) -> None:
        self.model.load_state_dict(state["gEncoder"])
        if self.criterion is not None:
            self.criterion.load_state_dict(state["cpcCriterion"])
        if self.workers is not None:
            self.workers.load_state_dict(state["workers"])
        if with_optimizers:
            self.optimizers["model"].load_state_dict(state["optimizer"])
            self.schedulers["model"].load_state_dict(state["scheduler"])
            for name, opt_state in state.get("worker_optimizers", {}).items():
                self.optimizers[name].load_state_dict(opt_state)
            for name, sched_state in state.get("worker_schedulers", {}).items():
                self.schedulers[name].load_state_dict(sched_state)


# --------------------------------------------------------------------------------------------
# The epoch loop and its hooks
# --------------------------------------------------------------------------------------------

@dataclass
class Run:
    """What the loop shares with its hooks: the trained state, the data, the log and the step."""

    training: Training
    data: CorpusData
    logs: dict
    board: TensorBoard
    info: DistInfo
    run_dir: str | None  # where rank 0 writes (None on the other ranks, or without one)
    epoch: int = 0
    global_step: int = 0


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


class Hook:
    """A per-run extra of the loop; override what it needs. Hooks run in list order."""

    def on_train_step(self, run: Run, out: CriterionOutput, grad_norms: torch.Tensor) -> None:
        """After every optimiser step (``run.global_step`` already counts it)."""

    def after_train(self, run: Run, stats: EpochStats) -> None:
        """After the training pass of an epoch, finished or interrupted, before validation."""

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        """After the epoch is logged; the run log is written after the last hook."""

    def stop_reason(self) -> str | None:
        """Why the run must stop after the current step (None: go on)."""
        return None

    def on_stop(self, run: Run) -> None:
        """After the interrupted epoch is checkpointed and the log written (may raise)."""


@dataclass
class Resumption:
    """Where a run starts: its first epoch and, after a stop, the state of the cut epoch."""

    start_epoch: int = 0
    interrupted: dict | None = None  # {"batches_done", "epoch_start"} of the cut epoch


class Trainer:
    """The epoch loop over a :class:`Run`, calling its hooks."""

    def __init__(self, run: Run, step_module: torch.nn.Module, updater: Updater, train_loader,
                 val_loader, device: torch.device, hooks: list[Hook], nan_budget: NanBudget,
                 logging_step: int, signals: StopRequest) -> None:
        self.run, self.step_module, self.updater = run, step_module, updater
        self.train_loader, self.val_loader, self.device = train_loader, val_loader, device
        self.hooks, self.nan_budget, self.logging_step = hooks, nan_budget, logging_step
        self._running: list[torch.Tensor] = []
        self._signals = signals  # installed for the whole process: a signal during setup
        #                          stops the run after its first step, checkpointed

    def fit(self, n_epochs: int, resumption: Resumption) -> dict:
        """Train epochs ``resumption.start_epoch .. n_epochs - 1``; returns the run log."""
        run = self.run
        run.global_step = resumption.start_epoch * len(self.train_loader)
        try:
            for epoch in range(resumption.start_epoch, n_epochs):
                cut = resumption.interrupted if epoch == resumption.start_epoch else None
                if not self._epoch(epoch, cut):
                    break
        except NonFiniteLoss as exc:
            last = ckpt.list_checkpoints(run.run_dir) if run.run_dir else []
            retry = "a lower --learningRate or --clip_grad_norm, or --allow_nan_steps K to " \
                    "skip such batches"
            if last:
                raise NonFiniteLoss(f"{exc}; last good checkpoint: {last[-1][1]}. Rerun the "
                                    f"command to resume from it, perhaps with {retry}") from None
            raise NonFiniteLoss(f"{exc}, before any checkpoint was written: start again with "
                                f"{retry}") from None
        return run.logs

    def _epoch(self, epoch: int, cut: dict | None) -> bool:
        """One epoch (the rest of a cut one); False when the run stopped in it."""
        run = self.run
        run.epoch = epoch
        epoch_start = cut["epoch_start"] if cut else run.data.train.epoch_state()
        if cut:  # replay the cut epoch's draws and pass over its done batches
            run.data.train.restore_epoch_state(epoch_start)
            self.train_loader.skip = cut["batches_done"]
        started, lrs = time.time(), run.training.lrs()
        carried = cut.get("totals") if cut and run.info.is_main else None  # summed once
        train = run_epoch(self.step_module, self.train_loader, self.device, self.updater,
                          desc=f"epoch {epoch} train", on_step=self._on_train_step,
                          should_stop=lambda: self._stop_reason() is not None,
                          nan_budget=self.nan_budget, info=run.info, carried=carried)
        for hook in self.hooks:
            hook.after_train(run, train)
        if train.interrupted:
            self._stop(epoch_start, train.batches_done + (cut["batches_done"] if cut else 0),
                       train.totals)
            return False
        val = run_epoch(self.step_module, self.val_loader, self.device, None,
                        desc=f"epoch {epoch} val", info=run.info)
        for scheduler in run.training.schedulers.values():
            scheduler.step()
        self._log_epoch(EpochEnd(epoch, train, val, lrs, started))
        return True

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
        for hook in self.hooks:
            hook.on_epoch_end(run, end)
        record_epoch_time(run.logs, time.time() - end.started)
        self._write_logs()
        barrier(run.info)  # the other ranks wait for rank 0's probes and captures

    def _on_train_step(self, out: CriterionOutput, grad_norms: torch.Tensor) -> None:
        run = self.run
        run.global_step += 1
        self._running.append(out.loss.detach())
        if self.logging_step > 0 and run.global_step % self.logging_step == 0:
            run.board.scalars({"train/running_loss": torch.stack(self._running).mean().item()},
                              run.global_step)
            self._running.clear()
        for hook in self.hooks:
            hook.on_train_step(run, out, grad_norms)

    def _stop_reason(self) -> str | None:
        for hook in self.hooks:
            reason = hook.stop_reason()
            if reason is not None:
                return reason
        if any_rank(self._signals.requested, self.run.info, self.device):
            return self._signals.signal_name or "stop signal (another rank)"
        return None

    def _stop(self, epoch_start: dict, batches_done: int, totals: dict) -> None:
        """Checkpoint the cut epoch so that rerunning the command replays its draws, passes
        over its done batches and continues exactly (its logged means included); then let the
        hooks react."""
        run, reason = self.run, self._stop_reason()
        if run.info.is_main:
            if run.run_dir:
                state = run.training.state(run.epoch, rng_state(run.data))
                state["interrupted"] = {"batches_done": batches_done, "epoch_start": epoch_start,
                                        "totals": totals}
                path = ckpt.interrupted_checkpoint_path(run.run_dir, run.epoch)
                ckpt.save_checkpoint(path, state)
                print(f"{reason}: stopped in epoch {run.epoch} after {batches_done} batches; "
                      f"wrote {path}; rerun the same command to continue", flush=True)
            else:
                print(f"{reason}: stopped in epoch {run.epoch} (no --pathCheckpoint, nothing "
                      f"saved)", flush=True)
        self._write_logs()
        for hook in self.hooks:
            hook.on_stop(run)

    def _write_logs(self) -> None:
        if self.run.run_dir:
            ckpt.write_json(Path(self.run.run_dir) / ckpt.LOGS_FILE, self.run.logs)
