"""Bad input to train.py: one clear ``error:`` line naming the culprit, exit status 2, nothing
half-written; and the inputs that are documented as warnings (stereo, some labels missing, a file
shorter than a window) train with the warning shown."""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cpc import train
from cpc.utils import checkpoint as ckpt
from tests.conftest import ramp_signal, write_tree

TINY = ["--hiddenEncoder", "32", "--hiddenGar", "32", "--nPredicts", "3",
        "--negativeSamplingExt", "8", "--sizeWindow", "3200", "--batchSizeGPU", "8",
        "--rnnMode", "linear", "--n_process_loader", "2", "--random_seed", "7",
        "--device", "cpu", "--nEpoch", "1"]
LABELS = "converted_aligned_phones.txt"


def corpus_args(root: Path) -> list[str]:
    return ["--pathDB", str(root), "--pathTrain", str(root / "train_split.txt"),
            "--pathVal", str(root / "val_split.txt"), "--file_extension", ".flac"]


def copy_corpus(tiny_corpus: Path, tmp_path: Path) -> Path:
    """A private copy of the session corpus, free to damage."""
    return Path(shutil.copytree(tiny_corpus, tmp_path / "corpus"))


def first_train_file(root: Path) -> Path:
    stem = (root / "train_split.txt").read_text().split()[0]
    return next(root.rglob(f"{stem}.flac"))


def read_labels(root: Path) -> dict[str, list[str]]:
    lines = (root / LABELS).read_text().splitlines()
    return {line.split()[0]: line.split()[1:] for line in lines if line.strip()}


def write_labels(path: Path, labels: dict[str, list[str]]) -> Path:
    path.write_text("".join(f"{stem} {' '.join(ids)}\n" for stem, ids in labels.items()))
    return path


# --------------------------------------------------------------------------------------------
# Error cases: each prepare(tiny_corpus, tmp_path, run_dir) -> (extra argv, culprit strings).
# The argv comes after TINY, so its flags override TINY's.
# --------------------------------------------------------------------------------------------

def corrupt_audio(corpus, tmp, run_dir):
    root = copy_corpus(corpus, tmp)
    bad = first_train_file(root)
    bad.write_bytes(b"this is not a flac file \x00\xff\x13" * 64)
    return corpus_args(root), [bad.name]


def empty_file(corpus, tmp, run_dir):
    root = copy_corpus(corpus, tmp)
    bad = first_train_file(root)
    bad.write_bytes(b"")
    return corpus_args(root), [bad.name]


def rate_8khz(corpus, tmp, run_dir):
    root = copy_corpus(corpus, tmp)
    bad = first_train_file(root)
    sf.write(bad, ramp_signal(0, 8000), 8000, subtype="PCM_16", format="FLAC")
    return corpus_args(root), [bad.name, "8000"]


def labels_missing_for_all(corpus, tmp, run_dir):
    labels = write_labels(tmp / "other_labels.txt",
                          {f"nosuch-0-{i:04d}": ["0"] * 50 for i in range(3)})
    return corpus_args(corpus) + ["--path_phone_data", str(labels)], [labels.name]


def label_length_mismatch(corpus, tmp, run_dir):
    labels = read_labels(corpus)
    stem = (corpus / "train_split.txt").read_text().split()[0]
    labels[stem] = labels[stem][:-5]  # five frames short: beyond the one-frame tolerance
    path = write_labels(tmp / "short_labels.txt", labels)
    return corpus_args(corpus) + ["--path_phone_data", str(path)], [stem]


def empty_split_list(corpus, tmp, run_dir):
    split = tmp / "empty_split.txt"
    split.write_text("\n\n")
    return corpus_args(corpus) + ["--pathTrain", str(split)], [str(split)]


def non_matching_split_list(corpus, tmp, run_dir):
    split = tmp / "foreign_split.txt"
    split.write_text("1272-128104-0000\n1272-128104-0001\n")
    return corpus_args(corpus) + ["--pathTrain", str(split)], [str(split)]


def nonexistent_pathdb(corpus, tmp, run_dir):
    missing = tmp / "no_such_corpus"
    return corpus_args(corpus) + ["--pathDB", str(missing)], [str(missing)]


def ctcphones_without_phone_data(corpus, tmp, run_dir):
    return corpus_args(corpus) + ["--CTCphones"], ["--CTCphones"]


def onlycapture_without_checkpoint(corpus, tmp, run_dir):
    return corpus_args(corpus) + ["--onlyCapture", "--captureEverything",
                                  "--pathCaptureDS", str(corpus / "val_split.txt"),
                                  "--pathCaptureSave", str(tmp / "capture")], ["--onlyCapture"]


def checkpoint_of_other_architecture(corpus, tmp, run_dir):
    # a finished 1-epoch run with --hiddenEncoder 32, then the same run dir with 64
    assert train.main(corpus_args(corpus) + TINY + ["--pathCheckpoint", str(run_dir)]) == 0
    assert ckpt.list_checkpoints(run_dir)
    return corpus_args(corpus) + ["--hiddenEncoder", "64"], ["--hiddenEncoder"]


def unwritable_output_dir(corpus, tmp, run_dir):
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir.parent, 0o500)
    if os.access(run_dir.parent, os.W_OK):
        pytest.skip("running as root: a 0o500 directory stays writable")
    return corpus_args(corpus), [str(run_dir)]


