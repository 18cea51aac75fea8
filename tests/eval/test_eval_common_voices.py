"""common_voices_eval: CTC phone recognition on a checkpoint's features, CPC_audio's command
lines, its flags, and bad input. The corpus is the tiny one re-encoded as a flat directory of
.mp3 clips (Common Voice's layout), with phone sequences collapsed from its aligned labels."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from cpc.eval import common_voices_eval as cv
from cpc.eval.phone_recognition import normalise_over_time
from cpc.feature_loader import loadModel
from cpc.model import build_model
from tests.model.test_feature_loader import save_run, tiny_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def voices(tiny_corpus, tmp_path_factory) -> dict[str, Path]:
    """Clips, phone sequences, splits and a small model's checkpoint (random weights)."""
    root = tmp_path_factory.mktemp("voices")
    clips = root / "clips"
    clips.mkdir()
    for flac in tiny_corpus.rglob("*.flac"):
        data, rate = sf.read(flac)
        sf.write(clips / f"{flac.stem}.mp3", data, rate)
    lines = []
    for line in (tiny_corpus / "converted_aligned_phones.txt").read_text().splitlines():
        stem, *ids = line.split()
        runs = [p for i, p in enumerate(ids) if i == 0 or ids[i - 1] != p]
        lines.append(" ".join([stem, *runs]))
    (root / "phones.txt").write_text("\n".join(lines) + "\n")
    run = root / "run"
    torch.manual_seed(0)
    args = tiny_args()
    save_run(run, args, {0: build_model(args).state_dict()})
    return {"clips": clips, "phones": root / "phones.txt", "checkpoint": run / "checkpoint_0.pt",
            "train": tiny_corpus / "train_split.txt", "val": tiny_corpus / "val_split.txt"}


def test_cpc_audio_readme_command_lines_run_unchanged(voices, tmp_path, capsys):
    out = tmp_path / "out"
    assert cv.main(["train", str(voices["clips"]), str(voices["phones"]),
                    str(voices["checkpoint"]), "--pathTrain", str(voices["train"]),
                    "--pathVal", str(voices["train"]), "--freeze", "-o", str(out),
                    "--nEpochs", "4", "--lr", "2e-3"]) == 0
    history = json.loads((out / "logs_train.json").read_text())
    assert [record["epoch"] for record in history] == [0, 1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    original = loadModel([str(voices["checkpoint"])])[0].state_dict()
    assert all(torch.equal(value, original[key]) for key, value in state["model"].items())
    capsys.readouterr()
    # README's `per` line, run as CPC_audio ran it: a script path, not -m
    done = subprocess.run([sys.executable, "cpc/eval/common_voices_eval.py", "per", str(out),
                           "--pathVal", str(voices["val"]), "--pathPhone", str(voices["phones"])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "PER " in done.stdout and "greedy decoding" in done.stdout
    result = json.loads((out / "per_0.json").read_text())
    assert 0 <= result["per"] and result["decoding"] == "greedy"


def test_fine_tuning_updates_the_model_and_beam_decoding_scores(voices, tmp_path):
    out = tmp_path / "tuned"
    assert cv.main(["train", str(voices["clips"]), str(voices["phones"]),
                    str(voices["checkpoint"]), "--pathTrain", str(voices["train"]),
                    "--nEpoch", "2", "--lr", "1e-3", "-o", str(out), "--LSTM", "--seqNorm",
                    "--dropout", "--kernelSize", "4", "--loss_reduction", "sum", "--debug",
                    "--batchSize", "4", "--device", "cpu"]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    original = loadModel([str(voices["checkpoint"])])[0].state_dict()
    changed = {key.split(".")[0] for key, value in state["model"].items()
               if not torch.equal(value, original[key])}
    assert changed == {"gEncoder", "gAR"}
    assert cv.main(["per", str(out), "--pathVal", str(voices["val"]), "--decoding", "beam",
                    "--beam_width", "4", "--name", "beam", "--debug"]) == 0
    result = json.loads((out / "per_beam.json").read_text())
    assert result["decoding"] == "beam" and result["n_utterances"] > 0


def test_untrained_encoded_features_train(voices, tmp_path, capsys):
    out = tmp_path / "random"
    assert cv.main(["train", str(voices["clips"]), str(voices["phones"]),
                    str(voices["checkpoint"]), "--freeze", "--no_pretraining", "--get_encoded",
                    "--nEpochs", "1", "-o", str(out)]) == 0
    args = json.loads((out / "args_training.json").read_text())
    assert args["no_pretraining"] and args["get_encoded"]
    assert cv.main(["per", str(out)]) == 2  # no --pathVal then, none now: nothing to test on
    assert "give the test stems with --pathVal" in capsys.readouterr().err
    assert cv.main(["per", str(out), "--pathVal", str(voices["val"])]) == 0


def test_unreadable_audio_is_refused_naming_the_file(voices, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    for clip in sorted(voices["clips"].iterdir())[:3]:
        (clips / clip.name).write_bytes(clip.read_bytes())
    broken = clips / "broken.mp3"
    broken.write_bytes(b"not audio at all")
    phones = tmp_path / "phones.txt"
    phones.write_text(voices["phones"].read_text() + "broken 1 2 3\n")
    assert cv.main(["train", str(clips), str(phones), str(voices["checkpoint"]),
                    "-o", str(tmp_path / "out"), "--nEpochs", "1"]) == 2
    assert f"cannot read audio file {broken}" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--in_dim", "2"], "pre-computed features are not read here"),
    (["--nEpochs", "0"], "--nEpochs must be at least 1"),
    (["--kernelSize", "1"], "--kernelSize must be at least 2"),
    (["--pathTrain", "MISSING"], "split list MISSING does not exist"),
])
def test_bad_training_flags_are_refused(voices, tmp_path, capsys, flags, message):
    assert cv.main(["train", str(voices["clips"]), str(voices["phones"]),
                    str(voices["checkpoint"]), "-o", str(tmp_path / "o")] + flags) == 2
    assert message in capsys.readouterr().err


def test_bad_phone_file_and_run_directory_are_refused(voices, tmp_path, capsys):
    assert cv.main(["train", str(voices["clips"]), str(tmp_path / "none.txt"), "ID",
                    "-o", str(tmp_path / "o")]) == 2
    assert "pathCheckpoint ID" in capsys.readouterr().err
    assert cv.main(["train", str(voices["clips"]), str(tmp_path / "none.txt"),
                    str(voices["checkpoint"]), "-o", str(tmp_path / "o")]) == 2
    assert f"pathPhone {tmp_path / 'none.txt'} does not exist" in capsys.readouterr().err
    assert cv.main(["per", str(tmp_path)]) == 2
    assert "holds no args_training.json" in capsys.readouterr().err
    (tmp_path / "args_training.json").write_text(json.dumps(
        {"pathDB": str(voices["clips"]), "file_extension": ".mp3", "pathPhone": None,
         "pathVal": str(voices["val"])}))
    assert cv.main(["per", str(tmp_path), "--pathPhone", str(voices["phones"])]) == 2
    assert f"{tmp_path / 'checkpoint.pt'} does not exist" in capsys.readouterr().err


def test_sequence_normalisation_ignores_the_padding():
    features = torch.randn(2, 6, 3)
    padded = features.clone()
    padded[0, 4:] = 1e3
    normalised = normalise_over_time(padded, torch.tensor([4, 6]))
    assert torch.allclose(normalised[0, :4], normalise_over_time(features[:1, :4],
                                                                 torch.tensor([4]))[0])
    assert torch.allclose(normalised[1], normalise_over_time(features[1:], torch.tensor([6]))[0])
