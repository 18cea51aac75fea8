"""Checkpoint loading (our layout and CPC_audio's) and file-level feature extraction."""
import argparse
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from cpc.utils.errors import DataError
import torch.nn as nn
import torch.nn.functional as F

from cpc.feature_loader import (ConcatenatedModel, FeatureModule, buildFeature, getCheckpointData,
                                loadArgs, loadModel)
from cpc.model import build_model
from cpc.options import complete_with_defaults
from cpc.utils.errors import CheckpointError


def tiny_args(**overrides) -> argparse.Namespace:
    values = dict(hiddenEncoder=16, hiddenGar=12, nLevelsGRU=1, arMode="LSTM", normMode="layerNorm",
                  encoder_type="cpc", sizeWindow=20480, abspos=False, cpc_mode=None, nPredicts=12,
                  negativeSamplingExt=128, rnnMode="transformer", dropout=False, load=None)
    values.update(overrides)
    return complete_with_defaults(values)


def save_run(run_dir, args, states: dict[int, dict], logs: dict | None = None) -> None:
    """Our layout: checkpoint_<epoch>.pt dicts beside checkpoint_args.json (+ logs)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for epoch, model_state in states.items():
        torch.save({"gEncoder": model_state, "cpcCriterion": {}, "optimizer": {"state": {}, "param_groups": []},
                    "epoch": epoch}, run_dir / f"checkpoint_{epoch}.pt")
    (run_dir / "checkpoint_args.json").write_text(json.dumps(vars(args)))
    if logs is not None:
        (run_dir / "checkpoint_logs.json").write_text(json.dumps(logs))


def save_random_run(run_dir, epoch: int, **overrides):
    """A run directory holding a small model's checkpoint_<epoch>.pt (seeded random weights;
    ``overrides``: architecture options other than tiny_args')."""
    torch.manual_seed(0)
    args = tiny_args(**overrides)
    save_run(run_dir, args, {epoch: build_model(args).state_dict()})
    return run_dir


def write_wav(path, n_samples: int, seed: int = 0, sample_rate: int = 16000, channels: int = 1) -> torch.Tensor:
    audio = np.random.default_rng(seed).uniform(-0.5, 0.5, (n_samples, channels)).astype(np.float32)
    sf.write(path, audio, sample_rate, subtype="FLOAT")
    return torch.from_numpy(audio[:, 0].copy())


@pytest.fixture
def run(tmp_path):
    torch.manual_seed(0)
    args = tiny_args()
    old, new = build_model(args), build_model(args)
    save_run(tmp_path / "run", args, {2: old.state_dict(), 10: new.state_dict()}, logs={"epoch": [0, 1]})
    return tmp_path / "run", new.eval()