def output_dir_under_a_file(corpus, tmp, run_dir):
    # unwritable even for root: the run directory's parent is a regular file
    run_dir.parent.parent.mkdir(parents=True, exist_ok=True)
    run_dir.parent.write_text("a file, not a directory\n")
    return corpus_args(corpus), [str(run_dir.parent)]


def yaml_unknown_key(corpus, tmp, run_dir):
    config = tmp / "settings.yaml"
    config.write_text("nEpochs: 3\nlearningRate: 1e-3\n")  # nEpochs: a typo of nEpoch
    return corpus_args(corpus) + ["--config", str(config)], ["nEpochs", config.name]


def whole_corpus_shorter_than_window(corpus, tmp, run_dir):
    root = tmp / "short_corpus"
    stems = write_tree(root, {"100": [600, 700], "200": [500, 800]})
    (root / "train_split.txt").write_text(f"{stems[0]}\n{stems[2]}\n")
    (root / "val_split.txt").write_text(f"{stems[1]}\n{stems[3]}\n")
    return corpus_args(root), ["--sizeWindow"]


ERROR_CASES = {
    "corrupt_audio": corrupt_audio,
    "empty_file": empty_file,
    "8khz_file": rate_8khz,
    "labels_missing_for_all": labels_missing_for_all,
    "label_length_mismatch": label_length_mismatch,
    "empty_split_list": empty_split_list,
    "non_matching_split_list": non_matching_split_list,
    "nonexistent_pathDB": nonexistent_pathdb,
    "CTCphones_without_phone_data": ctcphones_without_phone_data,
    "onlyCapture_without_checkpoint": onlycapture_without_checkpoint,
    "checkpoint_of_other_architecture": checkpoint_of_other_architecture,
    "unwritable_output_dir": unwritable_output_dir,
    "output_dir_under_a_file": output_dir_under_a_file,
    "yaml_unknown_key": yaml_unknown_key,
    "whole_corpus_shorter_than_window": whole_corpus_shorter_than_window,
}


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


@pytest.mark.parametrize("prepare", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_bad_input_is_one_line_error(prepare, tiny_corpus, tmp_path, capsys):
    run_dir = tmp_path / "out" / "run"
    try:
        argv, culprits = prepare(tiny_corpus, tmp_path, run_dir)
        before = files_under(run_dir)
        capsys.readouterr()
        code = train.main(TINY + argv + ["--pathCheckpoint", str(run_dir)])
        out, err = capsys.readouterr()
    finally:
        if run_dir.parent.is_dir():
            os.chmod(run_dir.parent, 0o700)

    report = f"rc={code}\n--- stderr ---\n{err}\n--- stdout (tail) ---\n{out[-1500:]}"
    assert code == 2, report
    assert "Traceback" not in err, report
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, report
    for culprit in culprits:
        assert culprit in error_lines[0], f"{culprit!r} not named\n{report}"
    # nothing half-written
    cache = Path(os.environ["CPC_CACHE_DIR"])
    leftovers = [p for root in (tmp_path, cache) for p in root.rglob("*.tmp")]
    assert not leftovers, f"temporary files left: {leftovers}\n{report}"
    after = files_under(run_dir)
    assert not [p for p in after - before if p.name.startswith("checkpoint_") and
                p.suffix == ".pt"], f"checkpoint written: {sorted(after - before)}\n{report}"
    assert after == before, f"files written in the run dir: {sorted(after - before)}\n{report}"


# --------------------------------------------------------------------------------------------
# Documented warnings: training goes on.
# --------------------------------------------------------------------------------------------

def stereo_file(corpus, tmp):
    root = copy_corpus(corpus, tmp)
    path = first_train_file(root)
    mono, rate = sf.read(path, dtype="float32")
    sf.write(path, np.stack([mono, mono], axis=1), rate, subtype="PCM_16", format="FLAC")
    return corpus_args(root), [path.name, "channels"]


def labels_missing_for_some(corpus, tmp):
    labels = read_labels(corpus)
    dropped = (corpus / "train_split.txt").read_text().split()[:2]
    for stem in dropped:
        del labels[stem]
    path = write_labels(tmp / "some_labels.txt", labels)
    return corpus_args(corpus) + ["--path_phone_data", str(path)], \
        ["no phone labels", dropped[0]]


def file_shorter_than_window(corpus, tmp):
    root = copy_corpus(corpus, tmp)
    path = first_train_file(root)
    sf.write(path, ramp_signal(3, 1000), 16000, subtype="PCM_16", format="FLAC")
    return corpus_args(root), []  # allowed silently: windows span the glued files


WARNING_CASES = {
    "stereo_file": stereo_file,
    "labels_missing_for_some": labels_missing_for_some,
    "file_shorter_than_window": file_shorter_than_window,
}


@pytest.mark.parametrize("prepare", WARNING_CASES.values(), ids=WARNING_CASES.keys())
def test_tolerated_input_trains_with_a_warning(prepare, tiny_corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv, expected = prepare(tiny_corpus, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = train.main(TINY + argv + ["--pathCheckpoint", str(run_dir)])
    out, err = capsys.readouterr()
    shown = "\n".join(str(w.message) for w in caught) + "\n" + err + "\n" + out
    report = f"rc={code}\n--- warnings + stderr + stdout ---\n{shown[-3000:]}"
    assert code == 0, report
    assert "error:" not in err, report
    for text in expected:
        assert text in shown, f"{text!r} not shown\n{report}"
    assert ckpt.list_checkpoints(run_dir), report
