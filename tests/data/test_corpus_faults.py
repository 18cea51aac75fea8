"""Faults a researcher hits with real corpora (issue 22, "your own cases"), each of which gave a
traceback, a silent wrong result or a misleading message: byte-order marks and binary files
given as lists, symbolic-link loops and aliases, macOS and trash copies, copied folders, a
validation set shorter than a window, a quantize list naming absent files, and a run folder
holding only its best checkpoint. (Unseen validation speakers: test_corpus_layout.py.)"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from cpc import train
from cpc.data.labels import parseSeqLabels
from cpc.data.listing import findAllSeqs
from cpc.data.splits import filterSeqs, read_split_list
from cpc.utils.errors import DataError
from cpc.eval.build_zeroSpeech_features import list_files_by_stem
from cpc.feature_loader import resolve_checkpoint
from cpc.units import quantize
from cpc.units.clusters import args_path, clustering_content, save_clustering
from cpc.utils import checkpoint as ckpt
from tests.conftest import write_tree
from tests.data.test_corpus_layout import TINY, split_lists

SECOND = 16000


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, list[str]]:
    root = tmp_path / "db"
    return root, write_tree(root, {"100": [SECOND] * 3, "200": [SECOND] * 3})


# --------------------------------------------------------------------------------------------
# Lists written on Windows, or the wrong file given as a list
# --------------------------------------------------------------------------------------------

def test_byte_order_mark_keeps_the_first_stem(corpus, tmp_path):
    # before: the first stem read '\ufeff100-0-0000', was "not in the corpus" and dropped
    root, stems = corpus
    split = tmp_path / "bom.txt"
    split.write_text("\ufeff" + "\r\n".join(stems) + "\r\n", encoding="utf-8")
    labels = tmp_path / "labels.txt"
    labels.write_text("\ufeff" + "".join(f"{s} {' '.join(['1'] * 100)}\n" for s in stems),
                      encoding="utf-8")
    seqs, _ = findAllSeqs(root, ".flac")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(filterSeqs(split, seqs)) == len(stems)
    assert sorted(parseSeqLabels(labels)[0]) == sorted(stems)


@pytest.mark.parametrize("reader, what", [(read_split_list, "split list"),
                                          (parseSeqLabels, "phone label file")])
def test_binary_file_given_as_a_list(reader, what, corpus):
    # before: UnicodeDecodeError traceback (e.g. a .flac or a .gz given as --pathTrain)
    root, _ = corpus
    audio = next(root.rglob("*.flac"))
    with pytest.raises(DataError, match=f"{what} {audio} is not a text file"):
        reader(audio)


# --------------------------------------------------------------------------------------------
# The tree: links, hidden copies, copied folders
# --------------------------------------------------------------------------------------------

def test_symbolic_link_loop_is_listed_once(corpus):
    # before: OSError [Errno 40] Too many levels of symbolic links, after walking 40 levels
    root, stems = corpus
    os.symlink("..", root / "100" / "0" / "up")
    with pytest.warns(UserWarning, match="100/0/up leads to .*already listed"):
        seqs, speakers = findAllSeqs(root, ".flac")
    assert sorted(s.stem for s in seqs) == sorted(stems) and speakers == ["100", "200"]


def test_link_to_a_listed_folder_is_listed_once(corpus):
    # before: the files of 100 were listed twice, as speakers 100 and 100_alias
    root, stems = corpus
    os.symlink(root / "100", root / "100_alias")
    with pytest.warns(UserWarning, match="100_alias leads to .*already listed"):
        seqs, speakers = findAllSeqs(root, ".flac")
    assert len(seqs) == len(stems) and speakers == ["100", "200"]


def test_link_to_a_folder_outside_is_followed(corpus, tmp_path):
    root, stems = corpus
    outside = tmp_path / "elsewhere"
    extra = write_tree(outside, {"300": [SECOND] * 2})
    os.symlink(outside / "300", root / "300")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seqs, speakers = findAllSeqs(root, ".flac")
    assert len(seqs) == len(stems) + len(extra) and speakers == ["100", "200", "300"]


def test_hidden_copies_are_not_listed(corpus):
    # before: macOS's ._<name>.flac copies stopped the run ("Format not recognised") and a
    # .Trash-1000 folder was listed as one more speaker
    root, stems = corpus
    (root / "100" / "0" / "._100-0-0000.flac").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    shutil.copytree(root / "200", root / ".Trash-1000" / "200")
    seqs, speakers = findAllSeqs(root, ".flac")
    assert len(seqs) == len(stems) and speakers == ["100", "200"]
    # the export lists the same files (it skipped hidden files; hidden folders were duplicates)
    assert sorted(list_files_by_stem(root, ".flac")) == sorted(stems)


def test_split_list_stem_naming_two_files(corpus, tmp_path):
    # before: both copies were selected silently (a folder copied under another speaker name)
    root, stems = corpus
    shutil.copytree(root / "100", root / "300")
    split = tmp_path / "split.txt"
    split.write_text(f"{stems[0]}\n{stems[3]}\n")
    seqs, _ = findAllSeqs(root, ".flac")
    with pytest.raises(DataError, match=f"{split}: the stem {stems[0]} names 2 files of the "
                                        f"corpus \\(100/0/{stems[0]}.flac, 300/0/"):
        filterSeqs(split, seqs)


# --------------------------------------------------------------------------------------------
# train.py: which part has no window
# --------------------------------------------------------------------------------------------

def test_validation_files_shorter_than_a_window_are_named(tmp_path, capsys):
    # before: "no window ... fits: the longest pack of DB holds 2000 samples", as if the
    # corpus were too short, while the training files were fine
    root = tmp_path / "db"
    stems = write_tree(root, {"100": [SECOND, SECOND, 1000], "200": [SECOND, SECOND, 1000]})
    train_list, val_list = split_lists(root, stems)
    code = train.main(TINY + ["--pathDB", str(root), "--pathTrain", str(train_list),
                              "--pathVal", str(val_list), "--pathCheckpoint", str(tmp_path / "R")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error: the validation files (2 of them): no window of --sizeWindow 3200" in err, err


# --------------------------------------------------------------------------------------------
# Units and checkpoints
# --------------------------------------------------------------------------------------------

def mfcc_clustering(path: Path) -> Path:
    save_clustering(path, clustering_content(torch.randn(4, 13), encoder_layer=False))
    ckpt.write_json(args_path(path), {"features": "mfcc", "mfcc_dim": 13})
    return path


def test_quantize_list_naming_absent_files_warns(corpus, tmp_path):
    # before: the stems absent from pathDB were dropped without a word
    root, stems = corpus
    listed = tmp_path / "seq.txt"
    listed.write_text(f"{stems[0]}\n{stems[1]}\n1272-128104-0000\n")
    out = tmp_path / "q"
    with pytest.warns(UserWarning, match="1 of 3 stems of .*seq.txt are not in the corpus .*"
                                         "1272-128104-0000"):
        code = quantize.main([str(mfcc_clustering(tmp_path / "c.pt")), str(root), str(out),
                              "--file_extension", "flac", "--pathSeq", str(listed),
                              "--device", "cpu"])
    assert code == 0
    lines = (out / "quantized_outputs.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == stems[:2]


def test_run_folder_holding_only_its_best_checkpoint(tmp_path):
    # before: "R holds no checkpoint_<N>.pt", not saying that checkpoint_best.pt is there
    run_dir = tmp_path / "R"
    run_dir.mkdir()
    (run_dir / "checkpoint_best.pt").write_bytes(b"")
    (run_dir / "interrupted_checkpoint_3.pt").write_bytes(b"")
    with pytest.raises(Exception, match="holds no checkpoint_<N>.pt \\(it holds "
                                        "checkpoint_best.pt, interrupted_checkpoint_3.pt: give "
                                        "one of these files\\)"):
        resolve_checkpoint(run_dir)
