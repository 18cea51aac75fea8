"""Corpus structure (issue 22, item 2) and the smaller cases of item 8: a --pathDB one level
above the speakers is refused or warned of, speaker probes of fewer than two speakers are
refused, a failed run leaves no folder behind, and a split list that is a folder says so."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from cpc import train
from cpc.data.layout import split_level_problem
from cpc.data.corpus import select_corpus
from cpc.data.labels import parseSeqLabels
from cpc.data.listing import findAllSeqs
from cpc.data.splits import read_split_list
from cpc.utils.errors import DataError
from cpc.eval import linear_separability
from tests.conftest import write_tree

TINY = ["--hiddenEncoder", "32", "--hiddenGar", "32", "--nPredicts", "3",
        "--negativeSamplingExt", "8", "--sizeWindow", "3200", "--batchSizeGPU", "8",
        "--rnnMode", "linear", "--n_process_loader", "2", "--random_seed", "7",
        "--device", "cpu", "--nEpoch", "1"]
SECOND = 16000


def split_lists(root: Path, stems: list[str], train_speakers: set[str] | None = None,
                val_speakers: set[str] | None = None) -> tuple[Path, Path]:
    """<root>_train.txt / <root>_val.txt beside root: each speaker's third file validates,
    the others train; ``train_speakers`` / ``val_speakers`` keep those speakers' files only."""
    speaker = lambda stem: stem.split("-")[0]  # noqa: E731
    val = [s for s in stems if s.endswith("0002") and
           (val_speakers is None or speaker(s) in val_speakers)]
    train_part = [s for s in stems if not s.endswith("0002") and
                  (train_speakers is None or speaker(s) in train_speakers)]
    paths = root.parent / f"{root.name}_train.txt", root.parent / f"{root.name}_val.txt"
    for path, part in zip(paths, (train_part, val)):
        path.write_text("".join(f"{stem}\n" for stem in part))
    return paths


def librispeech_above_split(tmp_path: Path) -> tuple[Path, Path, Path]:
    """D/train-clean-100/<speaker>/<chapter>/<file>.flac, and its split lists."""
    root = tmp_path / "D"
    stems = write_tree(root / "train-clean-100", {"100": [SECOND] * 3, "200": [SECOND] * 3})
    return (root, *split_lists(root, stems))


def run_train(argv: list[str], capsys) -> tuple[int, str]:
    code = train.main(TINY + argv)
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The layout rule (pure)
# --------------------------------------------------------------------------------------------

def listing(paths: list[str]) -> tuple[list[str], list[int], list[str]]:
    speakers = sorted({p.split("/")[0] for p in paths})
    return paths, [speakers.index(p.split("/")[0]) for p in paths], speakers


@pytest.mark.parametrize("paths, expected", [
    (["train-clean-100/100/1/100-1-0.flac", "train-clean-100/200/1/200-1-0.flac"],
     "its only \"speaker\" train-clean-100 holds 2 speaker folders (100, 200); give "
     "--pathDB D/train-clean-100"),
    (["corpus/100/1/100-1-0.flac", "corpus/200/3/200-3-0.flac"], "give --pathDB D/corpus"),
    (["dev-clean/100-1-0.flac"], "its only \"speaker\" folder dev-clean is named like a split"),
    (["dev-clean/100/1/a.flac", "dev-clean/200/1/b.flac", "train-clean-100/300/1/c.flac",
      "train-clean-100/400/1/d.flac"],
     "its \"speakers\" dev-clean, train-clean-100 hold speaker folders; give one split, e.g. "
     "--pathDB D/dev-clean"),
    (["100/1/a.flac", "200/1/b.flac"], None),  # LibriSpeech layout
    (["lj/LJ001-0001.wav", "lj/LJ001-0002.wav"], None),  # one speaker: a warning only
    (["p225/session/take/a.wav"], None),  # one speaker, deep but not numeric speaker folders
    (["train/100/1/a.flac", "test/200/1/b.flac", "spk3/300/1/c.flac"], None),  # not all splits
])
def test_split_level_problem(paths, expected):
    problem = split_level_problem("D", *listing(paths))
    if expected is None:
        assert problem is None
    else:
        assert expected in problem, problem


# --------------------------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------------------------

def test_train_refuses_pathdb_one_level_above_a_split(tmp_path, capsys):
    root, train_list, val_list = librispeech_above_split(tmp_path)
    run_dir = tmp_path / "runs" / "R"
    code, err = run_train(["--pathDB", str(root), "--pathTrain", str(train_list), "--pathVal",
                           str(val_list), "--pathCheckpoint", str(run_dir)], capsys)
    assert code == 2, err
    assert f"give --pathDB {root}/train-clean-100" in err, err
    assert not (tmp_path / "runs").exists()  # the folders this run created are gone


def test_one_speaker_corpus_trains_with_a_warning(tmp_path):
    root = tmp_path / "lj"
    write_tree(root, {"lj": [SECOND] * 3})
    with pytest.warns(UserWarning, match="holds one speaker \\(lj\\).*speaker probes need two"):
        selection = select_corpus(root, ".flac", None, None, None, n_process_loader=1)
    assert selection.speakers == ["lj"]


