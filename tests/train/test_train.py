"""train.py end to end on the built-in corpus: learning, run files, resume, refusals."""
from __future__ import annotations

import json

import pytest
import torch

from cpc import train
from cpc.utils import checkpoint as ckpt

SMALL = ["--hiddenEncoder", "32", "--hiddenGar", "32", "--nPredicts", "3",
         "--negativeSamplingExt", "8", "--sizeWindow", "3200", "--batchSizeGPU", "8",
         "--rnnMode", "linear", "--n_process_loader", "2", "--random_seed", "7",
         "--learningRate", "2e-3", "--device", "cpu"]


def corpus_args(root) -> list[str]:
    return ["--pathDB", str(root), "--pathTrain", str(root / "train_split.txt"),
            "--pathVal", str(root / "val_split.txt"), "--file_extension", ".flac"]


def run(argv) -> int:
    return train.main([str(a) for a in argv])


def test_two_epochs_lower_the_loss_and_write_run_files(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    assert run(corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out, "--nEpoch", "4",
                                                   "--save_step", "2"]) == 0
    logs = json.loads((out / "checkpoint_logs.json").read_text())
    assert logs["epoch"] == [0, 1, 2, 3]
    for key in ("locLoss_train", "locAcc_train", "locLoss_val", "locAcc_val"):
        assert len(logs[key]) == 4 and all(len(v) == 3 for v in logs[key])
    first, last = logs["loss_train"][0], logs["loss_train"][-1]
    assert last < first - 0.1
    assert [e for e, _ in ckpt.list_checkpoints(out)] == [1, 3]
    saved = json.loads((out / "checkpoint_args.json").read_text())
    assert saved["hiddenEncoder"] == 32 and saved["random_seed"] == 7
    state = ckpt.load_checkpoint(out / "checkpoint_3.pt")
    assert {"gEncoder", "cpcCriterion", "optimizer", "scheduler", "epoch", "global_step"} <= set(state)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_continues_at_the_next_epoch(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    base = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out, "--save_step", "1"]
    assert run(base + ["--nEpoch", "1"]) == 0
    before = ckpt.load_checkpoint(out / "checkpoint_0.pt")
    capsys.readouterr()
    assert run(base + ["--nEpoch", "2"]) == 0
    assert "resuming" in capsys.readouterr().out
    logs = json.loads((out / "checkpoint_logs.json").read_text())
    assert logs["epoch"] == [0, 1]
    after = ckpt.load_checkpoint(out / "checkpoint_1.pt")
    assert after["epoch"] == 1
    # Adam's step counter continued from the saved optimizer state
    step_before = next(iter(before["optimizer"]["state"].values()))["step"]
    step_after = next(iter(after["optimizer"]["state"].values()))["step"]
    assert step_after == 2 * step_before


def test_uninterrupted_equals_resumed(tiny_corpus, tmp_path):
    common = corpus_args(tiny_corpus) + SMALL + ["--save_step", "1", "--deterministic"]
    assert run(common + ["--pathCheckpoint", tmp_path / "a", "--nEpoch", "2"]) == 0
    assert run(common + ["--pathCheckpoint", tmp_path / "b", "--nEpoch", "1"]) == 0
    assert run(common + ["--pathCheckpoint", tmp_path / "b", "--nEpoch", "2"]) == 0
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoint_1.pt")["gEncoder"]
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoint_1.pt")["gEncoder"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-6)


def test_contradicting_architecture_flag_is_refused(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    base = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out]
    assert run(base + ["--nEpoch", "1"]) == 0
    capsys.readouterr()
    assert run([a if a != "32" else "64" for a in base] + ["--nEpoch", "2"]) == 2
    err = capsys.readouterr().err
    assert "--hiddenEncoder 64 contradicts" in err and "hiddenEncoder 32" in err
    # run-time flags may change; architecture flags not given come from the saved args
    short = corpus_args(tiny_corpus) + ["--pathCheckpoint", out, "--nEpoch", "2",
                                        "--n_process_loader", "1", "--device", "cpu"]
    assert run(short) == 0
    assert ckpt.load_checkpoint(out / "checkpoint_1.pt")["epoch"] == 1


def test_restart_starts_over(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    base = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out, "--save_step", "1"]
    assert run(base + ["--nEpoch", "2"]) == 0
    assert run(base + ["--nEpoch", "1", "--restart"]) == 0
    assert [e for e, _ in ckpt.list_checkpoints(out)] == [0]
    assert json.loads((out / "checkpoint_logs.json").read_text())["epoch"] == [0]


@pytest.mark.parametrize("flags, message", [
    (["--nPredicts", "40"], "--nPredicts 40 must be smaller"),
    (["--sizeWindow", "3000"], "--sizeWindow 3000 must be a positive multiple of 160"),
])
def test_bad_flags_are_one_line_errors(tiny_corpus, tmp_path, capsys, flags, message):
    assert run(corpus_args(tiny_corpus) + SMALL + flags + ["--nEpoch", "1", "--pathCheckpoint",
                                                         tmp_path / "run"]) == 2
    assert message in capsys.readouterr().err


def test_missing_pathdb_is_an_error(capsys):
    assert run(["--nEpoch", "1"]) == 2
    assert "--pathDB is required" in capsys.readouterr().err


def test_criterion_flag_selects_a_registered_criterion_and_cpcctc_is_its_alias():
    import argparse

    from cpc.criterion.options import criterion_name
    from cpc.run_config import parse_args
    from cpc.utils.errors import ConfigError
    assert criterion_name(parse_args(["--pathDB", "x"])[0]) == "cpc"
    assert criterion_name(parse_args(["--pathDB", "x", "--CPCCTC"])[0]) == "cpcctc"
    assert criterion_name(parse_args(["--pathDB", "x", "--criterion", "cpcctc"])[0]) == "cpcctc"
    with pytest.raises(ConfigError, match="contradicts --criterion apc"):
        criterion_name(argparse.Namespace(supervised=False, CPCCTC=True, criterion="apc"))


def test_logs_hold_wall_times_learning_rates_and_the_best_checkpoint(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out, "--nEpoch", "3",
                                               "--save_step", "1", "--keep_checkpoints", "1"]
    assert run(argv) == 0
    logs = json.loads((out / "checkpoint_logs.json").read_text())
    assert len(logs["epoch_seconds"]) == 3 and all(s > 0 for s in logs["epoch_seconds"])
    assert logs["total_seconds"] == pytest.approx(sum(logs["epoch_seconds"]))
    assert all(e >= t for e, t in zip(logs["epoch_seconds"], logs["train_seconds"]))
    assert len(logs["lr_model"]) == 3 and logs["lr_model"][0] > 0
    best = min(range(3), key=lambda e: logs["loss_val"][e])
    assert logs["best_epoch"] == best
    assert [e for e, _ in ckpt.list_checkpoints(out)] == [2]  # the rotation spares the best
    state = ckpt.load_checkpoint(out / "checkpoint_best.pt")
    assert state["epoch"] == best
