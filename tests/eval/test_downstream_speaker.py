"""Utterance-level speaker classification: masked pooling, results on the built-in corpus, errors."""
import json

import numpy as np
import pytest
import torch

from cpc.eval import downstream_speaker as ds
from cpc.eval.options import POOLINGS
from cpc.model import build_model
from cpc.options import complete_with_defaults


def save_run(run_dir, **arch) -> None:
    """A run directory as train.py writes it: checkpoint_<epoch>.pt beside checkpoint_args.json."""
    torch.manual_seed(0)
    run_dir.mkdir(parents=True)
    torch.save({"gEncoder": build_model(complete_with_defaults(arch)).state_dict(), "epoch": 0},
               run_dir / "checkpoint_0.pt")
    (run_dir / "checkpoint_args.json").write_text(json.dumps(arch))


@pytest.mark.parametrize("mode", POOLINGS)
def test_masked_pooling_ignores_padding(mode):
    features = torch.randn(3, 9, 4, dtype=torch.float64)
    n_frames = torch.tensor([9, 4, 1])
    pooled = ds.masked_pool(features, n_frames, mode).numpy()
    for row, n in enumerate(n_frames.tolist()):
        valid = features[row, :n].numpy()
        expected = valid.mean(axis=0) if mode == "mean" else np.concatenate([valid.mean(axis=0), valid.std(axis=0)])
        np.testing.assert_allclose(pooled[row], expected, atol=1e-5)


def test_speaker_accuracy_on_mfcc_features_is_far_above_chance(tiny_corpus, tmp_path):
    save_run(tmp_path / "mfcc", encoder_type="mfcc", hiddenEncoder=20, arMode="no_ar")
    out = tmp_path / "result"
    assert ds.main([str(tiny_corpus), str(tiny_corpus / "train_split.txt"), str(tiny_corpus / "val_split.txt"),
                    str(tmp_path / "mfcc"), "--out", str(out), "--pooling", "stats", "--nEpoch", "10",
                    "--lr", "0.01", "--batch_size", "4", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["n_speakers"] == 4 and results["chance"] == 0.25 and len(results["val_accuracy"]) == 10
    assert results["best_val_accuracy"] >= 0.75  # chance is 0.25
    assert results["train_loss"][-1] < results["train_loss"][0]


def test_finetuning_a_pase_checkpoint_runs(tiny_corpus, tmp_path):
    save_run(tmp_path / "pase", encoder_type="pase", hiddenEncoder=8, pase_qrnn=True, pase_skip=False,
             arMode="GRU", hiddenGar=6)
    out = tmp_path / "result"
    assert ds.main([str(tiny_corpus), str(tiny_corpus / "train_split.txt"), str(tiny_corpus / "val_split.txt"),
                    str(tmp_path / "pase"), "--out", str(out), "--finetune", "--get_encoded", "--nEpoch", "1",
                    "--batch_size", "8", "--max_seconds", "0.5", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["finetune"] and results["get_encoded"] and 0 <= results["best_val_accuracy"] <= 1


def test_validation_speakers_must_be_trained_on(tiny_corpus, tmp_path, capsys):
    save_run(tmp_path / "mfcc", encoder_type="mfcc", hiddenEncoder=13, arMode="no_ar")
    stems = (tiny_corpus / "train_split.txt").read_text().split()
    speakers = sorted({stem.split("-")[0] for stem in stems})
    (tmp_path / "train.txt").write_text("\n".join(s for s in stems if not s.startswith(speakers[0])))
    assert ds.main([str(tiny_corpus), str(tmp_path / "train.txt"), str(tiny_corpus / "val_split.txt"),
                    str(tmp_path / "mfcc"), "--out", str(tmp_path / "result"), "--device", "cpu"]) == 2
    assert f"speakers {speakers[0]} of" in capsys.readouterr().err
