"""Nothing lost, nothing silent: the reliability defects found by attacking train.py's command
line, each reproduced on the tiny corpus. A user error is one ``error:`` line naming the flag or
file and exit status 2, with the run directory untouched."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from cpc import run_config, train
from cpc.utils import checkpoint as ckpt
from cpc.utils.files import exclusive_lock
from tests.train.test_train import SMALL, corpus_args

REPO = Path(__file__).resolve().parents[2]


def run(argv) -> int:
    return train.main([str(a) for a in argv])


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory) -> list:
    """A finished one-epoch run; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("trained") / "run"
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out, "--nEpoch", "1",
                                               "--save_step", "1"]
    assert run(argv) == 0
    return argv


def copy_run(trained: list, tmp_path: Path) -> tuple[list, Path]:
    source = Path(trained[trained.index("--pathCheckpoint") + 1])
    out = Path(shutil.copytree(source, tmp_path / "run"))
    argv = list(trained)
    argv[argv.index("--pathCheckpoint") + 1] = out
    return argv, out


def one_line_error(capsys, *expected: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for text in expected:
        assert text in err, err
    return err


# ------------------------------------------------------------------------ data loss, records

@pytest.mark.parametrize("mode", [["--onlyCapture", "--captureEverything", "--pathCaptureDS",
                                   "{val}", "--pathCaptureSave", "{tmp}/cap"],
                                  ["--only_classif_metric", "--speaker_sep"]])
def test_restart_with_a_read_only_mode_is_refused_and_deletes_nothing(
        trained, tiny_corpus, tmp_path, capsys, mode):
    argv, out = copy_run(trained, tmp_path)
    before = snapshot(out)
    mode = [m.format(val=tiny_corpus / "val_split.txt", tmp=tmp_path) for m in mode]
    assert run(argv + mode + ["--restart"]) == 2
    one_line_error(capsys, "drop --restart")
    assert snapshot(out) == before


def test_restart_deletes_nothing_when_the_data_is_bad(trained, tmp_path, capsys):
    argv, out = copy_run(trained, tmp_path)
    before = snapshot(out)
    argv[argv.index("--pathDB") + 1] = tmp_path / "no_corpus"
    assert run(argv + ["--restart"]) == 2
    one_line_error(capsys, "no_corpus")
    assert snapshot(out) == before


def test_restart_removes_the_old_curves_and_probe_logs(trained, tmp_path):
    argv, out = copy_run(trained, tmp_path)
    (out / "linsep_logs" / "0").mkdir(parents=True)
    old_events = set((out / "tensorboard").iterdir())
    assert old_events
    assert run(argv + ["--restart"]) == 0
    assert not (out / "linsep_logs").exists()
    assert not old_events & set((out / "tensorboard").iterdir())


def test_rerunning_a_finished_run_writes_nothing_new(trained, tmp_path, capsys):
    argv, out = copy_run(trained, tmp_path)
    events = sorted((out / "tensorboard").iterdir())
    assert run(argv) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert sorted((out / "tensorboard").iterdir()) == events


def test_a_changed_learning_rate_on_resume_is_applied_and_logged(trained, tmp_path, capsys):
    argv, out = copy_run(trained, tmp_path)
    argv[argv.index("--learningRate") + 1] = "1e-3"  # SMALL trains with 2e-3
    assert run(argv + ["--nEpoch", "2", "--warmup_steps", "0"]) == 0
    assert "--learningRate 0.001 (the run had 0.002): applied from epoch 1" in \
        capsys.readouterr().out
    state = ckpt.load_checkpoint(out / "checkpoint_1.pt")
    assert state["scheduler"]["base_lrs"] == [pytest.approx(1e-3)]
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    logs = json.loads((out / "checkpoint_logs.json").read_text())
    assert logs["option_changes"] == [{"epoch": 1, "flag": "learningRate", "was": 0.002,
                                       "now": 0.001}]
    assert json.loads((out / "checkpoint_args.json").read_text())["learningRate"] == 1e-3


def test_run_files_follow_the_umask(tiny_corpus, tmp_path):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert run(corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out,
                                                       "--nEpoch", "1"]) == 0
    finally:
        os.umask(previous)
    for name in ("checkpoint_0.pt", "checkpoint_args.json", "checkpoint_logs.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def test_a_second_training_on_a_run_directory_in_use_is_refused(trained, tmp_path, capsys):
    argv, out = copy_run(trained, tmp_path)
    with exclusive_lock(out, "training"):
        assert run(argv + ["--nEpoch", "2"]) == 2
    one_line_error(capsys, f"{out} is in use by process {os.getpid()}")
    assert [e for e, _ in ckpt.list_checkpoints(out)] == [0]


def test_training_without_a_run_directory_is_refused(tiny_corpus, capsys):
    assert run(corpus_args(tiny_corpus) + SMALL + ["--nEpoch", "1"]) == 2
    one_line_error(capsys, "--pathCheckpoint is required to train")


# ------------------------------------------------------------------ one line, not a traceback

def test_load_of_another_architecture_is_one_line(trained, tiny_corpus, tmp_path, capsys):
    source = Path(trained[trained.index("--pathCheckpoint") + 1])
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "new",
                                               "--nEpoch", "1", "--hiddenGar", "48",
                                               "--load", source / "checkpoint_0.pt"]
    assert run(argv) == 2
    one_line_error(capsys, "--load", "checkpoint_0.pt", "do not fit", "size mismatch")


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "checkpoint_args.json", "is not a readable checkpoint"),
    (lambda d: d / "missing.pt", "--load {path}: no such file or directory"),
    (lambda d: d / "tensorboard", "holds no checkpoint_<N>.pt"),
])
def test_load_of_something_else_is_one_line(trained, tiny_corpus, tmp_path, capsys, make,
                                            expected):
    path = make(Path(trained[trained.index("--pathCheckpoint") + 1]))
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "new",
                                               "--nEpoch", "1", "--load", path]
    assert run(argv) == 2
    one_line_error(capsys, expected.format(path=path))


