"""The per-epoch jobs of a training run, as hooks of :class:`cpc.trainer.Trainer`.

* :class:`HealthHook`: health figures every ``--logging_step`` steps and at each epoch end,
  and the collapse guard acting on them (rollback, stop, warn);
* :class:`CheckpointHook`: a checkpoint every ``--save_step`` epochs and after the last one,
  keeping the newest ``--keep_checkpoints``, and ``checkpoint_best.pt`` (lowest validation loss);
  the epoch in progress when the run stops, and every ``--save_interval_steps`` updates or
  ``--save_interval_minutes`` minutes (``interrupted_checkpoint_<epoch>.pt``);
* :class:`ProbeHook`: linear-separability probes every ``--linsep_classif_each_epochs`` epochs;
* :class:`CaptureHook`: capture of the capture dataset, and its stats, every
  ``--captureEachEpochs`` epochs.

Probes and captures run on rank 0 only (the other ranks wait at the loop's barrier).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cpc.capture.writer import run_capture
from cpc.collapse_guard import CollapseGuard, TrainingCollapsed
from cpc.criterion.base import CriterionOutput
from cpc.data.corpus import CorpusData
from cpc.data.packs import AudioBatchData
from cpc.health import HealthMonitor, describe as describe_health
from cpc.probes.config import ProbeConfig
from cpc.probes.run import format_metrics, run_probes
from cpc.run_log import (LINSEP_LOG_KEYS, comparable_val_losses, is_new_best, record_capture,
                         record_health, record_linsep, record_tagged)
from cpc.stats import StatsCollector, parse_stats_spec
from cpc.trainer import EpochEnd, EpochProgress, EpochStats, Hook, NonFiniteLoss, Run
from cpc.utils import checkpoint as ckpt


class HealthHook(Hook):
    """Feeds the health monitor every step; at each sync point (every ``--logging_step`` steps
    and at each epoch end) logs its figures, the running loss among them, and lets the collapse
    guard act on them."""

    name = "health"

    def __init__(self, monitor: HealthMonitor, guard: CollapseGuard) -> None:
        self.monitor, self.guard = monitor, guard
        self._epoch_health: dict[str, float] | None = None

    def state_dict(self) -> dict:
        """The guard's rollbacks, streak and healthy state, and the monitor's sampling state:
        a resumed run judges its checks as the uninterrupted run would."""
        return {**self.guard.state_dict(), "monitor": self.monitor.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.guard.load_state_dict(state)
        if "monitor" in state:
            self.monitor.load_state_dict(state["monitor"])

    def on_train_step(self, run: Run, out: CriterionOutput, grad_norms: torch.Tensor) -> None:
        self.monitor.observe(out, grad_norms)
        self.guard.state_changed()

    def sync_values(self, run: Run) -> dict[str, torch.Tensor]:
        return self.monitor.figures() or {}

    def on_sync(self, run: Run, values: dict[str, float]) -> None:
        self.monitor.latest = values
        record_tagged(run.logs, "health_steps",
                      {"step": run.global_step, "epoch": run.epoch, **values})
        run.board.scalars({"train/running_loss": values["loss"],
                           **{f"health/{key}": value for key, value in values.items()},
                           "health/lr": run.training.lr,
                           "health/rollbacks": self.guard.rollbacks}, run.global_step)
        event = self.guard.after_check(values, run.global_step, run.epoch)
        if event is not None:
            record_tagged(run.logs, "collapse_events", event)
            if run.info.is_main:
                print(event["message"], file=sys.stderr, flush=True)

    def after_train(self, run: Run, stats: EpochStats) -> None:
        self._epoch_health = self.monitor.latest

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        record_health(run.logs, self._epoch_health)
        if run.info.is_main and self._epoch_health is not None:
            print(f"          {describe_health(self._epoch_health)}", flush=True)

    def stop_reason(self) -> str | None:
        return "collapse guard" if self.guard.stop_requested else None

    def on_stop(self, run: Run, progress: EpochProgress) -> None:
        if self.guard.stop_requested:
            raise TrainingCollapsed(
                f"{self.guard.events[-1]['message']}. Retry from an earlier checkpoint with a "
                f"lower --learningRate, --clip_grad_norm or --warmup_steps, or let the guard "
                f"roll back (--on_collapse rollback)")



class CheckpointHook(Hook):
    """Checkpoint every ``every`` epochs and after epoch ``last_epoch``, keeping the newest
    ``keep`` (0: all); ``checkpoint_best.pt`` whenever the validation loss is the lowest so far
    on the current validation set (outside the rotation); and the epoch in progress
    (``interrupted_checkpoint_<epoch>.pt``) when the run stops in it, at every multiple of
    ``every_steps`` updates and every ``every_minutes`` minutes of rank 0's clock (0: never),
    each replacing the previous one."""

    name = "checkpoint"

    def __init__(self, every: int, last_epoch: int, keep: int, every_steps: int = 0,
                 every_minutes: float = 0.0) -> None:
        self.every, self.last_epoch, self.keep = every, last_epoch, keep
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self._saved_time = time.monotonic()

    def progress_due(self, run: Run) -> bool:
        return self.every_steps > 0 and run.global_step % self.every_steps == 0

    def progress_wanted(self, run: Run) -> bool:
        return run.info.is_main and self.every_minutes > 0 and \
            time.monotonic() - self._saved_time >= 60 * self.every_minutes

    def on_progress(self, run: Run, progress: EpochProgress) -> None:
        self._save_progress(run, progress)

    def on_stop(self, run: Run, progress: EpochProgress) -> None:
        self._save_progress(run, progress)

    def on_exception(self, run: Run, exc: BaseException) -> BaseException | None:
        """A non-finite loss: say which checkpoint to resume from, or that none exists."""
        if not isinstance(exc, NonFiniteLoss):
            return None
        last = ckpt.list_checkpoints(run.run_dir) if run.run_dir else []
        retry = "a lower --learningRate or --clip_grad_norm, or --allow_nan_steps K to skip " \
                "such batches"
        audio = f". {exc.suspect}" if exc.suspect else ""
        if last:
            return NonFiniteLoss(f"{exc}; last good checkpoint: {last[-1][1]}. Rerun the "
                                 f"command to resume from it, perhaps with {retry}{audio}")
        return NonFiniteLoss(f"{exc}, before any checkpoint was written: start again with "
                             f"{retry}{audio}")

    def _save_progress(self, run: Run, progress: EpochProgress) -> None:
        """The epoch in progress, replacing its previous record (a step checkpoint, or the
        epoch the run stops in)."""
        self._saved_time = time.monotonic()
        if not run.info.is_main:
            return
        where = f"epoch {progress.epoch} after {progress.batches_done} batches"
        if not run.run_dir:
            print(f"{progress.reason}: stopped in {where} (no --pathCheckpoint, nothing saved)",
                  flush=True)
            return
        state = {**run.state(progress.epoch), "interrupted": progress.record()}
        path = ckpt.interrupted_checkpoint_path(run.run_dir, progress.epoch)
        ckpt.save_checkpoint(path, state)
        if progress.reason is None:
            print(f"step checkpoint: {where} (update {run.global_step}): wrote {path}",
                  flush=True)
        else:
            print(f"{progress.reason}: stopped in {where}; wrote {path}; rerun the same command "
                  f"to continue", flush=True)

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        if not run.run_dir:
            return
        state = None
        if (end.epoch + 1) % self.every == 0 or end.epoch == self.last_epoch:
            state = run.state(end.epoch)
            ckpt.save_checkpoint(ckpt.checkpoint_path(run.run_dir, end.epoch), state)
            ckpt.remove_interrupted(run.run_dir, end.epoch)
            ckpt.remove_old_checkpoints(run.run_dir, self.keep)
        if is_new_best(comparable_val_losses(run.logs)):
            state = state or run.state(end.epoch)
            ckpt.save_checkpoint(ckpt.best_checkpoint_path(run.run_dir), state)
            run.logs["best_epoch"] = end.epoch


@dataclass(frozen=True)
class ProbeSettings:
    """Which probes to train on frozen features, how, and where their logs go."""

    probes: list[str]  # speaker, speaker_mean, phone or phone_ctc
    config: ProbeConfig
    extract_batch_size: int
    get_encoded: bool  # the phone probe reads z instead of c
    log_root: str | None  # <root>/<cpc_epoch>/<probe>/
    probe_root: str | None  # best probe states: <root>/<cpc_epoch>/<probe>/best_probe.pt


def probe_model(settings: ProbeSettings, model: torch.nn.Module, data: CorpusData,
                device: torch.device, cpc_epoch: int) -> dict[str, float]:
    """Train fresh probes on the frozen model's features of the data already in memory."""
    log_dir = Path(settings.log_root) / str(cpc_epoch) if settings.log_root else None
    probe_dir = Path(settings.probe_root) / str(cpc_epoch) if settings.probe_root else None
    metrics = run_probes(model, data.train, data.val, probes=settings.probes,
                         n_speakers=len(data.speakers), n_phones=data.n_phones,
                         config=settings.config, device=device,
                         extract_batch_size=settings.extract_batch_size,
                         get_encoded=settings.get_encoded, log_dir=log_dir,
                         checkpoint_dir=probe_dir)
    print(f"linear separability after epoch {cpc_epoch}: {format_metrics(metrics)}", flush=True)
    return metrics


