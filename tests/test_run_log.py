"""The run log on its own: its per-epoch lists, the padding of keys a run gained later, the
election of the best epoch, and truncation to the checkpoint a run resumes from."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from cpc.run_log import (append_logs, comparable_val_losses, empty_logs, epoch_scalars,
                         is_new_best, record_capture, record_epoch_time, record_health,
                         record_linsep, record_tagged, truncate_logs)


@dataclass
class Figures:
    loss: float
    step_losses: list[float] = field(default_factory=lambda: [1.0, 2.0])
    step_accuracies: list[float] = field(default_factory=lambda: [0.5, 0.25])
    seconds: float = 3.0

    @property
    def accuracy(self) -> float:
        return sum(self.step_accuracies) / len(self.step_accuracies)


def logged_epochs(n: int) -> dict:
    logs = empty_logs()
    for epoch in range(n):
        append_logs(logs, epoch, Figures(10.0 - epoch), Figures(9.0 - epoch),
                    lrs={"model": 0.1 / (epoch + 1)})
        record_health(logs, {"z_cos_across": 0.5 + epoch / 10})
        record_epoch_time(logs, 2.0)
        record_tagged(logs, "collapse_events", {"epoch": epoch, "action": "warn"})
        if epoch % 2:
            record_linsep(logs, epoch, {"speaker_best_val_acc": 0.1 * epoch, "other": 1.0})
            record_capture(logs, epoch, {"reprDiff": float(epoch)})
    return logs


def test_one_epoch_fills_every_per_epoch_list():
    logs = logged_epochs(1)
    assert logs["epoch"] == [0] and logs["loss_train"] == [10.0] and logs["loss_val"] == [9.0]
    assert logs["locLoss_train"] == [[1.0, 2.0]] and logs["locAcc_val"] == [[0.5, 0.25]]
    assert logs["lr_model"] == [0.1] and logs["train_seconds"] == [3.0]
    assert logs["health_z_cos_across"] == [0.5] and logs["total_seconds"] == 2.0


def test_a_key_a_run_gains_later_is_padded_with_nan_for_the_earlier_epochs():
    logs = logged_epochs(2)
    append_logs(logs, 2, Figures(1.0), Figures(1.0), lrs={"model": 0.01, "worker_mfcc": 0.02})
    assert logs["lr_model"][-1] == 0.01
    assert math.isnan(logs["lr_worker_mfcc"][0]) and math.isnan(logs["lr_worker_mfcc"][1])
    assert logs["lr_worker_mfcc"][2] == 0.02


def test_workers_get_a_loss_list_each_and_nan_for_an_empty_pass():
    logs = empty_logs()
    append_logs(logs, 0, Figures(1.0, step_losses=[0.3, 0.4]), Figures(1.0, step_losses=[]),
                worker_names=["mfcc", "lim"])
    assert logs["worker_mfcc_train"] == [0.3] and logs["worker_lim_train"] == [0.4]
    assert math.isnan(logs["worker_mfcc_val"][0]) and math.isnan(logs["worker_lim_val"][0])


@pytest.mark.parametrize("losses, best", [
    ([3.0], True), ([3.0, 2.0], True), ([2.0, 3.0], False), ([2.0, 2.0], False),
    ([float("nan"), 5.0], True), ([2.0, float("nan")], False), ([float("inf")], False)])
def test_a_new_best_is_finite_and_lower_than_every_earlier_finite_loss(losses, best):
    assert is_new_best(losses) is best


def test_the_best_is_elected_among_the_epochs_of_the_current_validation_set():
    logs = logged_epochs(4)
    assert comparable_val_losses(logs) == [9.0, 8.0, 7.0, 6.0]
    logs["best_from_epoch"] = 2
    assert comparable_val_losses(logs) == [7.0, 6.0]


def test_truncation_keeps_the_epochs_up_to_the_resumed_one_in_every_kind_of_list():
    logs = logged_epochs(4)
    logs["best_epoch"], logs["best_from_epoch"] = 3, 3
    kept = truncate_logs(logs, 1)
    assert kept["epoch"] == [0, 1] and kept["loss_val"] == [9.0, 8.0]
    assert kept["lr_model"] == logs["lr_model"][:2]
    assert kept["linsep_epoch"] == [1] and kept["speaker_best_val_acc"] == [0.1]
    assert kept["capture_epoch"] == [1] and kept["capture_stats"] == [{"reprDiff": 1.0}]
    assert [event["epoch"] for event in kept["collapse_events"]] == [0, 1]
    assert kept["total_seconds"] == 4.0
    assert "best_epoch" not in kept  # its checkpoint is newer than the resumed one
    assert kept["best_from_epoch"] == 2  # the changed set is still the one in use
    assert logs["epoch"] == [0, 1, 2, 3]  # the input is left as it was


def test_tensorboard_scalars_per_step_or_per_worker():
    scalars = epoch_scalars("train", Figures(5.0))
    assert scalars == {"train/loss": 5.0, "train/accuracy": 0.375,
                       "train_steps/loss_0": 1.0, "train_steps/accuracy_0": 0.5,
                       "train_steps/loss_1": 2.0, "train_steps/accuracy_1": 0.25}
    assert epoch_scalars("val", Figures(5.0), ["mfcc", "lim"]) == {
        "val/loss": 5.0, "workers/mfcc_val": 1.0, "workers/lim_val": 2.0}
