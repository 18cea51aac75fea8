"""Health logging and the collapse guard in real trainings, with a collapse forced by an
absurd learning rate (no clipping, no warm-up)."""
from __future__ import annotations

import json

import pytest
import torch

from cpc.run_log import record_health, truncate_logs
from cpc.utils import checkpoint as ckpt
from tests.train.test_train import SMALL, corpus_args, run

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
    assert not ckpt.list_checkpoints(out)  # the cut epoch is not a finished one
    state = ckpt.load_checkpoint(ckpt.list_interrupted(out)[-1][1])
    assert state["interrupted"]["batches_done"] == 10
    assert logs_of(out)["collapse_events"][-1]["action"] == "stop"


def test_rollback_restores_lowers_the_rate_and_learns(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    # The context part of the rule is off here (--collapse_saturated 1): after the absurd rate
    # this small model's LSTM ends half saturated, its contexts parallel and its loss within
    # 5% of chance, which that part rightly counts as a collapse of its own (see
    # test_a_context_network_stuck_in_saturation_is_declared_collapsed).
    assert run(corpus_args(tiny_corpus) + SMALL + FORCE_COLLAPSE + [
        "--pathCheckpoint", out, "--nEpoch", "2", "--rollback_lr_factor", "0.004",
        "--collapse_saturated", "1"]) == 0
    logs = logs_of(out)
    rollbacks = [e for e in logs["collapse_events"] if e["action"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["lr"] == pytest.approx(2e-3)
    assert "rolled back to the last healthy state, learning rate now 0.002" in \
        capsys.readouterr().err
    after = [h for h in logs["health_steps"] if h["step"] > rollbacks[0]["step"]]
    assert after and all(h["z_cos_across"] < 0.95 for h in after[2:])
    assert logs["collapse_events"] == rollbacks  # no collapse after it
    assert logs["health_loss"][-1] < after[0]["loss"] - 0.1  # it learns from the restored state
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(out)[-1][1])
    assert state["scheduler"]["base_lrs"] == pytest.approx([2e-3])  # kept on resume


def test_resumed_run_keeps_one_health_record_per_epoch(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    base = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out, "--save_step", "1",
                                               "--logging_step", "20"]
    assert run(base + ["--nEpoch", "1"]) == 0
    assert run(base + ["--nEpoch", "2"]) == 0
    logs = logs_of(out)
    assert len(logs["health_loss"]) == 2 and len(logs["train_seconds"]) == 2
    assert sorted({h["epoch"] for h in logs["health_steps"]}) == [0, 1]


def test_logs_of_older_runs_gain_aligned_health_lists():
    logs = {"epoch": [], "health_steps": [{"epoch": 0, "step": 5}, {"epoch": 2, "step": 9}],
            "collapse_events": [{"epoch": 2, "step": 9, "action": "warn"}]}
    for epoch in range(3):
        logs["epoch"].append(epoch)
        if epoch == 2:  # a run begun before the health figures existed, resumed
            record_health(logs, {"loss": 1.5})
    assert logs["health_loss"][2] == 1.5 and len(logs["health_loss"]) == 3
    kept = truncate_logs(logs, 1)
    assert kept["health_loss"] == logs["health_loss"][:2]
    assert kept["health_steps"] == [{"epoch": 0, "step": 5}] and kept["collapse_events"] == []


def test_a_context_network_stuck_in_saturation_is_declared_collapsed(tiny_corpus, tmp_path,
                                                                      capsys):
    """The natural-speech failure of CPC_audio's recipe: the encoder still differs between
    windows, but every LSTM output sits at +-1, so the contexts are one vector and the loss
    stays at chance. Forced here by loading weights whose LSTM gate biases are +30 (every gate
    open, the cell growing by one a step): saturated units pass no gradient, so it stays."""
    trained = tmp_path / "trained"
    assert run(corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", trained,
                                                   "--nEpoch", "1"]) == 0
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(trained)[-1][1])
    state["gEncoder"]["gAR.baseNet.bias_ih_l0"] += 30.0
    saturated = tmp_path / "saturated.pt"
    torch.save(state, saturated)
    out = tmp_path / "run"
    assert run(corpus_args(tiny_corpus) + SMALL + [
        "--pathCheckpoint", out, "--nEpoch", "1", "--load", saturated, "--on_collapse", "warn",
        "--logging_step", "5", "--collapse_patience", "2"]) == 0
    events = logs_of(out)["collapse_events"]
    assert events[0]["action"] == "warn" and events[0]["part"] == "context"
    assert events[0]["z_cos_across"] < 0.99 and events[0]["c_cos_across"] >= 0.99
    assert "context cosine across windows" in capsys.readouterr().err
