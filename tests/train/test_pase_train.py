"""PASE through train.py: --config, every worker's loss falls, resume, keep-K, config errors."""
from __future__ import annotations

from pathlib import Path

import json

import pytest


from cpc import train
from cpc.utils import checkpoint as ckpt
from tests.train.test_train import corpus_args

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMALL_PASE = ["--sizeWindow", "4800", "--batchSizeGPU", "8", "--pase_stats_batches", "3",
              "--n_process_loader", "2", "--random_seed", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def short_split(tiny_corpus, tmp_path_factory):
    """Eight training files (two per speaker): a few PASE steps per epoch."""
    stems = (tiny_corpus / "train_split.txt").read_text().split()
    by_speaker: dict[str, list[str]] = {}
    for stem in stems:
        by_speaker.setdefault(stem.split("-")[0], []).append(stem)
    path = tmp_path_factory.mktemp("split") / "train.txt"
    path.write_text("\n".join(s for group in by_speaker.values() for s in group[:2]) + "\n")
    return path


def pase_args(tiny_corpus, short_split, run_dir, *extra) -> list[str]:
    args = corpus_args(tiny_corpus) + ["--config", REPO_CONFIGS / "pase.yaml",
                                       "--pathCheckpoint", run_dir, *SMALL_PASE, *extra]
    args[args.index("--pathTrain") + 1] = short_split
    return [str(a) for a in args]


def test_pase_recipe_lowers_every_worker_loss_and_resumes(tiny_corpus, short_split, tmp_path,
                                                          two_threads):
    run_dir = tmp_path / "run"
    assert train.main(pase_args(tiny_corpus, short_split, run_dir, "--nEpoch", "3",
                                "--keep_checkpoints", "2", "--save_step", "1")) == 0
    logs = json.loads((run_dir / "checkpoint_logs.json").read_text())
    workers = sorted(k[len("worker_"):-len("_train")] for k in logs if k.endswith("_train")
                     and k.startswith("worker_"))
    assert workers == ["gim", "lim", "lps", "mfcc", "prosody", "waveform"]
    for name in workers:
        losses = logs[f"worker_{name}_train"]
        assert losses[-1] < losses[0], (name, losses)
    assert [e for e, _ in ckpt.list_checkpoints(run_dir)] == [1, 2]  # keep-K (save every epoch)
    state = ckpt.load_checkpoint(run_dir / "checkpoint_2.pt")
    assert set(state["worker_optimizers"]) == {f"worker_{n}" for n in workers}
    assert float(state["workers"]["mfcc.stats_frames"]) > 0  # target stats estimated and saved
    assert len(logs["health_grad_workers"]) == 3 and len(logs["health_z_cos_across"]) == 3
    for name in workers:  # each worker's learning rate, logged per epoch
        assert len(logs[f"lr_worker_{name}"]) == 3 and logs[f"lr_worker_{name}"][0] > 0
    assert "health_score_margin" not in logs  # workers have no positive / negative scores
    saved = json.loads((run_dir / "checkpoint_args.json").read_text())
    assert saved["encoder_type"] == "pase" and saved["pase_qrnn"]
    # rerunning the command with more epochs resumes, workers and their optimisers included
    assert train.main(pase_args(tiny_corpus, short_split, run_dir, "--nEpoch", "4")) == 0
    assert json.loads((run_dir / "checkpoint_logs.json").read_text())["epoch"] == [0, 1, 2, 3]


def test_command_line_wins_over_the_config(tiny_corpus, short_split, tmp_path):
    from cpc.run_config import parse_args
    args, _ = parse_args(pase_args(tiny_corpus, short_split, tmp_path / "r", "--nEpoch", "1",
                                   "--hiddenEncoder", "64"))
    assert args.hiddenEncoder == 64 and args.encoder_type == "pase"  # flag wins, file fills
    assert args.samplingType == "uniform" and args.save_step == 10  # ckpt_save_interval


@pytest.mark.parametrize("content, message", [
    ("encoder_type: pase\nlearning_rate: 0.1\n", "unknown key(s) learning_rate"),
    ("chunk_size: 1000\n", "chunk_size 1000 must be a positive multiple of 160"),
    ("workers_config:\n  regressor:\n    pitch:\n", "pitch"),
])
def test_config_errors_are_one_line(tiny_corpus, tmp_path, capsys, content, message):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    argv = [str(a) for a in corpus_args(tiny_corpus) + ["--config", config, "--nEpoch", "1"]]
    assert train.main(argv) == 2
    assert message in capsys.readouterr().err


def test_spc_on_too_short_windows_is_an_error_not_silence(tiny_corpus, short_split, tmp_path,
                                                         capsys):
    config = tmp_path / "spc.yaml"
    config.write_text("encoder_type: pase\nhiddenEncoder: 32\narMode: no_ar\n"
                      "samplingType: uniform\nworkers_config:\n  classifier:\n    spc:\n")
    argv = pase_args(tiny_corpus, short_split, tmp_path / "r", "--nEpoch", "1")
    argv[argv.index("--config") + 1] = str(config)
    assert train.main(argv + ["--sizeWindow", "1600"]) == 2
    assert "worker spc needs windows of at least" in capsys.readouterr().err

