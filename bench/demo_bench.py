"""Wall time and peak memory of the demo (what `make demo` runs once the venv exists).

    python bench/demo_bench.py [--corpus data/demo_corpus] [--repeats 1]

Each repeat is one whole ``python -m cpc.demo`` process (training, the three probes, the table)
into a fresh run directory. The demo generates the corpus when it is missing, so a first run on
a fresh machine includes that (a minute); the output says whether the corpus was there. Prints
the machine, the command, the figures and the demo's own result table.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TIMED = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
         "out = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
         "print(out.stdout[-1200:]); print(out.stderr[-400:], file=sys.stderr); "
         "print(f'@@ {out.returncode} {time.perf_counter() - t:.2f} "
         "{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20:.2f}')")


def timed(command: list[str]) -> tuple[int, float, float, str]:
    """Exit code, wall seconds, peak RSS (GB, children included) and the tail of stdout."""
    out = subprocess.run([sys.executable, "-c", TIMED] + command, cwd=ROOT, capture_output=True,
                         text=True)
    lines = out.stdout.strip().splitlines()
    code, wall, peak = lines[-1].split()[1:]
    return int(code), float(wall), float(peak), "\n".join(lines[:-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "demo_corpus")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"command: python bench/demo_bench.py --corpus {args.corpus} --repeats {args.repeats}")
    print(f"corpus {args.corpus}: " + ("present" if (args.corpus / "train_split.txt").is_file()
                                        else "missing: the first run generates it"))
    walls, peaks, table = [], [], ""
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="demo_bench_") as run:
            code, wall, peak, table = timed([sys.executable, "-m", "cpc.demo", "--corpus",
                                             str(args.corpus), "--run", str(Path(run) / "demo")])
        if code != 0:
            print(f"the demo exited with {code}:\n{table}")
            return 1
        walls.append(wall)
        peaks.append(peak)
    print(f"demo (training, three probes, table): {statistics.median(walls):.1f} s wall "
          f"(runs: {', '.join(f'{w:.1f}' for w in walls)}), peak RSS {max(peaks):.2f} GB")
    print(table[table.find("CPC training loss"):] if "CPC training loss" in table else table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
