"""build_zeroSpeech_features with CPC_audio's flags: --extension, --getEncoded, --maxSizeSeq,
--train_mode, --format fea (ZeroSpeech 2017 text), and --addCriterion refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cpc.eval import build_zeroSpeech_features as export
from cpc.feature_loader import buildFeature
from cpc.model import build_model
from tests.model.test_feature_loader import save_run, tiny_args, write_wav


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    args = tiny_args()
    run = tmp_path_factory.mktemp("zs_run") / "run"
    save_run(run, args, {1: build_model(args).state_dict()})
    return run


def test_cpc_audio_command_line_writes_zerospeech_2017_fea(run_dir, tmp_path):
    (tmp_path / "db").mkdir()
    write_wav(tmp_path / "db" / "u1.wav", 4100, seed=1)
    out = tmp_path / "out"
    assert export.main([str(tmp_path / "db"), str(out), str(run_dir), "--extension", ".wav",
                        "--getEncoded", "--maxSizeSeq", "16000", "--format", "fea"]) == 0
    rows = np.loadtxt(out / "u1.fea", ndmin=2)
    maker = export.build_feature_maker(str(run_dir), get_encoded=True)
    expected = buildFeature(maker, tmp_path / "db" / "u1.wav", maxSizeSeq=16000)[0].numpy()
    np.testing.assert_allclose(rows[:, 0], (np.arange(len(expected)) + 0.5) * 0.01)
    np.testing.assert_allclose(rows[:, 1:], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(export.read_features(out / "u1.fea"), expected, rtol=1e-6,
                               atol=1e-7)


def test_train_mode_and_add_criterion(run_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "db").mkdir()
    write_wav(tmp_path / "db" / "u1.wav", 3000, seed=2)
    modes = []
    original = export.export_features
    monkeypatch.setattr(export, "export_features",
                        lambda maker, *a, **k: modes.append(maker.training) or original(maker, *a, **k))
    for flags in ([], ["--train_mode"]):
        assert export.main([str(tmp_path / "db"), str(tmp_path / "o"), str(run_dir),
                            "--extension", ".wav", "--overwrite"] + flags) == 0
    assert modes == [False, True]
    assert export.main([str(tmp_path / "db"), str(tmp_path / "o2"), str(run_dir),
                        "--addCriterion"]) == 2
    assert "--addCriterion: these checkpoints hold no supervised phone classifier" in \
        capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
