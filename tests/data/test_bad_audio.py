"""NaN, infinite and out-of-range float audio, and files at wrong rates, in training: each is
named by file before training starts (or, for a loss made non-finite by loud audio, in the
message that stops the run); ``--bad_audio skip`` leaves NaN/inf files out with a warning; a
non-finite validation loss is reported, never averaged away."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cpc import train
from cpc.audio_check import NonFinite, find_non_finite, screen_files
from cpc.criterion.base import CriterionOutput
from cpc.data.plan import Pack, window_seq_ids
from cpc.data.audio import read_audio
from cpc.data.listing import findAllSeqs
from cpc.data.splits import read_split_list
from cpc.utils.errors import DataError
from cpc.trainer import EpochTotals
from cpc.utils import checkpoint as ckpt
from tests.conftest import ramp_signal, write_tree

TINY = ["--hiddenEncoder", "32", "--hiddenGar", "32", "--nPredicts", "3",
        "--negativeSamplingExt", "8", "--sizeWindow", "3200", "--batchSizeGPU", "8",
        "--rnnMode", "linear", "--n_process_loader", "2", "--random_seed", "7",
        "--device", "cpu", "--nEpoch", "1"]


def float_corpus(tiny_corpus: Path, root: Path, n_train: int = 2, n_val: int = 2) -> Path:
    """A few tiny-corpus files as 32-bit float WAV (the only kind that can hold NaN), with
    split lists of ``n_train`` and ``n_val`` of them, drawn evenly from the corpus's split
    lists (which list each speaker's files together), so that they span its speakers."""
    def spread(part: str, count: int) -> list[str]:
        stems = read_split_list(tiny_corpus / f"{part}_split.txt")
        return stems[::max(1, len(stems) // count)][:count]
    parts = {"train": spread("train", n_train), "val": spread("val", n_val)}
    for part, stems in parts.items():
        for stem in stems:
            source = next(tiny_corpus.rglob(f"{stem}.flac"))
            target = root / source.relative_to(tiny_corpus).with_suffix(".wav")
            target.parent.mkdir(parents=True, exist_ok=True)
            sf.write(target, sf.read(source, dtype="float32")[0], 16000, subtype="FLOAT")
        (root / f"{part}_split.txt").write_text("".join(f"{s}\n" for s in stems))
    return root


def split_file(root: Path, part: str, index: int) -> Path:
    stem = read_split_list(root / f"{part}_split.txt")[index]
    return next(root.rglob(f"{stem}.wav"))


def damage(path: Path, nan_at: tuple[int, ...] = (), inf_at: tuple[int, ...] = (),
           scale: float = 1.0) -> None:
    samples = sf.read(path, dtype="float32")[0] * np.float32(scale)
    samples[list(nan_at)] = np.nan
    samples[list(inf_at)] = -np.inf
    sf.write(path, samples, 16000, subtype="FLOAT")


def corpus_args(root: Path) -> list[str]:
    return ["--pathDB", str(root), "--pathTrain", str(root / "train_split.txt"),
            "--pathVal", str(root / "val_split.txt"), "--file_extension", ".wav"]


def run(argv: list) -> int:
    try:
        return train.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse (an unknown flag, on the code before --bad_audio)
        return exc.code


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------------------------
# The shared check
# --------------------------------------------------------------------------------------------

def test_find_non_finite_counts_nan_and_inf_and_finds_the_first():
    samples = np.zeros((100, 2), np.float32)
    samples[[40, 70], 0] = np.nan
    samples[30, 1] = np.inf
    assert find_non_finite(samples) == NonFinite(n_nan=2, n_inf=1, first=30)
    assert find_non_finite(np.ones(10, np.float32)) is None


def test_read_audio_refuses_nan_naming_the_file(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, ramp_signal(0, 1000), 16000, subtype="FLOAT")
    damage(path, nan_at=(345, 500), inf_at=(600,))
    with pytest.raises(DataError) as raised:
        read_audio(path)
    assert str(raised.value) == (f"{path} holds 2 NaN / 1 infinite samples (first at sample "
                                 f"345): repair or drop the file, or pass --bad_audio skip")


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def test_training_refuses_nan_and_inf_audio_naming_every_file(tiny_corpus, tmp_path, capsys):
    root = float_corpus(tiny_corpus, tmp_path / "db")
    nan_file, inf_file = split_file(root, "train", 0), split_file(root, "val", 1)
    damage(nan_file, nan_at=tuple(range(345, 357)))
    damage(inf_file, inf_at=(9,))
    run_dir = tmp_path / "run"
    assert run(TINY + corpus_args(root) + ["--pathCheckpoint", run_dir]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"{nan_file} holds 12 NaN / 0 infinite samples (first at sample 345)" in line
    assert f"{inf_file} holds 0 NaN / 1 infinite samples (first at sample 9)" in line
    assert "--bad_audio skip" in line
    assert not ckpt.list_checkpoints(run_dir)


def test_bad_audio_skip_leaves_each_file_out_with_a_warning(tiny_corpus, tmp_path, capsys):
    root = float_corpus(tiny_corpus, tmp_path / "db", n_train=3)
    nan_file, inf_file = split_file(root, "train", 0), split_file(root, "val", 1)
    damage(nan_file, nan_at=(100,))
    damage(inf_file, inf_at=(5,))
    run_dir = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = run(TINY + corpus_args(root) + ["--pathCheckpoint", run_dir,
                                               "--bad_audio", "skip"])
    out, err = capsys.readouterr()
    shown = [str(w.message) for w in caught]
    assert code == 0, err
    for path in (nan_file, inf_file):
        assert [m for m in shown if m.startswith(f"skipping {path}: it holds")], shown
    assert "train: 2 files" in out and "val:   1 files" in out
    logs = ckpt.read_json(run_dir / ckpt.LOGS_FILE)
    assert np.isfinite(logs["loss_val"]).all() and logs["best_epoch"] == 0


def test_non_finite_validation_loss_is_reported_not_averaged_away(tiny_corpus, tmp_path,
                                                                  capsys):
    # finite samples far beyond [-1, 1] overflow the encoder: that file's windows lose NaN
    root = float_corpus(tiny_corpus, tmp_path / "db")
    loud = split_file(root, "val", 0)
    damage(loud, scale=3e38)
    run_dir = tmp_path / "run"
    assert run(TINY + corpus_args(root) + ["--pathCheckpoint", run_dir]) == 0
    err = capsys.readouterr().err
    logs = ckpt.read_json(run_dir / ckpt.LOGS_FILE)
    assert np.isnan(logs["loss_val"]).all(), logs["loss_val"]
    warning = next(line for line in err.splitlines() if line.startswith("warning: epoch 0 val"))
    assert "4 batch(es) have a non-finite loss" in warning and str(loud) in warning
    assert f"{loud} reaches " in warning and "e+38, beyond the [-1, 1]" in warning
    assert "no epoch had a finite validation loss" in err
    assert "best_epoch" not in logs and not (run_dir / "checkpoint_best.pt").exists()
    assert ckpt.list_checkpoints(run_dir)  # the epoch's checkpoint is still written


def test_non_finite_training_loss_names_the_files_of_its_batch(tiny_corpus, tmp_path, capsys):
    root = float_corpus(tiny_corpus, tmp_path / "db", n_val=1)
    loud = split_file(root, "train", 0)
    damage(loud, scale=3e38)
    assert run(TINY + corpus_args(root) + ["--pathCheckpoint", tmp_path / "run"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "non-finite loss at epoch 0 train" in line and f"reading {loud}" in line
    assert f"{loud} reaches " in line and "the audio may be at fault" in line


def test_epoch_totals_keep_a_nan_loss():
    totals = EpochTotals()
    for loss in (1.0, float("nan"), 3.0):
        totals.add_batch(CriterionOutput(torch.tensor(loss), torch.tensor([loss, float("nan")]),
                                         torch.tensor([0.5, 0.5])), size=4, n_samples=400)
    stats = totals.stats(batches_done=3, cut=False)
    assert np.isnan(stats.loss) and stats.nonfinite_batches == 1
    assert stats.step_losses[0] == pytest.approx(2.0)  # a step undefined for a batch: left out


def test_window_seq_ids_names_every_file_a_window_spans():
    pack = Pack(seq_ids=np.array([7, 3, 5]), seq_starts=np.array([0, 100, 150, 400]),
                seq_speakers=np.array([0, 0, 1]))
    assert window_seq_ids(pack, [0], 100) == [7]
    assert window_seq_ids(pack, [50], 120) == [3, 5, 7]  # samples 50-169 cross two boundaries
    assert window_seq_ids(pack, [150, 200], 100) == [5]


# --------------------------------------------------------------------------------------------
# Files at a wrong rate: every one is named
# --------------------------------------------------------------------------------------------

def test_listing_names_every_file_at_a_wrong_rate(tmp_path):
    write_tree(tmp_path, {"100": [3200, 3200, 3200], "200": [3200, 3200]})
    files = sorted(tmp_path.rglob("*.flac"))
    for path, rate in zip(files[:3], (8000, 22050, 44100)):
        sf.write(path, ramp_signal(0, 3200), rate, subtype="PCM_16", format="FLAC")
    with pytest.raises(DataError) as raised:
        findAllSeqs(tmp_path, ".flac")
    message = str(raised.value)
    for path, rate in zip(files[:3], (8000, 22050, 44100)):
        assert f"{path} ({rate} Hz)" in message
    assert message.startswith("3 files are not sampled at 16000 Hz")


def test_screen_files_names_every_wrong_rate_and_applies_bad_audio(tmp_path):
    paths = [tmp_path / f"u{i}.wav" for i in range(8)]
    for i, path in enumerate(paths):
        sf.write(path, ramp_signal(i, 1600), 8000 if i < 7 else 16000, subtype="PCM_16")
    with pytest.raises(DataError, match=r"^7 files are not sampled.*; and 2 more; expected"):
        screen_files(paths, "refuse")
    for i, path in enumerate(paths):
        sf.write(path, ramp_signal(i, 1600), 16000, subtype="FLOAT")
    damage(paths[2], nan_at=(7,))
    with pytest.raises(DataError, match=f"^{paths[2]} holds 1 NaN"):
        screen_files(paths, "refuse")
    with pytest.warns(UserWarning, match=f"skipping {paths[2]}"):
        assert screen_files(paths, "skip") == paths[:2] + paths[3:]
