"""Linear-separability probes: learning, chance, CTC decoding, files, flags, checkpoint safety."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F

from cpc import train
from cpc.eval import linear_separability as linsep
from cpc.probes.config import ProbeConfig
from cpc.probes.features import FeatureSet
from cpc.probes.run import run_probes
from cpc.probes.training import train_probe
from tests.train.test_train import SMALL, corpus_args

N_SPK, N_PH, T = 4, 6, 12


def labelled_features(n: int, informative: bool, seed: int = 0) -> FeatureSet:
    """Features that one-hot encode the labels (plus noise), or pure noise."""
    g = torch.Generator().manual_seed(seed)
    speakers = torch.randint(0, N_SPK, (n,), generator=g)
    runs = torch.randint(0, N_PH, (n, T // 3), generator=g)
    phones = runs.repeat_interleave(3, dim=1)  # every phone lasts 3 frames
    noise = 0.1 * torch.randn(n, 8, generator=g)
    frame_noise = 0.1 * torch.randn(n, T, 8, generator=g)
    if informative:
        pooled = F.pad(F.one_hot(speakers, N_SPK).float(), (0, 4)) * 3 + noise
        frames = F.pad(F.one_hot(phones, N_PH).float(), (0, 2)) * 3 + frame_noise
    else:
        pooled, frames = noise * 10, frame_noise * 10
    return FeatureSet(pooled, pooled.clone(), speakers, frames.half(), phones)


CONFIG = ProbeConfig(n_epochs=15, batch_size=16, lr=1e-2)


@pytest.mark.parametrize("probe", ["speaker", "speaker_mean", "phone"])
def test_probes_separate_informative_features_and_not_noise(probe):
    n_classes = N_SPK if probe.startswith("speaker") else N_PH
    good = train_probe(probe, labelled_features(200, True), labelled_features(80, True, 1),
                       n_classes=n_classes, config=CONFIG, device=torch.device("cpu"))
    assert good.best_val_acc > 0.97
    bad = train_probe(probe, labelled_features(200, False), labelled_features(400, False, 1),
                      n_classes=n_classes, config=CONFIG, device=torch.device("cpu"))
    assert bad.best_val_acc < 1.0 / n_classes + 0.12


def test_ctc_probe_decodes_phone_sequences():
    config = ProbeConfig(n_epochs=40, batch_size=16, lr=2e-2)
    result = train_probe("phone_ctc", labelled_features(200, True), labelled_features(40, True, 1),
                         n_classes=N_PH, config=config, device=torch.device("cpu"))
    assert result.best_val_per < 0.05
    assert result.best_val_acc == pytest.approx(1 - result.best_val_per)


def test_probe_logs_and_best_state(tmp_path):
    config = ProbeConfig(n_epochs=4, batch_size=16, lr=1e-2, logging_step=2)
    result = train_probe("speaker", labelled_features(64, True), labelled_features(32, True, 1),
                         n_classes=N_SPK, config=config, device=torch.device("cpu"),
                         log_dir=tmp_path / "logs", checkpoint_dir=tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == \
        ["best.json", "epoch_1.json", "epoch_3.json"]
    record = json.loads((tmp_path / "logs" / "epoch_3.json").read_text())
    assert {"train_loss", "val_loss", "val_acc", "pooling"} <= set(record)
    assert record["pooling"] == "last"
    state = torch.load(tmp_path / "ckpt" / "best_probe.pt", weights_only=True)
    assert state["epoch"] == result.best_epoch and state["val_acc"] == result.best_val_acc


def test_probes_leave_the_callers_random_stream_alone(tiny_corpus):
    from cpc.data.corpus import build_datasets
    from cpc.model import CPCModel, MFCCEncoder, NoAR
    data = build_datasets(tiny_corpus, ".flac", str(tiny_corpus / "train_split.txt"),
                          str(tiny_corpus / "val_split.txt"),
                          str(tiny_corpus / "converted_aligned_phones.txt"), 3200,
                          n_process_loader=2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    metrics = run_probes(CPCModel(MFCCEncoder(13), NoAR(13)), data.train, data.val,
                         probes=["speaker", "phone"], n_speakers=len(data.speakers),
                         n_phones=data.n_phones, config=ProbeConfig(n_epochs=2),
                         device=torch.device("cpu"), extract_batch_size=8)
    assert torch.equal(torch.rand(3), expected)
    assert {"speaker_best_val_acc", "phone_best_val_acc"} <= set(metrics)
    data.close()


def _tree_digest(path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_periodic_probes_write_where_the_flags_say(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    labels = tiny_corpus / "converted_aligned_phones.txt"
    argv = corpus_args(tiny_corpus) + SMALL + [
        "--pathCheckpoint", run, "--nEpoch", "2", "--supervised_classif_metric", "--speaker_sep",
        "--path_phone_data", labels, "--linsep_classif_each_epochs", "1", "--linsep_n_epoch", "2",
        "--linsep_logs_dir", tmp_path / "linlogs", "--linsep_checkpoint_dir", tmp_path / "lincp"]
    assert train.main([str(a) for a in argv]) == 0
    for epoch in ("0", "1"):
        for probe in ("speaker", "speaker_mean", "phone"):
            assert (tmp_path / "linlogs" / epoch / probe / "best.json").is_file()
            assert (tmp_path / "lincp" / epoch / probe / "best_probe.pt").is_file()
    logs = json.loads((run / "checkpoint_logs.json").read_text())
    assert logs["linsep_epoch"] == [0, 1]
    for key in ("speaker_best_val_acc", "speaker_mean_best_val_acc", "phone_best_val_acc"):
        assert len(logs[key]) == 2 and all(0 <= v <= 1 for v in logs[key])


def test_ctc_probe_without_checkpoint_dir_logs_under_the_run(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    argv = corpus_args(tiny_corpus) + SMALL + [
        "--pathCheckpoint", run, "--nEpoch", "1", "--supervised_classif_metric",
        "--path_phone_data", tiny_corpus / "converted_aligned_phones.txt", "--CTCphones",
        "--linsep_classif_each_epochs", "1", "--linsep_n_epoch", "1"]
    assert train.main([str(a) for a in argv]) == 0
    assert (run / "linsep_logs" / "0" / "phone_ctc" / "best.json").is_file()
    logs = json.loads((run / "checkpoint_logs.json").read_text())
    assert 0 <= logs["phone_ctc_best_val_per"][0]


def test_only_classif_metric_leaves_the_run_untouched(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    base = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", run]
    assert train.main([str(a) for a in base + ["--nEpoch", "1"]]) == 0
    before = _tree_digest(run)
    capsys.readouterr()
    argv = corpus_args(tiny_corpus) + ["--pathCheckpoint", run, "--only_classif_metric",
                                       "--speaker_sep", "--linsep_n_epoch", "1",
                                       "--linsep_logs_dir", tmp_path / "logs", "--device", "cpu"]
    assert train.main([str(a) for a in argv]) == 0
    assert _tree_digest(run) == before
    assert "speaker (last frame)" in capsys.readouterr().out
    assert (tmp_path / "logs" / "0" / "speaker" / "best.json").is_file()


@pytest.mark.parametrize("flags, message", [
    (["--CTCphones"], "--CTCphones needs phone labels"),
    (["--supervised_classif_metric"], "needs --speaker_sep and/or --path_phone_data"),
    (["--only_classif_metric", "--speaker_sep"], "--only_classif_metric needs a trained model"),
])
def test_contradictory_probe_flags_are_refused(tiny_corpus, tmp_path, capsys, flags, message):
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "none"] + flags
    assert train.main([str(a) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_standalone_script_with_baselines(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train.main([str(a) for a in corpus_args(tiny_corpus) + SMALL +
                       ["--pathCheckpoint", run, "--nEpoch", "1"]]) == 0
    positional = [str(tiny_corpus), str(tiny_corpus / "train_split.txt"),
                  str(tiny_corpus / "val_split.txt")]
    common = ["--pathPhone", str(tiny_corpus / "converted_aligned_phones.txt"), "--nEpoch", "2",
              "--sizeWindow", "3200", "--n_process_loader", "2", "--device", "cpu"]
    for features, extra in (("checkpoint", [str(run)]), ("random_init", [str(run)]),
                            ("mfcc", [])):
        out = tmp_path / features
        assert linsep.main(positional + extra + common + ["--features", features,
                                                          "--out", str(out)]) == 0
        result = json.loads((out / "results.json").read_text())
        assert result["features"] == features
        assert {"speaker_best_val_acc", "phone_best_val_acc"} <= set(result)
    assert linsep.main(positional + common + ["--features", "random_init"]) == 2
    assert "needs a checkpoint" in capsys.readouterr().err


def test_path_checkpoint_is_a_deprecated_alias_of_out(capsys):
    positional = ["DB", "train.txt", "val.txt"]
    assert linsep.parse_args(positional + ["--pathCheckpoint", "probes"]).out == "probes"
    assert "--pathCheckpoint is deprecated; use --out" in capsys.readouterr().err
    assert linsep.parse_args(positional + ["--out", "probes"]).out == "probes"
    assert capsys.readouterr().err == ""
