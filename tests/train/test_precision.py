"""--precision: bf16 / fp16 autocast steps on CPU, float32 islands, loss scaling, resumes."""
from __future__ import annotations

import json

import pytest
import torch

from cpc.criterion.registry import build_criterion
from cpc.data.batch import Batch
from cpc.model import build_model
from cpc.criterion.objective import CriterionObjective
from cpc.trainer import StepModule
from cpc.options import build_parser
from cpc.precision import autocast, loss_scaler
from cpc.utils.optim import Updater, build_optimizer
from tests.train.test_train import SMALL, corpus_args, run

BF16_TOLERANCE = 0.03  # relative, per step; measured 0.4-1.2% over 30 steps on seeds 0-2


def tones(batch: int = 8, samples: int = 3200) -> torch.Tensor:
    """Sines of different pitches plus a little noise: something a CPC model learns fast."""
    gen = torch.Generator().manual_seed(1)
    t = torch.arange(samples) / 16000
    return torch.stack([torch.sin(2 * torch.pi * (200 + 50 * i) * t)
                        + 0.1 * torch.randn(samples, generator=gen) for i in range(batch)])[:, None]


def train_losses(precision: str, seed: int, steps: int, flags: list[str] = ()) -> list[float]:
    args = build_parser().parse_args(["--pathDB", "x"] + [str(a) for a in SMALL] + list(flags))
    torch.manual_seed(seed)
    model = build_model(args)
    criterion = build_criterion("cpcctc" if args.CPCCTC else "cpc", args,
                                dim_context=model.dim_context, dim_encoded=model.dim_encoded)
    step = StepModule(model, CriterionObjective(criterion), precision)
    optimizer, rate = build_optimizer(list(step.parameters()), 2e-3, 0.9, 0.999, 1e-8,
                                      None, -1)
    updater = Updater({"model": optimizer}, {"model": rate},
                      {"all": list(step.parameters())}, clip_grad_norm=1.0,
                      scaler=loss_scaler(precision, torch.device("cpu")))
    audio, losses = tones(), []
    torch.manual_seed(seed + 1)  # the same negatives in both precisions
    for _ in range(steps):
        out = step(Batch(audio, torch.zeros(8, dtype=torch.long), None, torch.zeros(1),
                         torch.zeros(1)))
        updater.backward(out.loss)
        updater.step()
        updater.zero_grad()
        losses.append(out.loss.item())
    return losses


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_steps_track_fp32_within_the_stated_tolerance(seed):
    full, half = train_losses("fp32", seed, 30), train_losses("bf16", seed, 30)
    assert full[-1] < full[0] - 1.0 and half[-1] < half[0] - 1.0  # both learn
    for a, b in zip(full, half):
        assert abs(b - a) <= BF16_TOLERANCE * abs(a)


def test_fp16_steps_run_with_a_loss_scale():
    losses = train_losses("fp16", 0, 8)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


@pytest.mark.parametrize("flags", [[], ["--CPCCTC", "--CPCCTCNumMatched", "5"]],
                         ids=["cpc", "cpcctc"])
def test_scores_and_losses_stay_float32_under_autocast(flags, monkeypatch):
    import cpc.criterion.cpc as cpc_module
    import cpc.criterion.cpc_ctc as cpcctc_module
    seen = []
    for module, name in ((cpc_module, "info_nce_logits"), (cpcctc_module, "soft_align")):
        original = getattr(module, name)

        def spy(first, *rest, _original=original, **kwargs):
            seen.append(first.dtype)
            return _original(first, *rest, **kwargs)
        monkeypatch.setattr(module, name, spy)
    args = build_parser().parse_args(["--pathDB", "x"] + [str(a) for a in SMALL] + flags)
    model = build_model(args)
    criterion = build_criterion("cpcctc" if flags else "cpc", args,
                                dim_context=model.dim_context, dim_encoded=model.dim_encoded)
    with autocast("bf16", torch.device("cpu")):
        c, z, _ = model(tones(), None)
        out = criterion(c, z)
    assert c.dtype == torch.bfloat16  # the model itself ran in bf16
    assert seen and set(seen) == {torch.float32}
    assert out.loss.dtype == out.step_losses.dtype == torch.float32


def test_a_run_resumes_under_another_precision(tiny_corpus, tmp_path, capsys):
    """Checkpoints hold float32 weights whatever the precision (and fp16's loss scale)."""
    out = tmp_path / "run"
    base = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out, "--save_step", "1"]
    assert run(base + ["--nEpoch", "1", "--precision", "fp16"]) == 0
    state = torch.load(out / "checkpoint_0.pt", weights_only=True)
    assert "grad_scaler" in state
    assert all(v.dtype == torch.float32 for v in state["gEncoder"].values()
               if v.is_floating_point())
    assert run(base + ["--nEpoch", "2", "--precision", "bf16"]) == 0
    assert "--precision bf16 (the run had fp16): applied from epoch 1" in capsys.readouterr().out
    logs = json.loads((out / "checkpoint_logs.json").read_text())
    assert logs["epoch"] == [0, 1] and all(x == x for x in logs["loss_train"])
    assert {"epoch": 1, "flag": "precision", "was": "fp16", "now": "bf16"} in \
        logs["option_changes"]
