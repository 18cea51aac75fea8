"""The run log (``checkpoint_logs.json``) and the TensorBoard scalars of a training run.

The log is a plain dict of lists, CPC_audio's schema extended:

* per epoch (indexed like ``epoch``): ``loss_train``/``loss_val``, ``locLoss_*``/``locAcc_*``
  (per prediction step), ``train_seconds`` (the training pass) and ``epoch_seconds`` (the whole
  epoch, hooks included; their sum is ``total_seconds``), ``lr_<optimiser>``,
  ``worker_<name>_train``/``_val`` (PASE), ``health_<figure>`` (the epoch-end health check) and
  ``best_epoch`` (of ``checkpoint_best.pt``, lowest validation loss so far, among the epochs
  from ``best_from_epoch`` on when a resume changed the validation set);
* per probe run (indexed like ``linsep_epoch``): :data:`LINSEP_LOG_KEYS`;
* per capture (indexed like ``capture_epoch``): :data:`CAPTURE_LOG_KEYS`;
* lists of dicts that carry their own ``epoch`` (:data:`EPOCH_TAGGED_LOG_KEYS`): the health
  checks every ``--logging_step`` steps, the collapse guard's events and the optimiser flags
  changed on a resume.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol, Sequence

LINSEP_LOG_KEYS = ("linsep_epoch", "speaker_best_val_acc", "speaker_mean_best_val_acc",
                   "phone_best_val_acc", "phone_ctc_best_val_per")
CAPTURE_LOG_KEYS = ("capture_epoch", "capture_stats")
EPOCH_TAGGED_LOG_KEYS = ("health_steps", "collapse_events", "option_changes")


class EpochFigures(Protocol):
    """What the log needs of one pass over a loader (``cpc.trainer.EpochStats``)."""

    loss: float
    step_losses: Sequence[float]
    step_accuracies: Sequence[float]
    seconds: float

    @property
    def accuracy(self) -> float: ...


def empty_logs() -> dict:
    return {"epoch": [], "loss_train": [], "loss_val": [], "locLoss_train": [],
            "locAcc_train": [], "locLoss_val": [], "locAcc_val": []}


def append_logs(logs: dict, epoch: int, train: EpochFigures, val: EpochFigures,
                worker_names: list[str] | None = None, lrs: dict[str, float] | None = None
                ) -> None:
    """One epoch's entries; with PASE workers, also ``worker_<name>_train`` / ``_val``; the
    learning rate of each optimiser as ``lr_<name>`` (``lr_model``, ``lr_worker_<name>``)."""
    for i, name in enumerate(worker_names or []):
        for part, stats in (("train", train), ("val", val)):  # NaN for an empty pass
            value = stats.step_losses[i] if i < len(stats.step_losses) else float("nan")
            logs.setdefault(f"worker_{name}_{part}", []).append(value)
    logs["epoch"].append(epoch)
    logs["loss_train"].append(train.loss)
    logs.setdefault("train_seconds", []).append(train.seconds)
    logs["loss_val"].append(val.loss)
    logs["locLoss_train"].append(list(train.step_losses))
    logs["locAcc_train"].append(list(train.step_accuracies))
    logs["locLoss_val"].append(list(val.step_losses))
    logs["locAcc_val"].append(list(val.step_accuracies))
    for name, lr in (lrs or {}).items():
        _append_padded(logs, f"lr_{name}", lr)


def is_new_best(losses: list[float]) -> bool:
    """Whether the last validation loss is finite and lower than every earlier finite one."""
    last, earlier = losses[-1], [x for x in losses[:-1] if math.isfinite(x)]
    return math.isfinite(last) and all(last < x for x in earlier)


def comparable_val_losses(logs: dict) -> list[float]:
    """The validation losses that elect the best checkpoint: those of the epochs from
    ``best_from_epoch`` on (set when a resume changed the validation set), all by default."""
    since = logs.get("best_from_epoch", 0)
    return [loss for epoch, loss in zip(logs["epoch"], logs["loss_val"]) if epoch >= since]


def _append_padded(logs: dict, key: str, value: float) -> None:
    """Append the current epoch's ``value`` (after ``epoch`` is appended), NaN for the earlier
    epochs of a run begun before ``key`` existed."""
    logs.setdefault(key, [float("nan")] * (len(logs["epoch"]) - 1)).append(value)


def record_health(logs: dict, health: dict[str, float] | None) -> None:
    """The epoch-end health figures, one ``health_<name>`` entry per epoch (after
    :func:`append_logs`)."""
    for key, value in (health or {}).items():
        _append_padded(logs, f"health_{key}", value)


def record_epoch_time(logs: dict, seconds: float) -> None:
    """The epoch's wall time (training, validation and every hook) as ``epoch_seconds``, and
    the run's total so far as ``total_seconds``."""
    _append_padded(logs, "epoch_seconds", seconds)
    logs["total_seconds"] = sum(s for s in logs["epoch_seconds"] if s == s)  # NaN-free sum


