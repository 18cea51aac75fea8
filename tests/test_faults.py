"""Faults: a stop signal mid-epoch checkpoints and resumes exactly; non-finite losses."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from cpc import train
from cpc.criterion.objective import CriterionObjective
from cpc.utils import checkpoint as ckpt
from cpc.utils.signals import StopRequest
from tests.test_train import SMALL, corpus_args

REPO = Path(__file__).resolve().parent.parent


def run(argv) -> int:
    return train.main([str(a) for a in argv])


class StopAfter(StopRequest):
    """A stop request that arrives after ``n`` checks (one check per training step)."""

    checks_before_stop = 5

    @property
    def requested(self) -> bool:
        StopAfter.checks_before_stop -= 1
        if StopAfter.checks_before_stop < 0 and self.signal_name is None:
            self.signal_name = "SIGTERM"
        return self.signal_name is not None


def test_stop_mid_epoch_then_rerun_equals_an_uninterrupted_run(tiny_corpus, tmp_path,
                                                               monkeypatch, capsys):
    common = corpus_args(tiny_corpus) + SMALL + ["--save_step", "1", "--deterministic",
                                                 "--nEpoch", "2"]
    assert run(common + ["--pathCheckpoint", tmp_path / "straight"]) == 0
    StopAfter.checks_before_stop = 70  # epoch 0 has 55 batches: stop inside epoch 1
    monkeypatch.setattr(train, "StopRequest", StopAfter)
    stopped = tmp_path / "stopped"
    assert run(common + ["--pathCheckpoint", stopped]) == 0
    assert "SIGTERM: stopped in epoch 1 after" in capsys.readouterr().out
    # the cut epoch is not named like a finished one: tools picking the newest model skip it
    assert [e for e, _ in ckpt.list_checkpoints(stopped)] == [0]
    state = ckpt.load_checkpoint(ckpt.interrupted_checkpoint_path(stopped, 1))
    assert state["epoch"] == 1 and state["interrupted"]["batches_done"] > 0
    from cpc.feature_loader import resolve_checkpoint
    assert resolve_checkpoint(stopped).endswith("checkpoint_0.pt")
    monkeypatch.undo()
    assert run(common + ["--pathCheckpoint", stopped]) == 0
    assert "resuming" in capsys.readouterr().out
    assert not ckpt.list_interrupted(stopped)
    a = ckpt.load_checkpoint(tmp_path / "straight" / "checkpoint_1.pt")
    b = ckpt.load_checkpoint(stopped / "checkpoint_1.pt")
    assert "interrupted" not in b
    for key in a["gEncoder"]:
        torch.testing.assert_close(a["gEncoder"][key], b["gEncoder"][key], rtol=1e-6,
                                   atol=1e-6)
    # the cut epoch's logged means cover all its batches, as in the uninterrupted run
    logs_a, logs_b = (ckpt.read_json(d / ckpt.LOGS_FILE) for d in (tmp_path / "straight",
                                                                    stopped))
    for key in ("epoch", "loss_train", "locLoss_train", "locAcc_train", "loss_val"):
        torch.testing.assert_close(torch.tensor(logs_b[key], dtype=torch.float64),
                                   torch.tensor(logs_a[key], dtype=torch.float64),
                                   rtol=1e-6, atol=1e-9, msg=key)


def test_sigterm_to_a_real_process_exits_0_with_a_checkpoint(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, str(REPO / "cpc" / "train.py")] + \
        [str(a) for a in corpus_args(tiny_corpus) + SMALL +
         ["--pathCheckpoint", out, "--nEpoch", "200", "--save_step", "1000"]]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in process.stdout:  # wait until training has started
        if line.startswith("val:"):
            break
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    rest = process.stdout.read()
    assert process.wait(timeout=60) == 0
    assert "SIGTERM: stopped in epoch" in rest
    assert not ckpt.list_checkpoints(out)
    (epoch, path), = ckpt.list_interrupted(out)
    assert ckpt.load_checkpoint(path)["interrupted"]["batches_done"] >= 1


def _nan_on_call(monkeypatch, bad_calls: set[int]) -> None:
    original = CriterionObjective.__call__
    calls = {"n": 0}

    def maybe_nan(self, batch, c_feature, encoded):
        out = original(self, batch, c_feature, encoded)
        calls["n"] += 1
        if calls["n"] in bad_calls:
            out.loss = out.loss * float("nan")
        return out
    monkeypatch.setattr(CriterionObjective, "__call__", maybe_nan)


def test_non_finite_loss_stops_naming_the_step_and_last_checkpoint(tiny_corpus, tmp_path,
                                                                  monkeypatch, capsys):
    base = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "run",
                                               "--save_step", "1"]
    assert run(base + ["--nEpoch", "1"]) == 0
    _nan_on_call(monkeypatch, {3})
    assert run(base + ["--nEpoch", "2"]) == 2
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 1 train, batch 2" in err
    assert "checkpoint_0.pt" in err and "--allow_nan_steps" in err


def test_allow_nan_steps_skips_bad_batches(tiny_corpus, tmp_path, monkeypatch, capsys):
    _nan_on_call(monkeypatch, {2, 4})
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "run",
                                               "--nEpoch", "1", "--allow_nan_steps", "2"]
    assert run(argv) == 0
    assert capsys.readouterr().err.count("batch skipped") == 2
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint_0.pt")
    assert all(torch.isfinite(v).all() for v in state["gEncoder"].values())


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tiny_corpus,
                                                                           tmp_path):
    """Atomic checkpoint writes: whenever the process dies, the newest checkpoint is usable."""
    common = [str(a) for a in corpus_args(tiny_corpus) + SMALL +
              ["--save_step", "1", "--deterministic", "--nEpoch", "4"]]
    assert run(common + ["--pathCheckpoint", str(tmp_path / "straight")]) == 0
    killed = tmp_path / "killed"
    command = [sys.executable, str(REPO / "cpc" / "train.py")] + common + \
        ["--pathCheckpoint", str(killed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = __import__("random").Random(0)
    for _ in range(3):
        process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True, env=env)
        for line in process.stdout:  # training has started once the data summary is printed
            if line.startswith("val:"):
                break
        time.sleep(rng.uniform(0.0, 1.5))
        process.kill()
        process.wait()
    assert subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=env).returncode == 0
    a = ckpt.load_checkpoint(tmp_path / "straight" / "checkpoint_3.pt")["gEncoder"]
    b = ckpt.load_checkpoint(killed / "checkpoint_3.pt")["gEncoder"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-6)
    assert not list(killed.glob(".*.tmp"))  # temp files of killed writes are cleaned up


def read_until(process: subprocess.Popen, marker: str, count: int) -> list[str]:
    """Lines of ``process``'s stdout up to the ``count``-th holding ``marker``."""
    lines, seen = [], 0
    for line in process.stdout:
        lines.append(line)
        seen += marker in line
        if seen == count:
            return lines
    raise AssertionError(f"{marker!r} seen {seen} times, not {count}: {''.join(lines)[-2000:]}")


