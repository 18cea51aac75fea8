"""linear_separability's fine-tuning, untrained-model and CPC_audio flags (--unfrozen,
--no_pretraining, --save_step, --n_epoch, --size_window, --nGPU, --debug, --ignore_cache)."""
from __future__ import annotations

import json
import re

import pytest
import torch

from cpc.data.corpus import build_datasets
from cpc.eval import linear_separability as linsep
from cpc.feature_loader import loadModel
from cpc.probes.config import ProbeConfig
from cpc.probes.run import run_probes
from cpc.probes.training import finetune_probe
from tests.model.test_feature_loader import save_random_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory holding a small model's checkpoint_0.pt (random weights)."""
    return save_random_run(tmp_path_factory.mktemp("linsep_flags") / "run", 0)


@pytest.fixture
def tiny_data(tiny_corpus):
    data = build_datasets(tiny_corpus, ".flac", str(tiny_corpus / "train_split.txt"),
                          str(tiny_corpus / "val_split.txt"),
                          str(tiny_corpus / "converted_aligned_phones.txt"), 3200,
                          n_process_loader=2)
    yield data
    data.close()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def test_unfrozen_updates_the_model_and_the_probe_loss_falls(tiny_run, tiny_data, tmp_path):
    model = loadModel([str(tiny_run)])[0]
    before = _state(model)
    config = ProbeConfig(n_epochs=3, batch_size=8, lr=1e-2, save_step=2, unfrozen=True,
                         model_lr=1e-3)
    result = finetune_probe("speaker", model, tiny_data.train, tiny_data.val,
                            n_classes=len(tiny_data.speakers), config=config,
                            device=torch.device("cpu"), checkpoint_dir=tmp_path)
    losses = [record["train_loss"] for record in result.history]
    assert losses[-1] < losses[0]
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["best_probe.pt", "probe_epoch_1.pt", "probe_epoch_2.pt"]
    tuned = torch.load(tmp_path / "probe_epoch_2.pt", weights_only=True)["model"]
    changed = [key for key, value in tuned.items() if not torch.equal(value, before[key])]
    assert any(key.startswith("gEncoder") for key in changed)
    assert any(key.startswith("gAR") for key in changed)


def test_frozen_probes_leave_the_model_untouched(tiny_run, tiny_data, tmp_path):
    model = loadModel([str(tiny_run)])[0]
    before = _state(model)
    run_probes(model, tiny_data.train, tiny_data.val, probes=["speaker", "phone"],
               n_speakers=len(tiny_data.speakers), n_phones=tiny_data.n_phones,
               config=ProbeConfig(n_epochs=2), device=torch.device("cpu"), extract_batch_size=8,
               checkpoint_dir=tmp_path)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    assert "model" not in torch.load(tmp_path / "phone" / "best_probe.pt", weights_only=True)


def _positional(corpus) -> list[str]:
    return [str(corpus), str(corpus / "train_split.txt"), str(corpus / "val_split.txt")]


def test_cpc_audio_command_lines_run_unchanged(tiny_corpus, tiny_run, tmp_path, capsys):
    """CPC_audio README's speaker and phone lines, then its other flags."""
    checkpoint = str(tiny_run / "checkpoint_0.pt")
    phones = str(tiny_corpus / "converted_aligned_phones.txt")
    speaker = _positional(tiny_corpus) + [checkpoint, "--pathCheckpoint", str(tmp_path / "spk")]
    assert linsep.main(speaker + ["--n_epoch", "1"]) == 0
    assert linsep.main(_positional(tiny_corpus) + [checkpoint, "--pathCheckpoint",
                                                   str(tmp_path / "ph"), "--pathPhone", phones,
                                                   "--n_epoch", "1"]) == 0
    assert "phone (frame acc)" in capsys.readouterr().out
    out = tmp_path / "flags"
    assert linsep.main(_positional(tiny_corpus) + [
        checkpoint, "--pathCheckpoint", str(out), "--n_epoch", "2", "--size_window", "3200",
        "--nGPU", "0", "--debug", "--ignore_cache", "--save_step", "1", "--no_pretraining",
        "--unfrozen", "--batchSizeGPU", "8", "--lr", "2e-4"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["features"] == "random_init" and result["unfrozen"] is True
    assert (out / "probes" / "speaker" / "probe_epoch_0.pt").is_file()
    assert (out / "probes" / "speaker_mean" / "probe_epoch_1.pt").is_file()
    err = capsys.readouterr().err
    assert "--n_epoch is deprecated; use --nEpoch" in err
    assert "--size_window is deprecated; use --sizeWindow" in err


@pytest.mark.parametrize("flags, message", [
    (["--nGPU", "2"], "--nGPU 2: the probes run on one device; give --nGPU 1"),
    (["--nGPU", "1", "--device", "cpu"], "--nGPU 1 contradicts --device cpu"),
    (["--features", "mfcc", "--no_pretraining"], "--features mfcc has none"),
    (["--features", "mfcc", "--unfrozen"], "--unfrozen fine-tunes a model"),
    (["--save_step", "2"], "--save_step saves probes under --out: give --out"),
    (["--save_step", "-1", "--out", "o"], "--save_step must be 0"),
])
def test_flags_that_cannot_act_are_refused(flags, message):
    args = linsep.parse_args(["DB", "train.txt", "val.txt", "ckpt.pt"] + flags)
    with pytest.raises(linsep.ConfigError, match=re.escape(message)):
        linsep.check_args(args)


@pytest.mark.parametrize("ngpu, device, expected", [
    (None, "auto", "auto"), ("-1", "cpu", "cpu"), ("0", "auto", "cpu"), ("1", "auto", "cuda")])
def test_ngpu_maps_onto_the_device(ngpu, device, expected):
    flags = [] if ngpu is None else ["--nGPU", ngpu]
    args = linsep.parse_args(["DB", "t", "v", "--device", device] + flags)
    linsep.check_args(args)
    assert linsep.probe_device(args) == expected