def test_linsep_refuses_a_single_training_speaker(tmp_path, capsys):
    root = tmp_path / "db"
    stems = write_tree(root, {"100": [SECOND] * 3, "200": [SECOND] * 3})
    train_list, val_list = split_lists(root, stems, {"100"}, {"100"})
    code = linear_separability.main([str(root), str(train_list), str(val_list), "--features",
                                     "mfcc", "--nEpoch", "1", "--device", "cpu", "--sizeWindow", "3200"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "lists files of speaker 100 only: speaker classification needs at least two" in err


def test_linsep_refuses_validation_speakers_never_trained_on(tmp_path, capsys):
    root = tmp_path / "db"
    stems = write_tree(root, {"100": [SECOND] * 3, "200": [SECOND] * 3, "300": [SECOND] * 3})
    train_list, val_list = split_lists(root, stems, {"100", "200"}, {"300"})
    code = linear_separability.main([str(root), str(train_list), str(val_list), "--features",
                                     "mfcc", "--nEpoch", "1", "--device", "cpu", "--sizeWindow", "3200"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"speakers 300 of {val_list} have no training file in {train_list}" in err, err
    assert err.rstrip().endswith("or give --no_speaker to skip the speaker probes"), err


def test_training_probes_refuse_one_speaker_before_training(tmp_path, capsys):
    root = tmp_path / "db"
    stems = write_tree(root, {"100": [SECOND] * 3, "200": [SECOND] * 3})
    train_list, val_list = split_lists(root, stems, {"100"}, {"100"})
    run_dir = tmp_path / "R"
    code, err = run_train(["--pathDB", str(root), "--pathTrain", str(train_list), "--pathVal",
                           str(val_list), "--pathCheckpoint", str(run_dir),
                           "--supervised_classif_metric", "--speaker_sep",
                           "--linsep_classif_each_epochs", "1"], capsys)
    assert code == 2, err
    assert f"--pathTrain {train_list} lists files of speaker 100 only" in err, err
    assert err.rstrip().endswith("or drop --speaker_sep"), err
    assert not run_dir.exists()


# --------------------------------------------------------------------------------------------
# Item 8: no folder left behind; a split list that is a folder
# --------------------------------------------------------------------------------------------

@pytest.fixture
def two_speakers(tmp_path) -> tuple[Path, Path, Path]:
    root = tmp_path / "db"
    stems = write_tree(root, {"100": [SECOND] * 3, "200": [SECOND] * 3})
    return (root, *split_lists(root, stems))


def test_error_after_the_checks_leaves_no_lone_args_file(two_speakers, tmp_path, capsys):
    # the capture set is read after the corpus: today's order wrote checkpoint_args.json first
    root, train_list, val_list = two_speakers
    run_dir, capture = tmp_path / "runs" / "R", tmp_path / "capture"
    code, err = run_train(["--pathDB", str(root), "--pathTrain", str(train_list), "--pathVal",
                           str(val_list), "--pathCheckpoint", str(run_dir),
                           "--captureEachEpochs", "1", "--captureEverything",
                           "--pathCaptureDS", str(tmp_path / "no_such_list.txt"),
                           "--pathCaptureSave", str(capture)], capsys)
    assert code == 2, err
    assert "no_such_list.txt does not exist" in err
    assert not (tmp_path / "runs").exists() and not capture.exists()


def test_a_folder_the_user_made_is_kept_with_its_files(two_speakers, tmp_path, capsys):
    root, train_list, _ = two_speakers
    run_dir = tmp_path / "R"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine\n")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    for target in (run_dir, empty):
        code, err = run_train(["--pathDB", str(root), "--pathTrain", str(train_list),
                               "--pathVal", str(tmp_path / "missing.txt"),
                               "--pathCheckpoint", str(target)], capsys)
        assert code == 2 and "missing.txt does not exist" in err, err
    assert [p.name for p in run_dir.iterdir()] == ["notes.txt"]
    assert empty.is_dir()


def test_split_list_that_is_a_folder(two_speakers, tmp_path, capsys):
    root, _, val_list = two_speakers
    code, err = run_train(["--pathDB", str(root), "--pathTrain", str(root), "--pathVal",
                           str(val_list), "--pathCheckpoint", str(tmp_path / "R")], capsys)
    assert code == 2
    assert f"split list {root} is a directory; expected a text file of file stems, one per " \
           f"line" in err, err
    with pytest.raises(DataError, match="is a directory; expected a text file of lines"):
        parseSeqLabels(root)


def test_listing_a_split_keeps_working(tmp_path):
    # the speaker check does not touch the listing itself: ABX, export and units list any tree
    root, _, _ = librispeech_above_split(tmp_path)
    seqs, speakers = findAllSeqs(root, ".flac")
    assert len(seqs) == 6 and speakers == ["train-clean-100"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_split_list(tmp_path / "D_train.txt")) == 4
