"""Health logging and the collapse guard in real trainings, with a collapse forced by an
absurd learning rate (no clipping, no warm-up)."""
from __future__ import annotations

import json

import pytest

from cpc import train
from cpc.utils import checkpoint as ckpt
from tests.test_train import SMALL, corpus_args, run

FORCE_COLLAPSE = ["--learningRate", "0.5", "--clip_grad_norm", "0", "--warmup_steps", "0",
                  "--logging_step", "5", "--collapse_patience", "2", "--collapse_cosine", "0.95"]
# (this small model's collapsed frames reach a cosine of 0.98-0.996, not always the default 0.99)


def logs_of(run_dir) -> dict:
    return json.loads((run_dir / ckpt.LOGS_FILE).read_text())


def test_health_is_logged_per_check_and_per_epoch(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out, "--nEpoch", "2",
                                                   "--logging_step", "10"]) == 0
    logs = logs_of(out)
    steps = [entry["step"] for entry in logs["health_steps"]]
    assert steps[:3] == [10, 20, 30] and steps == sorted(steps)
    assert {entry["epoch"] for entry in logs["health_steps"]} == {0, 1}
    for key in ("z_cos_within", "z_cos_across", "c_cos_within", "c_cos_across", "dead_units",
                "saturated", "grad_encoder", "grad_context", "grad_criterion", "score_margin",
                "loss"):
        assert len(logs[f"health_{key}"]) == 2, key
    assert logs["health_steps"][-1]["z_cos_across"] == logs["health_z_cos_across"][-1]
    assert "collapse_events" not in logs
    printed = capsys.readouterr().out
    assert printed.count("health: z cos") == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    board = EventAccumulator(str(out / "tensorboard"))
    board.Reload()
    assert {"health/z_cos_across", "health/grad_encoder", "health/lr"} <= set(
        board.Tags()["scalars"])


def test_warn_reports_the_collapse_and_goes_on(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(corpus_args(tiny_corpus) + SMALL + FORCE_COLLAPSE + [
        "--pathCheckpoint", out, "--nEpoch", "1", "--on_collapse", "warn"]) == 0
    events = logs_of(out)["collapse_events"]
    assert events[0]["action"] == "warn" and events[0]["step"] == 10
    err = capsys.readouterr().err
    assert "warning: collapse detected at step 10 (epoch 0): loss" in err
    assert ckpt.list_checkpoints(out)  # the run went on to the end


def test_stop_checkpoints_and_ends_the_run(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(corpus_args(tiny_corpus) + SMALL + FORCE_COLLAPSE + [
        "--pathCheckpoint", out, "--nEpoch", "3", "--on_collapse", "stop"]) == 2
    err = capsys.readouterr().err
    assert "collapse detected at step 10 (epoch 0)" in err and "--on_collapse stop" in err
    assert "lower --learningRate" in err
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(out)[-1][1])
    assert state["interrupted"]["batches_done"] == 10
    assert logs_of(out)["collapse_events"][-1]["action"] == "stop"


def test_rollback_restores_lowers_the_rate_and_learns(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(corpus_args(tiny_corpus) + SMALL + FORCE_COLLAPSE + [
        "--pathCheckpoint", out, "--nEpoch", "2", "--rollback_lr_factor", "0.004"]) == 0
    logs = logs_of(out)
    rollbacks = [e for e in logs["collapse_events"] if e["action"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["lr"] == pytest.approx(2e-3)
    assert "rolled back to the last healthy state, learning rate now 0.002" in \
        capsys.readouterr().err
    after = [h for h in logs["health_steps"] if h["step"] > rollbacks[0]["step"]]
    assert after and all(h["z_cos_across"] < 0.95 for h in after[2:])
    assert logs["collapse_events"] == rollbacks  # no collapse after it
    assert logs["health_loss"][-1] < rollbacks[0]["loss"] - 0.05
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(out)[-1][1])
    assert state["scheduler"]["base_lrs"] == pytest.approx([2e-3])  # kept on resume