class ProbeHook(Hook):
    """Linear-separability probes every ``every`` epochs, into the log and TensorBoard."""

    name = "probe"

    def __init__(self, settings: ProbeSettings, every: int, device: torch.device) -> None:
        self.settings, self.every, self.device = settings, every, device

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        if not run.info.is_main or (end.epoch + 1) % self.every:
            return
        metrics = probe_model(self.settings, run.training.model, run.data.whole(), self.device,
                              end.epoch)
        record_linsep(run.logs, end.epoch, metrics)
        run.board.scalars({f"linsep/{key}": metrics[key] for key in LINSEP_LOG_KEYS[1:]
                           if key in metrics}, end.epoch)


@dataclass(frozen=True)
class CaptureSettings:
    """What to capture of the capture dataset, its stats, and where."""

    kinds: list[str]
    stats_spec: str  # --captureSetStats
    save_root: str  # <root>/<epoch>/<what>/...
    batch_size: int


def capture_epoch(settings: CaptureSettings, model: torch.nn.Module, *,
                  criterion: torch.nn.Module | None, data: AudioBatchData, speakers: list[str],
                  epoch: int, device: torch.device) -> dict[str, float]:
    """One capture of the capture dataset (and its stats) under <save_root>/<epoch>/."""
    stats = parse_stats_spec(settings.stats_spec)
    epoch_dir = Path(settings.save_root) / str(epoch)
    results = run_capture(model, criterion, data, speakers=speakers, kinds=settings.kinds,
                          collector=StatsCollector(stats) if stats else None,
                          epoch_dir=epoch_dir, epoch=epoch, batch_size=settings.batch_size,
                          device=device)
    print(f"captured epoch {epoch} into {epoch_dir}" +
          (f"; stats: {', '.join(f'{k} {v:.4g}' for k, v in results.items())}"
           if results else ""), flush=True)
    return results


class CaptureHook(Hook):
    """Capture (and stats) every ``every`` epochs, into the log and TensorBoard."""

    name = "capture"

    def __init__(self, settings: CaptureSettings, every: int, data: AudioBatchData,
                 speakers: list[str], device: torch.device) -> None:
        self.settings, self.every, self.data = settings, every, data
        self.speakers, self.device = speakers, device

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        if not run.info.is_main or (end.epoch + 1) % self.every:
            return
        results = capture_epoch(self.settings, run.training.model,
                                criterion=run.training.objective.capture_module,
                                data=self.data, speakers=self.speakers, epoch=end.epoch,
                                device=self.device)
        record_capture(run.logs, end.epoch, results)
        run.board.scalars({f"stats/{key}": value for key, value in results.items()}, end.epoch)

    def close(self) -> None:
        self.data.close()
