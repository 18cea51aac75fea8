"""The collapse guard's decisions, on a small stand-in for a training."""
from __future__ import annotations

import pytest
import torch

from cpc.collapse_guard import CollapseGuard, CollapseRule
from cpc.utils.optim import build_optimizer

CHANCE = 10.0
HEALTHY = {"loss": 8.0, "z_cos_across": 0.5, "dead_units": 0.1}
COLLAPSED = {"loss": 9.9, "z_cos_across": 0.996, "dead_units": 0.5}


class TinyTraining:
    """What the guard uses of a TrainedState: state/load, scale_lr, lr."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(2, 2)
        optimizer, rate = build_optimizer(self.model.parameters(), 0.1, 0.9, 0.999, 1e-8,
                                          None, -1)
        self.optimizers, self.rates = {"model": optimizer}, {"model": rate}

    def state(self, epoch: int) -> dict:
        return {"gEncoder": self.model.state_dict(), "epoch": epoch,
                "optimizer": self.optimizers["model"].state_dict(),
                "scheduler": self.rates["model"].state_dict()}

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["gEncoder"])
        self.optimizers["model"].load_state_dict(state["optimizer"])
        self.rates["model"].load_state_dict(state["scheduler"])

    def scale_lr(self, factor: float) -> None:
        self.rates["model"].scale(factor)

    @property
    def lr(self) -> float:
        return self.optimizers["model"].param_groups[0]["lr"]


def make_guard(mode: str, patience: int = 2, max_rollbacks: int = 5):
    training, reseeds = TinyTraining(), []
    guard = CollapseGuard(mode, CollapseRule(patience=patience), CHANCE, training,
                          reseeds.append, lr_factor=0.5, max_rollbacks=max_rollbacks)
    return guard, training, reseeds


@pytest.mark.parametrize("metrics, collapsed", [
    (HEALTHY, False), (COLLAPSED, True),
    ({**COLLAPSED, "loss": 9.0}, False),  # learning: loss clearly below chance
    ({**COLLAPSED, "z_cos_across": 0.6}, False),  # frames still differ
    ({**COLLAPSED, "z_cos_across": 0.0, "dead_units": 0.95}, True),  # every unit dead
    ({**COLLAPSED, "z_cos_across": float("nan"), "dead_units": 0.0}, False)])
def test_rule(metrics, collapsed):
    assert CollapseRule().is_collapsed(metrics, CHANCE) is collapsed


CONTEXT_COLLAPSED = {**HEALTHY, "loss": 9.99, "c_cos_across": 0.9995, "saturated": 0.8}


@pytest.mark.parametrize("metrics, part", [
    (CONTEXT_COLLAPSED, "context"),
    ({**CONTEXT_COLLAPSED, "loss": 9.0}, None),  # learning
    ({**CONTEXT_COLLAPSED, "saturated": 0.2}, None),  # LSTM outputs still in range
    ({**CONTEXT_COLLAPSED, "c_cos_across": 0.9}, None),  # contexts still differ
    ({key: v for key, v in CONTEXT_COLLAPSED.items() if key != "saturated"}, None),
    ({**CONTEXT_COLLAPSED, "z_cos_across": 0.999}, "encoder"),  # the encoder is named first
    ({**CONTEXT_COLLAPSED, "loss": float("nan")}, None)])
def test_rule_for_the_context_network(metrics, part):
    """The context part: contexts of different windows parallel, LSTM / GRU outputs saturated,
    loss at chance (other context networks have no saturation figure: the encoder decides)."""
    assert CollapseRule().collapsed_part(metrics, CHANCE) == part


def test_a_context_collapse_names_the_context_figures():
    guard, _, _ = make_guard("warn", patience=1)
    event = guard.after_check(CONTEXT_COLLAPSED, 10, 0)
    assert event["part"] == "context" and event["c_cos_across"] == 0.9995
    assert "context cosine across windows 1.000, saturated 80% (the context network, not the " \
        "encoder: z cosine 0.500)" in event["message"]


def test_without_a_chance_level_the_encoder_figures_decide():
    assert CollapseRule().is_collapsed({**COLLAPSED, "loss": 0.1}, None)
    assert not CollapseRule().is_collapsed({**HEALTHY, "loss": 99.0}, None)


def test_warn_reports_once_after_patience_and_again_on_recovery():
    guard, training, _ = make_guard("warn", patience=2)
    assert guard.after_check(COLLAPSED, 10, 0) is None  # not confirmed yet
    event = guard.after_check(COLLAPSED, 20, 0)
    assert event["action"] == "warn" and "step 20" in event["message"]
    assert "loss 9.9 (chance 10)" in event["message"]
    assert guard.after_check(COLLAPSED, 30, 0) is None  # already reported
    assert guard.after_check(HEALTHY, 40, 1)["action"] == "recovered"
    assert not guard.stop_requested and training.lr == 0.1


def test_a_brief_collapse_is_left_alone():
    guard, _, _ = make_guard("stop", patience=3)
    for metrics in (COLLAPSED, COLLAPSED, HEALTHY, COLLAPSED, COLLAPSED, HEALTHY):
        assert guard.after_check(metrics, 0, 0) is None
    assert not guard.stop_requested


def test_stop_requests_the_end_of_the_run():
    guard, _, _ = make_guard("stop", patience=1)
    event = guard.after_check(COLLAPSED, 5, 0)
    assert event["action"] == "stop" and guard.stop_requested
    assert "--on_collapse stop" in event["message"]


def test_rollback_restores_the_last_healthy_state_with_a_lower_rate():
    guard, training, reseeds = make_guard("rollback", patience=1)
    guard.keep_healthy_state()
    with torch.no_grad():
        training.model.weight.fill_(1.0)
    guard.after_check(HEALTHY, 10, 0)  # this state becomes the one to return to
    healthy_weight = training.model.weight.detach().clone()
    with torch.no_grad():
        training.model.weight.fill_(123.0)  # the collapse
    event = guard.after_check(COLLAPSED, 20, 0)
    assert event["action"] == "rollback" and event["rollback"] == 1
    assert torch.equal(training.model.weight, healthy_weight)
    assert training.lr == pytest.approx(0.05) and event["lr"] == pytest.approx(0.05)
    assert reseeds == [1]
    # collapsing again before a new healthy check: back to the same state, rate halved again
    guard.after_check(COLLAPSED, 30, 0)
    assert training.lr == pytest.approx(0.025) and reseeds == [1, 2]
    # a healthy check after the rollback: its state already has the lower rate
    guard.after_check(HEALTHY, 40, 0)
    guard.after_check(COLLAPSED, 50, 0)
    assert training.lr == pytest.approx(0.0125)
    assert training.rates["model"].state_dict()["base_lrs"] == pytest.approx([0.0125])


def test_rollbacks_run_out_then_the_run_stops():
    guard, _, _ = make_guard("rollback", patience=1, max_rollbacks=2)
    guard.keep_healthy_state()
    actions = [guard.after_check(COLLAPSED, step, 0)["action"] for step in range(3)]
    assert actions == ["rollback", "rollback", "stop"] and guard.stop_requested
    assert "2 rollbacks did not help" in guard.events[-1]["message"]


def test_rollback_without_a_healthy_state_stops():
    guard, _, _ = make_guard("rollback", patience=1)
    assert guard.after_check(COLLAPSED, 1, 0)["action"] == "stop"
    assert "no healthy state" in guard.events[-1]["message"]


def test_a_check_without_a_verdict_neither_breaks_a_streak_nor_becomes_the_healthy_state():
    """A batch of one window has no cosine across windows (NaN), as on a corpus of one file per
    speaker with same-speaker batches; a NaN loss is no verdict either. Such checks used to
    count as healthy: the streak restarted and the state after them became the rollback
    target."""
    guard, training, _ = make_guard("rollback", patience=2)
    guard.after_check(HEALTHY, 10, 0)
    healthy_weight = training.model.weight.detach().clone()
    assert guard.after_check(COLLAPSED, 20, 0) is None
    with torch.no_grad():
        training.model.weight.fill_(123.0)  # the collapsed state
    assert guard.after_check({**COLLAPSED, "z_cos_across": float("nan"),
                              "c_cos_across": float("nan")}, 30, 0) is None
    assert guard.after_check({**HEALTHY, "loss": float("nan")}, 35, 0) is None
    event = guard.after_check(COLLAPSED, 40, 0)
    assert event["action"] == "rollback"
    assert torch.equal(training.model.weight, healthy_weight)
