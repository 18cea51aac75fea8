"""torchrun with 2 CPU processes (gloo): rank 0 alone writes the same files as one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cpc.utils import checkpoint as ckpt
from tests.test_train import SMALL, corpus_args

REPO = Path(__file__).resolve().parent.parent


def run_torchrun(argv: list[str], n_processes: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={n_processes}", str(REPO / "cpc" / "train.py"), *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_ranks_write_the_files_of_a_single_process_run(tiny_corpus, tmp_path):
    argv = [str(a) for a in corpus_args(tiny_corpus) + SMALL + ["--nEpoch", "2",
                                                                "--save_step", "1"]]
    single = run_torchrun(argv + ["--pathCheckpoint", str(tmp_path / "one")], 1)
    double = run_torchrun(argv + ["--pathCheckpoint", str(tmp_path / "two")], 2)
    assert single.returncode == 0, single.stderr[-2000:]
    assert double.returncode == 0, double.stderr[-2000:]
    names = lambda d: sorted(p.name for p in d.iterdir())  # noqa: E731
    assert names(tmp_path / "two") == names(tmp_path / "one")
    assert [e for e, _ in ckpt.list_checkpoints(tmp_path / "two")] == [0, 1]
    logs = json.loads((tmp_path / "two" / "checkpoint_logs.json").read_text())
    assert logs["epoch"] == [0, 1] and len(logs["locLoss_train"][0]) == 3
    assert double.stdout.count("train: ") == 1  # only rank 0 reports
    # each rank took half of the batches: the epoch saw (almost) the same windows
    one = json.loads((tmp_path / "one" / "checkpoint_logs.json").read_text())
    assert abs(logs["loss_train"][0] - one["loss_train"][0]) < 0.5
