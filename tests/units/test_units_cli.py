"""The unit command lines on the tiny corpus, with CPC_audio's argument lists, and bad inputs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cpc.data.labels import parseSeqLabels
from cpc.data.splits import read_split_list
from cpc.eval import ABX
from cpc.eval.make_abx_items import make_items, read_phone_symbols, write_item_file
from cpc.units import cluster, evaluate, onehot, quantize
from cpc.units.clusters import load_clustering
from cpc.units.onehot import read_quantized
from tests.model.test_feature_loader import save_random_run


@pytest.fixture(scope="module")
def cpc_run(tmp_path_factory):
    """A two-layer tiny CPC checkpoint (random weights are enough to exercise the tools)."""
    run = save_random_run(tmp_path_factory.mktemp("units_run") / "run", 3, nLevelsGRU=2)
    return run / "checkpoint_3.pt"


@pytest.fixture(scope="module")
def few_files(tiny_corpus, tmp_path_factory) -> str:
    """A --seqList of 6 files: clustering needs few frames, and the model runs cost seconds."""
    path = tmp_path_factory.mktemp("units_list") / "few.txt"
    path.write_text("\n".join(read_split_list(tiny_corpus / "train_split.txt")[:6]) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def pipeline(tiny_corpus, cpc_run, few_files, tmp_path_factory):
    """run_clustering.sh's cluster (+ --seqList) and quantize argument lists (less --nullspace),
    then onehot."""
    root = tmp_path_factory.mktemp("units")
    out = root / "clustering_CPC_kmeans50" / "clustering_CPC_kmeans50.pt"
    assert cluster.main(["--seqList", few_files, "--pathDB", str(tiny_corpus), "--recursionLevel", "1", "--nClusters", "50",
                         "--MAX_ITER", "4", "--level_gru", "2", "--save", "--load",
                         "--batchSizeGPU", "8", "--max_size_loaded", "40000000",
                         "--n_process_loader", "2", str(cpc_run), str(out)]) == 0
    assert quantize.main([str(out), str(tiny_corpus), str(root / "quantized"),
                          "--file_extension", "flac", "--nobatch"]) == 0
    assert onehot.main([str(root / "quantized" / "quantized_outputs.txt"), str(root / "onehot")]) == 0
    return root, out


def test_cluster_writes_cpc_audio_files(pipeline, cpc_run):
    root, out = pipeline
    saved = torch.load(out, weights_only=True)
    assert {"state_dict", "encoder_layer", "n_clusters", "dim"} <= set(saved)
    assert saved["state_dict"]["Ck"].shape == (1, 50, 12) and saved["n_clusters"] == 50
    args = json.loads((out.parent / "clustering_CPC_kmeans50_args.json").read_text())
    assert args["pathCheckpoint"] == str(cpc_run) and args["level_gru"] == 2
    assert args["dimReduction"] is None and not args["train_mode"]  # what quantize_audio.py reads
    logs = (out.parent / "training_logs.txt").read_text().splitlines()
    assert len(logs) == 4 and logs[-1].startswith("ITER 4 done")
    last = torch.load(out.parent / "checkpoint_last.pt", weights_only=True)
    assert last["iteration"] == 4 and "lastDiff" in last
    assert not list(out.parent.glob(".features_*"))  # the feature cache is removed


def test_quantized_units_and_onehot_features_feed_abx(pipeline, tiny_corpus):
    root, out = pipeline
    lines = (root / "quantized" / "quantized_outputs.txt").read_text().splitlines()
    labels, _ = parseSeqLabels(tiny_corpus / "converted_aligned_phones.txt")
    assert len(lines) == 24
    for line in lines:
        stem, units = line.split("\t")
        units = [int(u) for u in units.split(",")]
        assert abs(len(units) - len(labels[stem])) <= 1 and 0 <= min(units) and max(units) < 50
    first = lines[0].split("\t")
    features = np.loadtxt(root / "onehot" / f"{first[0]}.txt")
    assert features.shape == (len(first[1].split(",")), 50)
    assert list(features.argmax(axis=1)) == [int(u) for u in first[1].split(",")]
    stems = read_split_list(tiny_corpus / "train_split.txt") + read_split_list(tiny_corpus / "val_split.txt")
    write_item_file(root / "all.item", make_items(labels, read_phone_symbols(tiny_corpus / "phones.txt"), stems))
    assert ABX.main(["from_pre_computed", str(root / "onehot"), str(root / "all.item"),
                     "--file_extension", ".txt", "--out", str(root / "abx"), "--device", "cpu"]) == 0
    scores = json.loads((root / "abx" / "ABX_scores.json").read_text())
    # the evaluate command's in-memory ABX of the same units gives the same figures
    row = evaluate.evaluate_units(read_quantized(root / "quantized" / "quantized_outputs.txt"),
                                  labels, read_phone_symbols(tiny_corpus / "phones.txt"))
    assert row["abx_within"] == pytest.approx(scores["within"])
    assert row["abx_across"] == pytest.approx(scores["across"])
    assert 0 < row["pnmi"] < 1 and 0 < row["phone_purity"] <= 1 and row["units"] <= 50


def test_load_resumes_and_refuses_to_overwrite(pipeline, tiny_corpus, cpc_run, few_files, tmp_path,
                                               capsys):
    root, first = pipeline
    shutil.copytree(first.parent, tmp_path / "copy")
    out = tmp_path / "copy" / first.name
    base = ["--pathDB", str(tiny_corpus), "--recursionLevel", "1", "-k", "50", "--level_gru", "2",
            "--batchSizeGPU", "8", "--seqList", few_files, str(cpc_run), str(out)]
    assert cluster.main(base + ["-n", "4"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cluster.main(base + ["-n", "6", "--save", "--load"]) == 0
    logs = (out.parent / "training_logs.txt").read_text().splitlines()
    assert [line.split()[1] for line in logs] == ["1", "2", "3", "4", "5", "6"]
    assert sorted(p.name for p in out.parent.glob("checkpoint_*.pt")) == \
        ["checkpoint_2.pt", "checkpoint_3.pt", "checkpoint_4.pt", "checkpoint_5.pt",
         "checkpoint_6.pt", "checkpoint_last.pt"]


def test_quantize_resume_completes_a_cut_file(pipeline, tiny_corpus, tmp_path, capsys):
    root, out = pipeline
    whole = (root / "quantized" / "quantized_outputs.txt").read_text()
    target = tmp_path / "q" / "quantized_outputs.txt"
    target.parent.mkdir()
    cut = whole.index("\n", len(whole) // 2) + 40  # 12 lines, then a line cut mid-way
    target.write_text(whole[:cut])
    command = [str(out), str(tiny_corpus), str(tmp_path / "q"), "--file_extension", "flac", "--nobatch"]
    assert quantize.main(command) == 2
    assert "--resume" in capsys.readouterr().err
    assert quantize.main(command + ["--resume"]) == 0
    assert sorted(target.read_text().splitlines()) == sorted(whole.splitlines())


@pytest.mark.parametrize("source", ["mfcc", "random_init"])
def test_baseline_feature_sources(source, tiny_corpus, cpc_run, few_files, tmp_path):
    checkpoint = "-" if source == "mfcc" else str(cpc_run)
    out = tmp_path / "c" / f"{source}.pt"
    assert cluster.main([checkpoint, str(out), "--pathDB", str(tiny_corpus), "--recursionLevel", "1",
                         "-k", "8", "-n", "3", "--features", source, "--seqList", few_files,
                         "--sizeWindow", "64000"]) == 0
    assert quantize.main([str(out), str(tiny_corpus), str(tmp_path / "q"), "--file_extension",
                          ".flac", "--pathSeq", few_files, "--nobatch"]) == 0
    lines = (tmp_path / "q" / "quantized_outputs.txt").read_text().splitlines()
    assert len(lines) == 6
    saved = load_clustering(out)
    assert saved.centroids.shape == (8, 13 if source == "mfcc" else 12)
    assert ("feature_weights" in saved.content) == (source == "random_init")


@pytest.mark.parametrize("flags, message", [
    (["--nullspace"], "--nullspace is not supported"),
    (["--DPMean"], "DP-means is not implemented"),
    (["--train_mode"], "fine-tune it with cpc/train.py"),
    (["-g", "2"], "-g/--nGroups 2 is not supported"),
    (["-k", "0"], "-k/--nClusters must be at least 1"),
    (["--perIterSize", "0"], "--perIterSize is -1"),
])
def test_cluster_usage_errors(flags, message, capsys):
    with pytest.raises(SystemExit):
        cluster.main(["ckpt.pt", "out.pt", "--pathDB", "db"] + flags)
    assert message in capsys.readouterr().err


def test_bad_inputs_give_one_line_errors(pipeline, tiny_corpus, cpc_run, tmp_path, capsys):
    root, out = pipeline
    cases = [
        (lambda: cluster.main([str(cpc_run), str(tmp_path / "a.pt"), "--pathDB", str(tmp_path / "none")]),
         "does not exist or is not a directory"),
        (lambda: cluster.main([str(tmp_path / "no.pt"), str(tmp_path / "b.pt"), "--pathDB",
                               str(tiny_corpus), "--recursionLevel", "1"]), "does not exist"),
        (lambda: cluster.main(["-", str(tmp_path / "c.pt"), "--pathDB", str(tiny_corpus),
                               "--recursionLevel", "1"]), "needs a checkpoint"),
        (lambda: quantize.main([str(cpc_run), str(tiny_corpus), str(tmp_path / "q"),
                                "--file_extension", "flac"]), "not a clustering checkpoint"),
        (lambda: onehot.main([str(root / "quantized" / "quantized_outputs.txt"), str(tmp_path / "o"),
                              "--n_units", "3"]), "there are 3 units"),
    ]
    bad = tmp_path / "bad.txt"
    bad.write_text("stem\t1,x,2\n")
    cases.append((lambda: onehot.main([str(bad), str(tmp_path / "o")]), "bad.txt:1: units of stem"))
    labels = tmp_path / "labels.txt"
    labels.write_text("stem " + " ".join(["1"] * 10) + "\n")
    short = tmp_path / "short.txt"
    short.write_text("stem\t" + ",".join(["1"] * 4) + "\n")
    cases.append((lambda: evaluate.main([str(short), "--pathPhone", str(labels)]),
                  "4 units but 10 phone labels"))
    for run, message in cases:
        assert run() == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit):
        quantize.main([str(out), str(tiny_corpus), str(tmp_path / "q"), "--split", "3-2"])
    assert "--split must be I-N" in capsys.readouterr().err


def test_evaluate_prints_a_table(pipeline, tiny_corpus, tmp_path, capsys):
    root, _ = pipeline
    units = root / "quantized" / "quantized_outputs.txt"
    assert evaluate.main([str(units), str(units), "--names", "a", "b", "--pathPhone",
                          str(tiny_corpus / "converted_aligned_phones.txt"), "--no_abx",
                          "--out", str(tmp_path / "t.json")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "pnmi" in table[0] and "abx_within" not in table[0]
    assert table[1].split()[1:] == table[2].split()[1:]
    assert set(json.loads((tmp_path / "t.json").read_text())) == {"a", "b"}
