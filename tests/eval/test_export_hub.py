"""Feature export (ZeroSpeech layout, formats, resume, AR levels) and the s3prl-style upstream."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from cpc.data.labels import parseSeqLabels
from cpc.data.splits import read_split_list
from cpc.utils.errors import DataError
from cpc.eval import ABX
from cpc.eval import build_zeroSpeech_features as export
from cpc.eval.make_abx_items import make_items, read_phone_symbols, write_item_file
from cpc.feature_loader import FeatureModule, buildFeature
from cpc.hub import CPCUpstream, LayerFeatureModule, cpc_upstream, model_layers
from cpc.model import build_model
from tests.model.test_feature_loader import save_random_run, save_run, tiny_args, write_wav


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory holding a 2-layer LSTM model (random weights)."""
    return save_random_run(tmp_path_factory.mktemp("export_run") / "run", 5, nLevelsGRU=2)


@pytest.fixture
def audio_dir(tmp_path):
    """Three wavs in nested folders (ZeroSpeech subsets are flat, LibriSpeech is not)."""
    (tmp_path / "db" / "a" / "b").mkdir(parents=True)
    write_wav(tmp_path / "db" / "u1.wav", 3000, seed=1)
    write_wav(tmp_path / "db" / "a" / "u2.wav", 4100, seed=2)
    write_wav(tmp_path / "db" / "a" / "b" / "u3.wav", 1700, seed=3)
    return tmp_path / "db"


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_export_formats_round_trip_flat_layout(run_dir, audio_dir, tmp_path, fmt):
    out = tmp_path / "out"
    assert export.main([str(audio_dir), str(out), str(run_dir), "--file_extension", ".wav",
                        "--format", fmt, "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"u{i}.{fmt}" for i in (1, 2, 3)]
    maker = export.build_feature_maker(str(run_dir))
    expected = buildFeature(maker, audio_dir / "a" / "u2.wav")[0].numpy()
    got = export.read_features(out / f"u2.{fmt}")
    assert got.shape == expected.shape == (25, 12)
    np.testing.assert_array_equal(got, expected)  # txt keeps 9 significant digits: exact in float32
    if fmt == "npz":
        with np.load(out / "u2.npz") as archive:
            np.testing.assert_allclose(archive["time"][:2], [0.005, 0.015])
            assert archive["totTime"][0] == pytest.approx(0.25)
    if fmt == "txt":
        lines = (out / "u2.txt").read_text().splitlines()
        assert len(lines) == 25 and len(lines[0].split()) == 12


def test_export_resumes_and_overwrites(run_dir, audio_dir, tmp_path, capsys):
    out = tmp_path / "out"
    command = [str(audio_dir), str(out), str(run_dir), "--file_extension", ".wav", "--device", "cpu"]
    assert export.main(command) == 0
    marker = np.zeros((2, 2), np.float32)
    np.save(out / "u1.npy", marker)
    (out / "u3.npy").unlink()
    assert export.main(command) == 0
    assert "1 files written, 2 already there" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out / "u1.npy"), marker)
    assert export.main(command + ["--overwrite"]) == 0
    assert np.load(out / "u1.npy").shape == (18, 12)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_export_gru_level_and_encoded(run_dir, audio_dir, tmp_path):
    model = export.build_feature_maker(str(run_dir)).featureMaker
    with torch.no_grad():
        audio = torch.from_numpy(sf.read(audio_dir / "u1.wav", dtype="float32")[0])
        layers = model_layers(model, audio.view(1, 1, -1))
    assert [layer.shape[-1] for layer in layers] == [16, 12, 12]
    for flag, expected in ((["--gru_level", "1"], layers[1]), (["--gru_level", "2"], layers[2]),
                           (["--get_encoded"], layers[0])):
        out = tmp_path / "_".join(flag)
        assert export.main([str(audio_dir), str(out), str(run_dir), "--file_extension", ".wav",
                            "--device", "cpu", *flag]) == 0
        np.testing.assert_allclose(np.load(out / "u1.npy"), expected[0].numpy(), atol=1e-6)
    assert not torch.allclose(layers[1], layers[2])