def assert_same_run(straight: Path, resumed: Path, epoch: int) -> None:
    """Bit-identical weights and optimiser state, and the same logged epoch figures."""
    a = ckpt.load_checkpoint(straight / f"checkpoint_{epoch}.pt")
    b = ckpt.load_checkpoint(resumed / f"checkpoint_{epoch}.pt")
    for key in a["gEncoder"]:
        assert torch.equal(a["gEncoder"][key], b["gEncoder"][key]), key
    assert a["global_step"] == b["global_step"]
    logs_a, logs_b = (ckpt.read_json(d / ckpt.LOGS_FILE) for d in (straight, resumed))
    for key in ("epoch", "loss_train", "locLoss_train", "locAcc_train", "loss_val"):
        torch.testing.assert_close(torch.tensor(logs_b[key], dtype=torch.float64),
                                   torch.tensor(logs_a[key], dtype=torch.float64),
                                   rtol=1e-9, atol=1e-12, msg=key)


def test_a_kill_9_loses_at_most_the_updates_since_the_last_step_checkpoint(tiny_corpus,
                                                                           tmp_path):
    """--save_interval_steps N: the epoch in progress is saved every N updates; a process
    killed with SIGKILL resumes from it and ends exactly where an uninterrupted run ends."""
    common = [str(a) for a in corpus_args(tiny_corpus) + SMALL +
              ["--save_step", "1", "--deterministic", "--nEpoch", "2"]]
    assert run(common + ["--pathCheckpoint", str(tmp_path / "straight")]) == 0
    killed = tmp_path / "killed"
    command = [sys.executable, str(REPO / "cpc" / "train.py")] + common + \
        ["--pathCheckpoint", str(killed), "--save_interval_steps", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=env)
    lines = read_until(process, "step checkpoint:", 14)  # epoch 1 (55 updates per epoch)
    process.kill()
    process.wait()
    assert "step checkpoint: epoch 1 after 15 batches (update 70)" in lines[-1]
    (epoch, path), = ckpt.list_interrupted(killed)
    state = ckpt.load_checkpoint(path)
    assert epoch == 1 and state["interrupted"]["batches_done"] in (15, 20)  # at most 5 lost
    assert subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=env).returncode == 0
    assert_same_run(tmp_path / "straight", killed, 1)