def test_get_checkpoint_data_picks_the_highest_epoch(run, tmp_path):
    run_dir, _ = run
    checkpoint, logs, args = getCheckpointData(run_dir)
    assert checkpoint.endswith("checkpoint_10.pt") and logs == {"epoch": [0, 1]}
    assert args.hiddenEncoder == 16 and args.arMode == "LSTM"
    (run_dir / "checkpoint_logs.json").unlink()
    assert getCheckpointData(run_dir)[1] == {}
    assert getCheckpointData(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert getCheckpointData(tmp_path / "empty") is None


def test_load_args_from_path_or_dict(run):
    run_dir, _ = run
    assert loadArgs(run_dir / "checkpoint_args.json").hiddenGar == 12
    assert loadArgs({"arMode": "GRU"}).arMode == "GRU"


@pytest.mark.parametrize("as_directory", [True, False])
def test_load_model_round_trip(run, as_directory):
    run_dir, reference = run
    path = run_dir if as_directory else run_dir / "checkpoint_10.pt"
    model, hidden_gar, hidden_encoder = loadModel([str(path)])
    assert (hidden_gar, hidden_encoder) == (12, 16)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    fresh, _, _ = loadModel([str(path)], loadStateDict=False)
    assert not torch.equal(fresh.gEncoder.conv0.weight, reference.gEncoder.conv0.weight)


def test_build_feature_equals_direct_model_output(run, tmp_path):
    run_dir, _ = run
    model = loadModel([str(run_dir)], device="cpu")[0].eval()
    audio = write_wav(tmp_path / "a.wav", 4000)
    with torch.no_grad():
        c, z, _ = model(audio.view(1, 1, -1))
    context = buildFeature(FeatureModule(model, get_encoded=False), tmp_path / "a.wav")
    encoded = buildFeature(FeatureModule(model, get_encoded=True), tmp_path / "a.wav")
    assert context.shape == (1, 25, 12) and torch.allclose(context, c, atol=1e-6)
    assert torch.allclose(encoded, z, atol=1e-6)


def test_build_feature_chunking_matches_cpc_audio(run, tmp_path):
    model = run[1]
    audio = write_wav(tmp_path / "a.wav", 4000)
    features = FeatureModule(model, get_encoded=False)
    assert features.getDownsamplingFactor() == 160
    with torch.no_grad():
        chunk = lambda a, b: model(audio[a:b].view(1, 1, -1))[0]
        loose = torch.cat([chunk(0, 1600), chunk(1600, 3200), chunk(3200, 4000)], dim=1)
        strict = torch.cat([chunk(0, 1600), chunk(1600, 3200), chunk(2400, 4000)[:, -5:]], dim=1)
    assert torch.allclose(buildFeature(features, tmp_path / "a.wav", maxSizeSeq=1600), loose, atol=1e-6)
    strict_out = buildFeature(features, tmp_path / "a.wav", strict=True, maxSizeSeq=1600)
    assert strict_out.shape == (1, 25, 12) and torch.allclose(strict_out, strict, atol=1e-6)
    normed = buildFeature(features, tmp_path / "a.wav", maxSizeSeq=1600, seqNorm=True)
    assert torch.allclose(normed[:, :10].mean(dim=1), torch.zeros(12), atol=1e-5)
    assert torch.allclose(normed[:, :10].std(dim=1), torch.ones(12), atol=1e-3)


def test_feature_module_collapse(run):
    out = FeatureModule(run[1], get_encoded=True, collapse=True)(torch.randn(2, 1, 1600))
    assert out.shape == (20, 16)


def test_build_feature_rejects_other_rates_and_averages_stereo(run, tmp_path):
    path = tmp_path / "bad.wav"
    write_wav(path, 1600, sample_rate=8000)
    with pytest.raises(DataError, match="bad.wav is sampled at 8000 Hz"):
        buildFeature(FeatureModule(run[1], get_encoded=False), path)
    write_wav(path, 1600, channels=2)
    with pytest.warns(UserWarning, match="averaging them to mono"):
        assert buildFeature(FeatureModule(run[1], get_encoded=False), path).shape[1] == 10


def test_several_checkpoints_give_a_concatenated_model(run, tmp_path):
    torch.manual_seed(1)
    other_args = tiny_args(arMode="GRU", hiddenGar=8, encoder_type="mfcc", hiddenEncoder=10)
    other = build_model(other_args)
    save_run(tmp_path / "other", other_args, {0: other.state_dict()})
    model, hidden_gar, hidden_encoder = loadModel([str(run[0]), str(tmp_path / "other")])
    assert isinstance(model, ConcatenatedModel) and (hidden_gar, hidden_encoder) == (20, 26)
    c = FeatureModule(model, get_encoded=False)(torch.randn(1, 1, 1759))
    assert c.shape == (1, 10, 20)  # cpc gives 11 frames for 1759 samples, mfcc 10: cut to the shorter


def test_fine_tuned_run_takes_its_architecture_from_the_loaded_checkpoint(tmp_path):
    base_args = tiny_args(arMode="GRU")
    base = build_model(base_args)
    save_run(tmp_path / "base", base_args, {3: base.state_dict()})
    tuned_args = tiny_args(load=[str(tmp_path / "base" / "checkpoint_3.pt")])  # says LSTM, built as GRU
    save_run(tmp_path / "tuned", tuned_args, {0: base.state_dict()})
    assert loadModel([str(tmp_path / "tuned")])[0].gAR.mode == "GRU"
    tuned_args.load = ["/elsewhere/run/checkpoint_3.pt"]  # copied from another machine: own args used
    lstm = build_model(tuned_args)
    save_run(tmp_path / "copied", tuned_args, {0: lstm.state_dict()})
    assert loadModel([str(tmp_path / "copied")])[0].gAR.mode == "LSTM"


# ------------------------------------------------- a CPC_audio checkpoint, written by a reference re-implementation


class RefChannelNorm(nn.Module):
    """CPC_audio's ChannelNorm: per frame over channels, unbiased variance, eps 1e-5, (1, C, 1) affine."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(1, channels, 1) + 0.5)
        self.bias = nn.Parameter(torch.randn(1, channels, 1))

    def forward(self, x):
        centred = x - x.mean(dim=1, keepdim=True)
        var = centred.pow(2).sum(dim=1, keepdim=True) / (x.shape[1] - 1)
        return centred / torch.sqrt(var + 1e-5) * self.weight + self.bias


class RefEncoder(nn.Module):
    def __init__(self, dim):
        super().__init__()
        specs = [(1, 10, 5, 3), (dim, 8, 4, 2), (dim, 4, 2, 1), (dim, 4, 2, 1), (dim, 4, 2, 1)]
        for i, (channels_in, kernel, stride, padding) in enumerate(specs):
            setattr(self, f"conv{i}", nn.Conv1d(channels_in, dim, kernel, stride=stride, padding=padding))
            setattr(self, f"batchNorm{i}", RefChannelNorm(dim))

    def forward(self, x):
        for i in range(5):
            x = F.relu(getattr(self, f"batchNorm{i}")(getattr(self, f"conv{i}")(x)))
        return x


class RefAR(nn.Module):
    def __init__(self, dim_in, dim_out, levels):
        super().__init__()
        self.baseNet = nn.LSTM(dim_in, dim_out, num_layers=levels, batch_first=True)


class RefCPCModel(nn.Module):
    def __init__(self, dim_encoder, dim_ar, levels):
        super().__init__()
        self.gEncoder = RefEncoder(dim_encoder)
        self.gAR = RefAR(dim_encoder, dim_ar, levels)

    def forward(self, audio):
        encoded = self.gEncoder(audio).permute(0, 2, 1)
        return self.gAR.baseNet(encoded)[0], encoded


def cpc_audio_args(run_dir) -> dict:
    """Typical keys of a CPC_audio checkpoint_args.json (cpc_default_config + train.py flags)."""
    return {
        "hiddenEncoder": 24, "hiddenGar": 20, "nPredicts": 12, "negativeSamplingExt": 128,
        "learningRate": 0.0002, "schedulerStep": -1, "schedulerRamp": 10, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 1e-08, "sizeWindow": 20480, "nEpoch": 200, "samplingType": "samespeaker",
        "nLevelsPhone": 1, "cpc_mode": None, "encoder_type": "cpc", "normMode": "layerNorm",
        "onEncoder": False, "random_seed": 1234, "adversarial": False, "speakerEmbedding": 0,
        "arMode": "LSTM", "nLevelsGRU": 2, "rnnMode": "transformer", "dropout": True, "abspos": False,
        "clustering": None, "n_clusters": 200, "cluster_delay": 0, "cluster_iter": 100,
        "clustering_update": "kmean", "pathDB": "/datasets/LibriSpeech/train-clean-100",
        "file_extension": ".flac", "pathTrain": "/datasets/train_split.txt",
        "pathVal": "/datasets/test_split.txt", "n_process_loader": 8, "ignore_cache": False,
        "max_size_loaded": 4000000000, "supervised": False, "pathPhone": None, "CTC": False,
        "pathCheckpoint": str(run_dir / "checkpoint"), "logging_step": 1000, "save_step": 5,
        "load": [str(run_dir / "checkpoint_45.pt")], "loadCriterion": True, "restart": False,
        "nGPU": 8, "batchSizeGPU": 16, "debug": False,
    }


def test_cpc_audio_checkpoint_loads_with_identical_features(tmp_path):
    torch.manual_seed(0)
    reference = RefCPCModel(24, 20, 2).eval()
    run_dir = tmp_path / "cpc_audio_run"
    run_dir.mkdir()
    optimizer_state = {"state": {}, "param_groups": [{"lr": 0.0002, "betas": (0.9, 0.999), "eps": 1e-08,
                                                      "weight_decay": 0, "amsgrad": False, "params": [0, 1]}]}
    torch.save({"gEncoder": reference.state_dict(), "cpcCriterion": {"wPrediction.predictors.0.weight": torch.zeros(2)},
                "optimizer": optimizer_state, "best": reference.state_dict()}, run_dir / "checkpoint_50.pt")
    (run_dir / "checkpoint_args.json").write_text(json.dumps(cpc_audio_args(run_dir)))
    (run_dir / "checkpoint_logs.json").write_text(json.dumps({"epoch": list(range(51)), "saveStep": 5}))

    model, hidden_gar, hidden_encoder = loadModel([str(run_dir / "checkpoint_50.pt")])
    assert (hidden_gar, hidden_encoder) == (20, 24)
    model.eval()
    audio = write_wav(tmp_path / "utt.wav", 3300)
    with torch.no_grad():
        expected_c, expected_z = reference(audio.view(1, 1, -1))
    assert torch.allclose(buildFeature(FeatureModule(model, get_encoded=False), tmp_path / "utt.wav"), expected_c, atol=1e-5)
    assert torch.allclose(buildFeature(FeatureModule(model, get_encoded=True), tmp_path / "utt.wav"), expected_z, atol=1e-5)


def test_build_feature_ignores_a_tail_shorter_than_one_frame(run, tmp_path):
    path = tmp_path / "tail.wav"
    write_wav(path, 3200 + 100)  # two chunks of 1600 samples and a 100-sample tail
    features = buildFeature(FeatureModule(run[1], get_encoded=False), path, maxSizeSeq=1600)
    assert features.shape[1] == 20


def test_a_checkpoint_copied_alone_rebuilds_its_model_from_its_model_args(tmp_path):
    """Our checkpoints hold the options that built the model (a transformer's position table
    depends on sizeWindow): the file loads without its run's checkpoint_args.json."""
    torch.manual_seed(0)
    args = tiny_args(arMode="transformer", hiddenGar=16, abspos=True, sizeWindow=3200,
                     cpc_mode="reverse", nLevelsGRU=2)
    model = build_model(args).eval()
    assert model.model_args["sizeWindow"] == 3200 and model.model_args["abspos"] is True
    alone = tmp_path / "copied" / "checkpoint_7.pt"
    alone.parent.mkdir()
    torch.save({"gEncoder": model.state_dict(), "model_args": model.model_args, "epoch": 7}, alone)
    loaded, dim_context, dim_encoded = loadModel([str(alone)])
    assert (dim_context, dim_encoded) == (16, 16) and loaded.gAR.reverse
    assert loaded.model_args == model.model_args
    audio = torch.randn(1, 1, 3200)
    assert torch.equal(loaded.eval()(audio)[0], model(audio)[0])


def test_a_checkpoint_without_model_args_is_built_from_the_args_beside_it(run, tmp_path):
    """Older checkpoints (and CPC_audio's) hold no model_args: checkpoint_args.json gives the
    architecture, and without it the file cannot be loaded."""
    run_dir, model = run
    assert "model_args" not in torch.load(run_dir / "checkpoint_10.pt", weights_only=True)
    assert loadModel([str(run_dir / "checkpoint_10.pt")])[0].model_args == model.model_args
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "checkpoint_10.pt").write_bytes((run_dir / "checkpoint_10.pt").read_bytes())
    with pytest.raises(CheckpointError, match="lacks checkpoint_args.json"):
        loadModel([str(alone / "checkpoint_10.pt")])