def test_export_errors(run_dir, audio_dir, tmp_path, capsys):
    base = [str(audio_dir), str(tmp_path / "o"), str(run_dir), "--file_extension", ".wav"]
    assert export.main(base + ["--gru_level", "3"]) == 2
    assert "context network has 2 layer(s)" in capsys.readouterr().err
    assert export.main(base + ["--gru_level", "1", "--get_encoded"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    write_wav(audio_dir / "a" / "b" / "u1.wav", 1600)
    assert export.main(base) == 2
    assert "have the stem 'u1'" in capsys.readouterr().err
    assert export.main([str(tmp_path / "nowhere"), str(tmp_path / "o"), str(run_dir)]) == 2
    assert "does not exist" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros(3))
    with pytest.raises(DataError, match="expected frames x dims"):
        export.read_features(tmp_path / "bad.npy")


def test_layer_module_checks_the_level(run_dir):
    model = export.build_feature_maker(str(run_dir)).featureMaker
    assert LayerFeatureModule(model, 0).getDownsamplingFactor() == 160
    with pytest.raises(ValueError, match="layer 3 does not exist"):
        LayerFeatureModule(model, 3)


def test_exported_features_give_the_checkpoint_abx(run_dir, tiny_corpus, tmp_path):
    """from_pre_computed on exported features == from_checkpoint (a few files, for speed)."""
    stems = read_split_list(tiny_corpus / "train_split.txt")[:8]
    labels, _ = parseSeqLabels(tiny_corpus / "converted_aligned_phones.txt")
    item = tmp_path / "few.item"
    write_item_file(item, make_items(labels, read_phone_symbols(tiny_corpus / "phones.txt"), stems))
    audio = tmp_path / "audio"
    audio.mkdir()
    for path in tiny_corpus.rglob("*.flac"):
        if path.stem in stems:
            (audio / path.name).symlink_to(path)
    assert export.main([str(audio), str(tmp_path / "feats"), str(run_dir), "--device", "cpu"]) == 0
    assert ABX.main(["from_pre_computed", str(tmp_path / "feats"), str(item), "--mode", "across",
                     "--out", str(tmp_path / "pre")]) == 0
    assert ABX.main(["from_checkpoint", str(run_dir), str(item), str(audio), "--mode", "across",
                     "--out", str(tmp_path / "ckpt")]) == 0
    pre = json.loads((tmp_path / "pre" / "ABX_scores.json").read_text())
    assert pre == json.loads((tmp_path / "ckpt" / "ABX_scores.json").read_text())
    assert 0 < pre["across"] < 1


# ------------------------------------------------------------------ upstream


def test_upstream_pads_the_batch_and_matches_single_runs(run_dir):
    upstream = cpc_upstream(str(run_dir))
    assert isinstance(upstream, CPCUpstream) and not upstream.training
    assert upstream.get_downsample_rates("hidden_states") == 160
    torch.manual_seed(1)
    wavs = [torch.randn(4000), torch.randn(2500)]
    with torch.no_grad():
        out = upstream(wavs)
        alone = [model_layers(upstream.model, wav.view(1, 1, -1)) for wav in wavs]
    hidden = out["hidden_states"]
    assert [tuple(h.shape) for h in hidden] == [(2, 25, 16), (2, 25, 12), (2, 25, 12)]
    assert out["last_hidden_state"] is hidden[-1] and out["hidden_state_0"] is hidden[0]
    for layer, single in zip(hidden, zip(*alone)):
        torch.testing.assert_close(layer[0], single[0][0], atol=1e-5, rtol=1e-5)
        # The short wav: ceil(2500 / 160) = 16 valid frames (s3prl's count); the last ones see
        # the padding through the encoder.
        torch.testing.assert_close(layer[1, :12], single[1][0, :12], atol=1e-5, rtol=1e-5)
        assert torch.all(layer[1, 16:] == 0) and torch.any(layer[1, 15] != 0)


def test_upstream_runs_reversed_models_one_wav_at_a_time(tmp_path):
    torch.manual_seed(0)
    args = tiny_args(cpc_mode="reverse", arMode="GRU")
    save_run(tmp_path / "rev", args, {0: build_model(args).state_dict()})
    upstream = CPCUpstream(str(tmp_path / "rev" / "checkpoint_0.pt"))
    assert not upstream.padding_safe
    wavs = [torch.randn(3200), torch.randn(1600)]
    with torch.no_grad():
        out = upstream(wavs)["hidden_states"]
        short = FeatureModule(upstream.model, get_encoded=False)(wavs[1].view(1, 1, -1))
    torch.testing.assert_close(out[-1][1, :10], short[0], atol=1e-6, rtol=1e-6)
    assert torch.all(out[-1][1, 10:] == 0)


@pytest.mark.parametrize("lengths", [[2500], [4000, 2500, 1601, 159], [3200, 3199, 3201]])
def test_upstream_keeps_s3prl_frame_count(run_dir, lengths):
    """Frames t < ceil(len / 160) are valid (s3prl's S3PRLUpstream count), the others zero; the
    batch has ceil(longest / 160) frames."""
    upstream = CPCUpstream(str(run_dir))
    torch.manual_seed(2)
    with torch.no_grad():
        hidden = upstream([torch.randn(n) for n in lengths])["hidden_states"]
    valid = [-(-n // 160) for n in lengths]
    for layer in hidden:
        assert layer.shape[1] == max(valid)
        for row, n_frames in enumerate(valid):
            assert torch.all(layer[row, n_frames:] == 0)
            assert torch.all(layer[row, :n_frames].abs().sum(dim=-1) > 0)


def test_upstream_measures_its_minimum_length(run_dir, tmp_path):
    upstream = CPCUpstream(str(run_dir))
    assert upstream.min_samples == 159  # the CPC encoder's first frame: (S + 1) // 160 >= 1
    with torch.no_grad():
        assert upstream.model.gEncoder(torch.zeros(1, 1, 159)).shape[-1] == 1
        with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
            upstream.model.gEncoder(torch.zeros(1, 1, 158))  # no frame to make
    args = tiny_args(encoder_type="mfcc", hiddenEncoder=13, arMode="no_ar")
    save_run(tmp_path / "mfcc", args, {0: build_model(args).state_dict()})
    assert CPCUpstream(str(tmp_path / "mfcc")).min_samples == 160


@pytest.mark.parametrize("wavs, message", [
    (torch.zeros(2, 3200), "expects a list of 1-D waveform tensors, got a Tensor"),
    ([], "expects a list of 1-D waveform tensors, got an empty list"),
    ([torch.zeros(3200), torch.zeros(1, 3200)],
     r"wav 1 has shape \(1, 3200\): expected 1-D mono waveforms"),
    ([torch.zeros(3200, dtype=torch.int16)], r"wav 0 has dtype torch.int16: expected float"),
    ([torch.zeros(3200), torch.zeros(3200), torch.zeros(100)],
     "wav 2 has 100 samples: the model needs at least 159"),
    ([torch.zeros(3200), torch.cat([torch.zeros(7), torch.full((1600,), float("nan")),
                                    torch.full((2,), float("inf"))])],
     r"wav 1 holds 1600 NaN / 2 infinite samples \(first at sample 7\)"),
    ([[0.0] * 3200], "wav 0 is a list, not a torch.Tensor"),
])
def test_upstream_checks_its_input(run_dir, wavs, message):
    with pytest.raises(ValueError, match=message):
        CPCUpstream(str(run_dir))(wavs)


def test_upstream_converts_float64_to_float32(run_dir):
    upstream = CPCUpstream(str(run_dir))
    wav = torch.randn(3000, dtype=torch.float64)
    with torch.no_grad():
        out = upstream([wav])["last_hidden_state"]
        expected = upstream([wav.float()])["last_hidden_state"]
    assert out.dtype == torch.float32 and torch.equal(out, expected)
