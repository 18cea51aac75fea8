"""Health figures and chance levels, against direct computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cpc.criterion.cpc import CPCCriterion
from cpc.criterion.cpc_ctc import CPCCTCCriterion
from cpc.health import (HealthMonitor, dead_unit_fraction, describe, pair_cosines,
                        saturated_fraction)
from cpc.criterion.base import CriterionOutput


def test_pair_cosines_of_parallel_and_orthogonal_windows():
    generator = torch.Generator().manual_seed(0)
    direction = torch.tensor([1.0, 2.0, 0.5])
    same = direction.expand(3, 10, 3) * torch.rand(3, 10, 1)  # every frame on one ray
    within, across = pair_cosines(same, 64, generator)
    assert within.item() == pytest.approx(1.0) and across.item() == pytest.approx(1.0)
    # each window on its own axis: frames of one window parallel, of two windows orthogonal
    axes = torch.eye(3)[:, None, :].expand(3, 10, 3) * (1 + torch.rand(3, 10, 1))
    within, across = pair_cosines(axes, 64, generator)
    assert within.item() == pytest.approx(1.0) and across.item() == pytest.approx(0.0, abs=1e-6)


def test_pair_cosines_equal_the_mean_over_the_drawn_pairs():
    frames = torch.randn(4, 7, 5)
    within, across = pair_cosines(frames, 32, torch.Generator().manual_seed(3))
    # redraw the same indices the same way and average by hand
    g = torch.Generator().manual_seed(3)
    item, t1 = torch.randint(0, 4, (32,), generator=g), torch.randint(0, 7, (32,), generator=g)
    t2 = (t1 + 1 + torch.randint(0, 6, (32,), generator=g)) % 7
    other = (item + 1 + torch.randint(0, 3, (32,), generator=g)) % 4
    t3 = torch.randint(0, 7, (32,), generator=g)
    assert not torch.any(t1 == t2) and not torch.any(item == other)
    expected_within = sum(F.cosine_similarity(frames[i, a], frames[i, b], dim=0)
                          for i, a, b in zip(item, t1, t2)) / 32
    expected_across = sum(F.cosine_similarity(frames[i, a], frames[j, b], dim=0)
                          for i, a, j, b in zip(item, t1, other, t3)) / 32
    torch.testing.assert_close(within, expected_within)
    torch.testing.assert_close(across, expected_across)


def test_dead_units_are_channels_constant_over_the_batch():
    z = torch.rand(2, 5, 8)
    z[..., 1] = 0.0  # a dead ReLU unit
    z[..., 4] = 3.0  # constant, not zero
    z[0, 0, 6] = 0.0  # zero somewhere only: alive
    assert dead_unit_fraction(z).item() == pytest.approx(2 / 8)


def test_saturated_fraction():
    c = torch.tensor([[[0.99, -0.97, 0.5, 0.0]]])
    assert saturated_fraction(c).item() == pytest.approx(0.5)


def test_cpc_chance_loss_is_the_loss_of_uninformative_frames():
    criterion = CPCCriterion(4, 6, 6, 10, rnn_mode="linear")
    out = criterion(torch.randn(2, 12, 6), torch.zeros(2, 12, 6))  # every score 0
    assert criterion.chance_loss() == pytest.approx(4 * math.log(11))
    assert out.loss.item() == pytest.approx(criterion.chance_loss(), rel=1e-6)
    assert out.score_margin.item() == 0.0


@pytest.mark.parametrize("flags", [{}, {"skip_beg": 1, "skip_end": 2, "self_loop": True},
                                   {"learn_blank": True, "loss_temp": 0.5,
                                    "masq_rules": "0:2:2:"}])
def test_cpcctc_chance_loss_is_the_loss_of_uninformative_frames(flags):
    criterion = CPCCTCCriterion(3, 5, 6, 6, 9, rnn_mode="linear", **flags)
    out = criterion(torch.randn(2, 12, 6), torch.zeros(2, 12, 6))
    assert out.loss.item() == pytest.approx(criterion.chance_loss(), rel=1e-5)
    assert out.score_margin.item() == 0.0


def test_margin_is_positive_when_the_positive_is_predictable():
    torch.manual_seed(0)
    criterion = CPCCriterion(1, 4, 4, 8, rnn_mode="linear")
    with torch.no_grad():
        criterion.wPrediction.predictors[0].linear.weight.copy_(torch.eye(4))
    z = torch.randn(1, 50, 4)
    c = torch.roll(z, -1, dims=1)  # c_t = z_{t+1}: the head predicts its positive exactly
    assert criterion(c, z).score_margin.item() > 0.5


def step_output(z: torch.Tensor, c: torch.Tensor, loss: float) -> CriterionOutput:
    return CriterionOutput(torch.tensor(loss), torch.zeros(1), torch.zeros(1),
                           score_margin=torch.tensor(0.1), context=c, encoded=z)


def test_monitor_averages_the_loss_since_its_last_read():
    monitor = HealthMonitor(part_names=["encoder", "context"], saturating_context=True)
    z, c = torch.rand(2, 6, 4), torch.rand(2, 6, 3) * 2 - 1
    assert monitor.check() is None  # nothing observed yet
    monitor.observe(step_output(z, c, 1.0), torch.tensor([1.0, 2.0]))
    figures = monitor.figures()  # device scalars, nothing read back
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in figures.values())
    assert figures["loss"].item() == pytest.approx(1.0)
    monitor.observe(step_output(z, c, 3.0), torch.tensor([1.0, 2.0]))
    monitor.observe(step_output(z, c, 5.0), torch.tensor([0.5, 0.25]))
    metrics = monitor.check()
    assert metrics["loss"] == pytest.approx(4.0)
    assert metrics["grad_encoder"] == pytest.approx(0.5) and metrics["grad_context"] == 0.25
    assert metrics["score_margin"] == pytest.approx(0.1)
    assert metrics["saturated"] == pytest.approx(saturated_fraction(c).item())
    assert monitor.latest == metrics
    assert monitor.check() is None  # nothing new since
    assert describe(metrics).startswith("health: z cos")


def test_a_resumed_monitor_samples_the_same_pairs():
    from cpc.criterion.base import CriterionOutput
    torch.manual_seed(0)
    out = CriterionOutput(torch.tensor(2.0), torch.zeros(1), torch.zeros(1),
                          context=torch.randn(4, 10, 6), encoded=torch.randn(4, 10, 5))
    first = HealthMonitor(["encoder"], saturating_context=False, seed=3)
    first.observe(out, torch.ones(1))
    first.figures()
    first.observe(out, torch.ones(1))  # a step after the check: its loss is pending
    resumed = HealthMonitor(["encoder"], saturating_context=False, seed=3)
    resumed.load_state_dict(first.state_dict())
    resumed.observe(out, torch.ones(1))
    first.observe(out, torch.ones(1))
    assert {k: float(v) for k, v in first.figures().items()} == \
        {k: float(v) for k, v in resumed.figures().items()}