def test_a_checkpoint_of_a_newer_format_is_one_line(trained, tmp_path, capsys):
    argv, out = copy_run(trained, tmp_path)
    state = ckpt.load_checkpoint(out / "checkpoint_0.pt")
    torch.save({**state, "format_version": ckpt.FORMAT_VERSION + 1}, out / "checkpoint_0.pt")
    assert run(argv + ["--nEpoch", "2"]) == 2
    assert "newer than the 1 this code reads" in capsys.readouterr().err


def test_a_full_disk_during_a_checkpoint_write_names_the_file(tiny_corpus, tmp_path, capsys,
                                                              monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    import cpc.utils.files as files
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):  # checkpoints go to a device that is full
        path = os.readlink(f"/proc/self/fd/{fd}")
        if ".checkpoint_0.pt." in path:
            os.close(fd)
            return open("/dev/full", mode)
        return real_fdopen(fd, mode, *args, **kwargs)
    monkeypatch.setattr(files.os, "fdopen", fdopen)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0))
    out = tmp_path / "run"
    assert run(corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out,
                                                   "--nEpoch", "1"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
    assert last.startswith("error: no space left on device while writing") and \
        last.split()[8] == str(out / "checkpoint_0.pt")
    assert not list(out.glob(".*.tmp")) and not ckpt.list_checkpoints(out)


@pytest.mark.parametrize("flags, message", [
    (["--learningRate", "nan"], "--learningRate must be a finite number > 0; got nan"),
    (["--beta1", "1"], "--beta1 must be a finite number >= 0 and < 1; got 1.0"),
    (["--nEpoch", "0"], "--nEpoch must be a finite number >= 1; got 0"),
    (["--save_step", "0"], "--save_step must be a finite number >= 1; got 0"),
    (["--sizeWindow", "20001"], "--sizeWindow 20001 must be a positive multiple of 160"),
    (["--path_phone_data", "x", "--CTCphones", "--phone_get_encoded"],
     "--phone_get_encoded cannot be combined with --CTCphones"),
    (["--nGPU", "2"], "torchrun --standalone --nproc_per_node 2 cpc/train.py"),
    (["--speakerEmbedding", "4"], "--speakerEmbedding: speaker embeddings"),
])
def test_bad_numbers_and_combinations_are_one_line(tiny_corpus, tmp_path, capsys, flags,
                                                   message):
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "run"] + flags
    assert run(argv) == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "run" / "checkpoint_args.json").exists()


