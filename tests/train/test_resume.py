"""Resuming with fewer or other flags: CPC_audio's restart form (``--pathCheckpoint R`` alone)
takes every saved flag; an omitted data flag keeps the run's value; a changed one is printed,
logged and applied; a changed validation set restarts the election of the best checkpoint; a
cut epoch whose plan changed starts again from its first batch. Each case on a corpus of a
few half-second files, whose epochs take a few batches."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cpc import run_config, train
from cpc.run_log import comparable_val_losses, truncate_logs
from cpc.utils import checkpoint as ckpt
from tests.conftest import write_tree
from tests.train.test_faults import StopAfter

ARCH = ["--hiddenEncoder", "16", "--hiddenGar", "16", "--nPredicts", "2",
        "--negativeSamplingExt", "4", "--sizeWindow", "3200", "--rnnMode", "linear",
        "--n_process_loader", "1", "--random_seed", "3", "--device", "cpu",
        "--warmup_steps", "0", "--save_step", "1"]


def run(argv) -> int:
    return train.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """3 speakers x 4 files of 0.5 s; train.txt: 3 files each, val.txt / val_b.txt: one
    file of speakers (0, 1) / (2,), short.txt: one file each."""
    root = tmp_path_factory.mktemp("resume") / "corpus"
    stems = write_tree(root, {str(s): [8000] * 4 for s in range(3)})
    (root / "train.txt").write_text("\n".join(stems[i] for i in range(12) if i % 4) + "\n")
    (root / "val.txt").write_text(f"{stems[0]}\n{stems[4]}\n")
    (root / "val_b.txt").write_text(f"{stems[8]}\n")
    (root / "short.txt").write_text(f"{stems[1]}\n{stems[5]}\n{stems[9]}\n")
    return root


def first_run_argv(corpus: Path, out: Path, **changes) -> list:
    """The first run's command line, with ``changes`` (flag: value) applied."""
    flags = {"pathDB": corpus, "pathTrain": corpus / "train.txt", "pathVal": corpus / "val.txt",
             "file_extension": ".flac", "batchSizeGPU": 4, "pathCheckpoint": out, "nEpoch": 1,
             **changes}
    return [word for flag, value in flags.items() for word in (f"--{flag}", value)] + ARCH


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    """A finished one-epoch run trained with split lists and --batchSizeGPU 4."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert run(first_run_argv(corpus, out)) == 0
    return out


@pytest.fixture
def copy(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def read(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


# ------------------------------------------------------------------- CPC_audio's restart form

def test_the_restart_form_takes_every_saved_flag(copy):
    """Old code: `--pathDB is required: the root directory of the corpus`."""
    saved = read(copy, ckpt.ARGS_FILE)
    args = run_config.resolve_run(["--pathCheckpoint", str(copy)]).args
    for dest, value in vars(args).items():
        if dest not in run_config.INVOCATION_OPTIONS and dest in saved:
            assert value == saved[dest], dest
    assert args.device == "auto"  # the machine is this invocation's, not the run's


def test_the_restart_form_runs(copy, capsys):
    """Old code: exit 2 with `--pathDB is required`."""
    assert run(["--pathCheckpoint", copy]) == 0
    assert "nothing to train: the run in" in capsys.readouterr().out


def test_the_restart_form_continues_a_cut_epoch_where_it_stopped(corpus, tmp_path, monkeypatch,
                                                                 capsys):
    out = tmp_path / "run"
    StopAfter.checks_before_stop = 2
    monkeypatch.setattr(train, "StopRequest", StopAfter)
    assert run(first_run_argv(corpus, out)) == 0
    monkeypatch.undo()
    cut = ckpt.load_checkpoint(ckpt.interrupted_checkpoint_path(out, 0))["interrupted"]
    capsys.readouterr()
    assert run(["--pathCheckpoint", out]) == 0
    captured = capsys.readouterr()
    assert f"at epoch 0 (after its batch {cut['batches_done']})" in captured.out
    assert "starts again" not in captured.err
    assert ckpt.list_checkpoints(out) and not ckpt.list_interrupted(out)


@pytest.mark.parametrize("mode", [["--only_classif_metric", "--speaker_sep"],
                                  ["--onlyCapture", "--captureEverything"]])
def test_read_only_modes_find_the_corpus_of_the_run(copy, tmp_path, mode):
    """Old code: `--pathDB is required`. They take where the corpus is, not what to measure."""
    extra = ["--pathCaptureDS", "x", "--pathCaptureSave", tmp_path / "cap"] \
        if "--onlyCapture" in mode else []
    args = run_config.resolve_run([str(a) for a in ["--pathCheckpoint", copy] + mode + extra]
                                  ).args
    assert args.pathDB == read(copy, ckpt.ARGS_FILE)["pathDB"]
    assert args.pathTrain is None and args.batchSizeGPU == 8


# --------------------------------------------------------------------------- partial resumes

def test_an_omitted_data_flag_keeps_the_saved_value(copy, corpus, capsys):
    """The issue's command (the other flags as before). Old code: pathTrain/pathVal null and
    the batch 8, silently, in checkpoint_args.json too."""
    before = read(copy, ckpt.ARGS_FILE)
    assert run(["--pathCheckpoint", copy, "--pathDB", corpus, "--nEpoch", "2"] + ARCH) == 0
    after, logs = read(copy, ckpt.ARGS_FILE), read(copy, ckpt.LOGS_FILE)
    ignored = run_config.INVOCATION_OPTIONS | {"nEpoch"}
    assert {k: v for k, v in after.items() if k not in ignored} == \
        {k: v for k, v in before.items() if k not in ignored}
    assert "option_changes" not in logs and logs["effective_batch"]["per_batch"] == 4
    assert "changed the validation set" not in capsys.readouterr().err


def test_a_changed_data_flag_is_printed_logged_and_applied(copy, corpus, capsys):
    """Old code: applied without a word, nothing in option_changes."""
    assert run(first_run_argv(corpus, copy, nEpoch=2, batchSizeGPU=2)) == 0
    captured = capsys.readouterr()
    assert "--batchSizeGPU 2 (the run had 4): applied from epoch 1" in captured.out
    logs = read(copy, ckpt.LOGS_FILE)
    assert logs["option_changes"] == [{"epoch": 1, "flag": "batchSizeGPU", "was": 4, "now": 2}]
    assert logs["effective_batch"]["per_batch"] == 2
    assert read(copy, ckpt.ARGS_FILE)["batchSizeGPU"] == 2
    # the negatives are drawn in the batch: the validation losses are another set's too
    assert "--batchSizeGPU changed the validation set" in captured.err


def test_a_config_file_gives_flags_as_the_command_line_does(copy, tmp_path):
    config = tmp_path / "resume.yaml"
    config.write_text("batchSizeGPU: 2\n")
    args = run_config.resolve_run(["--pathCheckpoint", str(copy), "--config", str(config)]).args
    assert args.batchSizeGPU == 2 and args.pathTrain == read(copy, ckpt.ARGS_FILE)["pathTrain"]


def test_the_same_path_spelt_otherwise_is_no_change(copy, corpus, capsys, monkeypatch):
    monkeypatch.chdir(corpus.parent)
    assert run(first_run_argv(corpus, copy, nEpoch=2, pathDB=f"./{corpus.name}/")) == 0
    assert "option_changes" not in read(copy, ckpt.LOGS_FILE)


# ----------------------------------------------------------------------- the best checkpoint

@pytest.mark.parametrize("val_list, new_best", [("val_b.txt", True), ("val.txt", False)])
def test_a_changed_validation_set_elects_the_best_checkpoint_anew(copy, corpus, capsys,
                                                                  val_list, new_best):
    """Epoch 0's validation loss is made unbeatable: only epochs on another set elect anew.
    Old code: best_epoch 0 whatever the set, without a word."""
    logs = read(copy, ckpt.LOGS_FILE)
    logs["loss_val"][0] = 0.0
    (copy / ckpt.LOGS_FILE).write_text(json.dumps(logs))
    assert run(first_run_argv(corpus, copy, nEpoch=2, pathVal=corpus / val_list)) == 0
    logs = read(copy, ckpt.LOGS_FILE)
    assert logs["best_epoch"] == (1 if new_best else 0)
    assert ("--pathVal changed the validation set: checkpoint_best.pt is elected anew among "
            "the epochs from 1 on" in capsys.readouterr().err) == new_best
    assert ckpt.load_checkpoint(ckpt.best_checkpoint_path(copy))["epoch"] == logs["best_epoch"]


def test_only_the_losses_of_the_current_validation_set_are_compared():
    logs = {"epoch": [0, 1, 2, 3], "loss_val": [1.0, 2.0, 3.0, 2.5], "best_from_epoch": 2,
            "best_epoch": 2}
    assert comparable_val_losses(logs) == [3.0, 2.5]
    # resumed from an epoch before the change: the set in use is still the new one
    assert truncate_logs(logs, 0)["best_from_epoch"] == 1
    assert truncate_logs(logs, 3)["best_from_epoch"] == 2


# ------------------------------------------------------------------------------ cut epochs

def test_a_cut_epoch_whose_plan_changed_starts_again(corpus, tmp_path, monkeypatch, capsys):
    """Cut after batch N of 9 (3 speakers x 3 files, 2 windows a batch), resumed on a 3-file
    list: old code passed over N batches of a shorter epoch and trained nothing, silently."""
    out = tmp_path / "run"
    StopAfter.checks_before_stop = 5
    monkeypatch.setattr(train, "StopRequest", StopAfter)
    assert run(first_run_argv(corpus, out, batchSizeGPU=2)) == 0
    monkeypatch.undo()
    cut_state = ckpt.load_checkpoint(ckpt.interrupted_checkpoint_path(out, 0))
    done = cut_state["interrupted"]["batches_done"]
    assert done >= 4
    capsys.readouterr()
    assert run(first_run_argv(corpus, out, batchSizeGPU=2, pathTrain=corpus / "short.txt")) == 0
    err = capsys.readouterr().err
    assert f"warning: epoch 0 was cut after its batch {done}, but its plan has changed" in err
    assert "it starts again from its first batch" in err
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(out, 0))
    assert state["global_step"] > cut_state["global_step"]  # the new epoch was trained
