"""The update step: per-step warm-up on top of the per-epoch schedule, clipping, part norms."""
from __future__ import annotations

import pytest
import torch

from cpc.utils.optim import Updater, build_optimizer, lr_factor, steps_taken, warmup_factor


def test_warmup_factor_is_linear_then_one():
    assert [warmup_factor(n, 4) for n in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def two_parts(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)


def backward(a: torch.nn.Module, b: torch.nn.Module, scale: float = 1.0) -> None:
    x = torch.arange(6.0).reshape(2, 3)
    (scale * b(a(x)).pow(2).sum()).backward()


def make_updater(a, b, clip=0.0, warmup=0, ramp=None, step_epochs=-1) -> Updater:
    optimizer, rate = build_optimizer(list(a.parameters()) + list(b.parameters()), 0.1,
                                      0.9, 0.999, 1e-8, ramp, step_epochs, warmup)
    return Updater({"model": optimizer}, {"model": rate},
                   {"a": list(a.parameters()), "b": list(b.parameters())}, clip)


def test_part_norms_match_a_direct_computation():
    a, b = two_parts()
    updater = make_updater(a, b)
    backward(a, b)
    norms = updater.grad_norms()
    expected = [torch.sqrt(sum(p.grad.pow(2).sum() for p in m.parameters())) for m in (a, b)]
    torch.testing.assert_close(norms, torch.stack(expected))


def test_clipping_scales_all_gradients_to_the_global_norm():
    a, b = two_parts()
    updater = make_updater(a, b, clip=0.5)
    backward(a, b, scale=100.0)
    grads = [p.grad.clone() for p in list(a.parameters()) + list(b.parameters())]
    total = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    assert total > 0.5
    optimizer = updater.optimizers["model"]
    optimizer.step = lambda: None  # look at the gradients the optimiser would use
    norms = updater.step()
    torch.testing.assert_close(torch.linalg.vector_norm(norms), total)  # norms before clipping
    clipped = [p.grad for p in list(a.parameters()) + list(b.parameters())]
    for before, after in zip(grads, clipped):
        torch.testing.assert_close(after, before * 0.5 / total, rtol=1e-5, atol=1e-8)


def test_small_gradients_are_not_clipped():
    a, b = two_parts()
    updater = make_updater(a, b, clip=1e6)
    backward(a, b)
    grads = [p.grad.clone() for p in a.parameters()]
    updater.optimizers["model"].step = lambda: None
    updater.step()
    for before, p in zip(grads, a.parameters()):
        assert torch.equal(before, p.grad)


def test_warmup_ramps_each_step_on_top_of_the_epoch_schedule():
    a, b = two_parts()
    updater = make_updater(a, b, warmup=4, ramp=2)
    optimizer, rate = updater.optimizers["model"], updater.rates["model"]
    seen = []
    for _ in range(3):
        backward(a, b)
        updater.step()
        updater.zero_grad()
        seen.append(optimizer.param_groups[0]["lr"])
    assert steps_taken(optimizer) == 3
    # epoch 0 of a 2-epoch ramp: 0.1 * 1/2, times (n + 1) / 4
    assert seen == pytest.approx([0.05 * 0.25, 0.05 * 0.5, 0.05 * 0.75])
    rate.set_epoch(1)  # epoch 1: ramp done
    backward(a, b)
    updater.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(1, 2, -1))
    assert rate.scheduled() == pytest.approx(0.1)
    assert rate.lr_at(2, 0) == pytest.approx(0.05 * 0.75)  # one formula of step and epoch


def test_warmup_resumes_from_the_optimizer_state():
    a, b = two_parts()
    updater = make_updater(a, b, warmup=10)
    for _ in range(4):
        backward(a, b)
        updater.step()
        updater.zero_grad()
    state = updater.optimizers["model"].state_dict()
    a2, b2 = two_parts()
    resumed = make_updater(a2, b2, warmup=10)
    resumed.optimizers["model"].load_state_dict(state)
    backward(a2, b2)
    resumed.step()
    assert resumed.optimizers["model"].param_groups[0]["lr"] == pytest.approx(0.1 * 5 / 10)


def test_scaled_base_rate_holds_through_the_schedule():
    a, b = two_parts()
    updater = make_updater(a, b, step_epochs=1)
    optimizer, rate = updater.optimizers["model"], updater.rates["model"]
    rate.scale(0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    backward(a, b)
    updater.step()
    rate.set_epoch(1)  # halved after one epoch
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert rate.state_dict()["base_lrs"] == pytest.approx([0.05])


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_accumulated_micro_batches_update_like_one_larger_batch(monkeypatch, clip):
    """--update_freq K: K micro-batches of B windows give the update of one batch of K * B
    (negatives drawn per anchor only, so that every window's loss is independent of the
    batch it is in), with clipping and warm-up acting on the accumulated gradient."""
    import cpc.criterion.cpc as cpc_criterion
    from cpc.criterion.registry import build_criterion
    from cpc.data.batch import Batch
    from cpc.model import build_model
    from cpc.criterion.objective import CriterionObjective
    from cpc.trainer import StepModule
    from cpc.options import build_parser
    from tests.train.test_distributed import fixed_negatives
    from tests.train.test_train import SMALL

    monkeypatch.setattr(cpc_criterion, "sample_negative_indices", fixed_negatives)
    args = build_parser().parse_args(["--pathDB", "x"] + [str(a) for a in SMALL])
    audio = torch.randn(8, 1, 3200, generator=torch.Generator().manual_seed(1))

    def batch(rows: slice) -> Batch:
        part = audio[rows]
        return Batch(part, torch.zeros(len(part), dtype=torch.long), None, torch.zeros(1),
                     torch.zeros(1))

    def updated(update_freq: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(args)
        criterion = build_criterion("cpc", args, dim_context=model.dim_context,
                                    dim_encoded=model.dim_encoded)
        step = StepModule(model, CriterionObjective(criterion))
        optimizer, rate = build_optimizer(list(step.parameters()), 1e-3, 0.9, 0.999, 1e-8,
                                          None, -1, warmup_steps=3)
        updater = Updater({"model": optimizer}, {"model": rate},
                          {"all": list(step.parameters())}, clip, update_freq=update_freq)
        for update in range(2):
            for micro in range(update_freq):
                size = 8 // update_freq
                updater.backward(step(batch(slice(micro * size, (micro + 1) * size))).loss)
            updater.step()
            updater.zero_grad()
        return {name: p.detach().clone() for name, p in step.named_parameters()}

    whole, accumulated = updated(1), updated(4)
    for name in whole:
        torch.testing.assert_close(accumulated[name], whole[name], rtol=1e-6, atol=1e-6,
                                   msg=name)


def test_a_short_last_update_averages_the_micro_batches_it_holds():
    a, b = two_parts()
    updater = make_updater(a, b)
    updater.update_freq = 4
    updater.optimizers["model"].step = lambda: None
    for _ in range(3):  # the epoch ends after 3 of 4
        updater.backward(b(a(torch.ones(2, 3))).pow(2).sum())
    grads = [p.grad.clone() for p in a.parameters()]
    updater.step(micro_batches=3)
    for before, p in zip(grads, a.parameters()):
        torch.testing.assert_close(p.grad, before * 4 / 3)