def test_nan_before_the_first_checkpoint_does_not_promise_a_resume(tiny_corpus, tmp_path,
                                                                    capsys, monkeypatch):
    from cpc.criterion.objective import CriterionObjective
    original = CriterionObjective.__call__

    def nan_loss(self, *args):
        out = original(self, *args)
        out.loss = out.loss * float("nan")
        return out
    monkeypatch.setattr(CriterionObjective, "__call__", nan_loss)
    assert run(corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "run",
                                                   "--nEpoch", "1"]) == 2
    err = capsys.readouterr().err
    assert "before any checkpoint was written: start again with a lower --learningRate" in err
    assert "none yet" not in err and "resume from it" not in err


# --------------------------------------------------------------------------- silent acceptance

def test_abbreviated_and_misspelt_flags_are_refused_with_a_suggestion(capsys):
    for flag in ("--hiddenEnc", "--hidenEncoder"):
        with pytest.raises(SystemExit) as exit_:
            run_config.parse_args(["--pathDB", "x", flag, "48"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"unrecognized arguments: {flag} (did you mean --hiddenEncoder?)" in err
        assert len(err.strip().splitlines()) == 2  # the error and where options are listed


def test_a_misspelt_yaml_key_names_the_near_match(tiny_corpus, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("hiddenEncodr: 32\n")
    assert run(corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "run",
                                                   "--config", config]) == 2
    err = one_line_error(capsys, "unknown key(s) hiddenEncodr (did you mean hiddenEncoder?)")
    assert "nEpoch" not in err  # not the ~110 valid keys


def test_yaml_save_step_key_works_and_a_config_keeps_the_save_step_default(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("save_step: 3\n")
    assert run_config.parse_args(["--pathDB", "x", "--config", str(config)])[0].save_step == 3
    config.write_text("nEpoch: 3\n")
    assert run_config.parse_args(["--pathDB", "x", "--config", str(config)])[0].save_step == 5


def test_audio_too_short_for_a_window_is_reported(tiny_corpus, tmp_path, capsys):
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "run",
                                               "--nEpoch", "1", "--samplingType", "samesequence",
                                               "--sizeWindow", "64000"]
    assert run(argv) == 0
    err = capsys.readouterr().err
    assert "files (" in err and "s of audio) are shorter than one --sizeWindow 64000" in err


def test_pase_recipe_refuses_the_cpc_learning_rate_flags(tiny_corpus, tmp_path, capsys):
    argv = corpus_args(tiny_corpus) + ["--config", REPO / "configs" / "pase.yaml",
                                       "--pathCheckpoint", tmp_path / "run",
                                       "--learningRate", "1e-3"]
    assert run(argv) == 2
    one_line_error(capsys, "--learningRate: a PASE workers recipe", "encoder_lr_start")


def test_worker_learning_rates_without_workers_are_refused(tiny_corpus, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("encoder_lr_start: 0.001\n")
    argv = corpus_args(tiny_corpus) + SMALL + ["--config", config,
                                               "--pathCheckpoint", tmp_path / "run"]
    assert run(argv) == 2
    one_line_error(capsys, "encoder_lr_start set(s) the learning rates of a PASE workers run")


def test_capture_during_a_pase_run(tiny_corpus, tmp_path, two_threads):
    config = tmp_path / "tiny_pase.yaml"
    config.write_text("encoder_type: pase\nhiddenEncoder: 16\narMode: no_ar\nchunk_size: 3200\n"
                      "samplingType: uniform\nbatchSizeGPU: 8\n"
                      "workers_config:\n  regressor:\n    mfcc: {hidden_size: 16}\n")
    argv = corpus_args(tiny_corpus) + ["--config", config, "--pathCheckpoint", tmp_path / "run",
                                       "--nEpoch", "1", "--n_process_loader", "2",
                                       "--pase_stats_batches", "2", "--device", "cpu",
                                       "--pathCaptureDS", tiny_corpus / "val_split.txt",
                                       "--pathCaptureSave", tmp_path / "cap",
                                       "--captureEachEpochs", "1", "--captureEverything"]
    assert run(argv) == 0
    assert (tmp_path / "cap" / "0" / "sequences.json").is_file()
    assert list((tmp_path / "cap" / "0" / "ctx_repr").glob("*.pt"))


def test_cpc_audio_flags_parse(tiny_corpus, tmp_path):
    args = run_config.parse_args(["--pathDB", "x", "--nGPU", "0", "--pathPhone", "p.txt",
                             "--nLevelsPhone", "1", "--CTC", "--onEncoder"])[0]
    assert args.path_phone_data == "p.txt" and run_config.device_name(args) == "cpu"
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "run",
                                               "--nEpoch", "1", "--nGPU", "0"]
    argv.remove("--device")
    argv.remove("cpu")
    assert run(argv) == 0


# ------------------------------------------------------------------------- more bad inputs

def test_duplicate_stems_in_a_split_list_are_reported(tiny_corpus, tmp_path):
    split = tmp_path / "train.txt"
    stems = (tiny_corpus / "train_split.txt").read_text().split()
    split.write_text("\n".join(stems + stems[:2]) + "\n")
    from cpc.data.listing import findAllSeqs
    from cpc.data.splits import filterSeqs
    seqs, _ = findAllSeqs(tiny_corpus, ".flac")
    with pytest.warns(UserWarning, match="lists 2 stem\\(s\\) more than once"):
        kept = filterSeqs(split, seqs)
    assert len(kept) == len(stems)


def test_train_and_validation_overlap_is_reported(tiny_corpus, tmp_path):
    from cpc.data.corpus import build_datasets
    val = tmp_path / "val.txt"
    val.write_text((tiny_corpus / "train_split.txt").read_text().split()[0] + "\n")
    with pytest.warns(UserWarning, match="1 file\\(s\\) are in both"):
        data = build_datasets(tiny_corpus, ".flac", str(tiny_corpus / "train_split.txt"),
                              str(val), None, 3200, n_process_loader=2)
    data.close()


def test_phone_labels_with_crlf_line_ends_read_like_lf(tiny_corpus, tmp_path):
    from cpc.data.labels import parseSeqLabels
    text = (tiny_corpus / "converted_aligned_phones.txt").read_text()
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    a, n_a = parseSeqLabels(tiny_corpus / "converted_aligned_phones.txt")
    b, n_b = parseSeqLabels(crlf)
    assert n_a == n_b and a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)


def test_a_file_labelled_twice_is_an_error(tiny_corpus, tmp_path):
    from cpc.data.labels import parseSeqLabels
    from cpc.utils.errors import DataError
    lines = (tiny_corpus / "converted_aligned_phones.txt").read_text().splitlines()
    twice = tmp_path / "twice.txt"
    twice.write_text("\n".join(lines + lines[:1]) + "\n")
    with pytest.raises(DataError, match=f"{lines[0].split()[0]} is labelled twice"):
        parseSeqLabels(twice)


def test_a_run_directory_that_is_a_file_is_one_line(tiny_corpus, tmp_path, capsys):
    target = tmp_path / "run"
    target.write_text("not a directory\n")
    assert run(corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", target]) == 2
    one_line_error(capsys, f"--pathCheckpoint {target} is a file, not a directory")


def test_sigterm_during_the_probes_ends_the_run_at_the_next_step(tiny_corpus, tmp_path,
                                                                 monkeypatch, capsys):
    import signal

    from cpc import hooks
    real_probe = hooks.probe_model

    def probe_then_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the probes run
        return real_probe(*args, **kwargs)
    monkeypatch.setattr(hooks, "probe_model", probe_then_sigterm)
    out = tmp_path / "run"
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out, "--nEpoch", "3",
                                               "--save_step", "1", "--supervised_classif_metric",
                                               "--speaker_sep", "--linsep_classif_each_epochs",
                                               "1", "--linsep_n_epoch", "1"]
    assert run(argv) == 0
    printed = capsys.readouterr().out
    assert "linear separability after epoch 0" in printed  # the probes finished
    assert "SIGTERM: stopped in epoch 1 after 1 batches" in printed
    assert [e for e, _ in ckpt.list_checkpoints(out)] == [0]
    logs = json.loads((out / "checkpoint_logs.json").read_text())
    assert logs["linsep_epoch"] == [0] and logs["epoch"] == [0]
    monkeypatch.undo()
    assert run(argv) == 0  # the rerun continues and finishes
    assert [e for e, _ in ckpt.list_checkpoints(out)] == [0, 1, 2]
