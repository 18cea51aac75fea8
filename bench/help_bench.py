"""Start-up time of every command line: ``--help`` of each CLI, and the cold start of training.

    python bench/help_bench.py [--repeats 5] [--no-cold-start]

Every module of ``cpc/`` whose ``__main__`` block exits with ``main()`` is a CLI (ABX's sub-commands are timed
too). Each figure is the median wall time of whole processes (interpreter start included). The
cold start is ``python cpc/train.py`` on a tiny noise corpus, from launch to its first line
``train: ...`` (options parsed, libraries imported, corpus listed: the step before the model is
built). Prints the machine, the command and the figures.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpc.utils.cli import help_command_lines  # noqa: E402 (after the path; torch-free)


def help_commands() -> list[list[str]]:
    """The ``--help`` command line of every CLI and sub-command."""
    return help_command_lines(ROOT / "cpc")


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def tiny_corpus(root: Path) -> list[str]:
    """Two speakers x three seconds of noise, with split files; returns train.py's data flags."""
    import numpy as np
    import soundfile as sf

    generator = np.random.default_rng(0)
    stems = []
    for speaker in ("1", "2"):
        (root / speaker / "0").mkdir(parents=True)
        for i in range(3):
            stem = f"{speaker}-0-{i}"
            sf.write(root / speaker / "0" / f"{stem}.flac",
                     0.1 * generator.standard_normal(16000).astype(np.float32), 16000)
            stems.append(stem)
    (root / "train.txt").write_text("\n".join(stems[:2] + stems[3:5]) + "\n")
    (root / "val.txt").write_text(f"{stems[2]}\n{stems[5]}\n")
    return ["--pathDB", str(root), "--pathTrain", str(root / "train.txt"),
            "--pathVal", str(root / "val.txt"), "--file_extension", ".flac"]


def cold_start(work: Path, run: int) -> float:
    """Seconds from launching a tiny ``train.py`` run to its ``train:`` line (then stopped)."""
    data = tiny_corpus(work / f"corpus{run}")
    command = [sys.executable, "cpc/train.py", *data, "--pathCheckpoint", str(work / f"run{run}"),
               "--hiddenEncoder", "32", "--hiddenGar", "32", "--sizeWindow", "3200",
               "--batchSizeGPU", "2", "--n_process_loader", "1", "--device", "cpu", "--nEpoch", "1"]
    start = time.perf_counter()
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True, env={**os.environ, "CPC_CACHE_DIR": str(work / "cache")}) as process:
        for line in process.stdout:
            if line.startswith("train:"):
                elapsed = time.perf_counter() - start
                process.kill()
                return elapsed
    raise RuntimeError(f"no 'train:' line from {' '.join(command)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="Runs per figure (median).")
    parser.add_argument("--no-cold-start", dest="cold_start", action="store_false",
                        help="Skip the cold start of a tiny training run.")
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, torch {metadata.version('torch')}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"median of {args.repeats} whole-process runs, seconds")
    for command in help_commands():
        times = [wall_time(command) for _ in range(args.repeats)]
        print(f"{statistics.median(times):6.2f}  python {' '.join(command)}", flush=True)
    if args.cold_start:
        with tempfile.TemporaryDirectory() as work:
            times = [cold_start(Path(work), run) for run in range(args.repeats)]
        print(f"{statistics.median(times):6.2f}  python cpc/train.py (tiny run) to its 'train:' line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
