"""bench/gpu_check.sh runs green on a machine without CUDA, up to its CUDA skips, and prints
its table."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check itself runs")
def test_the_gpu_check_skips_what_needs_a_gpu_and_prints_its_table(tmp_path):
    result = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(tmp_path)],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHON": sys.executable,
                                 "CPC_AUDIO": str(tmp_path / "absent")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("| check | result |"):]
    assert "| CUDA tests (pytest -m cuda) | 9 skipped" in table
    assert "nothing measured" in table and "comparison skipped" in table
    assert (tmp_path / "cuda_tests.log").is_file()