def record_linsep(logs: dict, cpc_epoch: int, metrics: dict[str, float]) -> None:
    """The probe accuracies measured after ``cpc_epoch``."""
    logs.setdefault("linsep_epoch", []).append(cpc_epoch)
    for key in LINSEP_LOG_KEYS[1:]:
        if key in metrics:
            logs.setdefault(key, []).append(metrics[key])


def record_capture(logs: dict, epoch: int, stats: dict[str, float]) -> None:
    """The capture-set stats of ``epoch``."""
    logs.setdefault("capture_epoch", []).append(epoch)
    logs.setdefault("capture_stats", []).append(stats)


def record_tagged(logs: dict, key: str, entry: dict) -> None:
    """One entry of an :data:`EPOCH_TAGGED_LOG_KEYS` list (it carries its ``epoch``)."""
    logs.setdefault(key, []).append(entry)


def truncate_logs(logs: dict, last_epoch: int) -> dict:
    """Logs of the epochs up to ``last_epoch`` (a run resumed from an older checkpoint).

    Per-epoch lists follow ``epoch``; probe results ``linsep_epoch``; stats ``capture_epoch``.
    """
    def kept(index_key: str) -> list[int]:
        return [i for i, e in enumerate(logs.get(index_key, [])) if e <= last_epoch]
    keep = {"epoch": kept("epoch"), "linsep_epoch": kept("linsep_epoch"),
            "capture_epoch": kept("capture_epoch")}
    out = {}
    for key, values in logs.items():
        if key in EPOCH_TAGGED_LOG_KEYS:
            values = [entry for entry in values if entry["epoch"] <= last_epoch]
        elif isinstance(values, list):
            index_key = "linsep_epoch" if key in LINSEP_LOG_KEYS else \
                "capture_epoch" if key in CAPTURE_LOG_KEYS else "epoch"
            values = [values[i] for i in keep[index_key]]
        out[key] = values
    if "epoch_seconds" in out:
        out["total_seconds"] = sum(s for s in out["epoch_seconds"] if s == s)
    if out.get("best_epoch", -1) > last_epoch:
        del out["best_epoch"]
    if "best_from_epoch" in out:  # a set changed after last_epoch is still the one in use
        out["best_from_epoch"] = min(out["best_from_epoch"], last_epoch + 1)
    return out


def epoch_scalars(prefix: str, stats: EpochFigures,
                  worker_names: list[str] | None = None) -> dict[str, float]:
    """TensorBoard scalars of one pass: loss, and per worker or per prediction step."""
    out = {f"{prefix}/loss": stats.loss}
    if worker_names:
        out.update({f"workers/{name}_{prefix}": loss
                    for name, loss in zip(worker_names, stats.step_losses)})
        return out
    out[f"{prefix}/accuracy"] = stats.accuracy
    for k, (loss, acc) in enumerate(zip(stats.step_losses, stats.step_accuracies)):
        out[f"{prefix}_steps/loss_{k}"] = loss
        out[f"{prefix}_steps/accuracy_{k}"] = acc
    return out


class TensorBoard:
    """Scalars under <pathCheckpoint>/tensorboard; a no-op without a run directory. The event
    file is created at the first scalar, so a run with nothing left to train writes none."""

    def __init__(self, run_dir: str | None) -> None:
        self.log_dir = str(Path(run_dir) / "tensorboard") if run_dir else None
        self.writer = None

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.log_dir is None:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(self.log_dir)
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
