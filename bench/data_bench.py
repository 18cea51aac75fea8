"""Data pipeline figures: corpus generation speed, indexing and loading 1000 files.

    python bench/data_bench.py [--out /tmp/cpc_data_bench] [--workers 2] [--repeats 3]

Prints the machine, then medians over repeats (not timed tests: figures to quote).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpc.data.listing import findAllSeqs  # noqa: E402
from cpc.data.packs import AudioBatchData  # noqa: E402
from cpc.corpora.synthetic import generate_corpus  # noqa: E402


def median_time(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cpc_data_bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"command: python bench/data_bench.py --workers {args.workers} "
          f"--repeats {args.repeats}")

    # Corpus generation: 20 speakers x 20 utterances (the demo corpus), repeated.
    rates = []
    for i in range(args.repeats):
        target = args.out / f"gen_{i}"
        shutil.rmtree(target, ignore_errors=True)
        summary = generate_corpus(target, 20, 2, 10, seed=i, workers=args.workers)
        rates.append(summary.total_seconds / summary.wall_seconds)
        shutil.rmtree(target)
    print(f"corpus generation (20 spk x 20 utt, {args.workers} workers): median "
          f"{statistics.median(rates):.0f} s of audio per wall-second "
          f"(runs: {', '.join(f'{r:.0f}' for r in rates)})")

    # 1000 files: 25 speakers x 4 chapters x 10 utterances.
    big = args.out / "corpus_1000"
    if not (big / "corpus_info.json").is_file():
        shutil.rmtree(big, ignore_errors=True)
        generate_corpus(big, 25, 4, 10, seed=0, workers=args.workers)
    os.environ["CPC_CACHE_DIR"] = str(args.out / "cache")
    cold = median_time(lambda: findAllSeqs(big, ".flac", loadCache=False,
                                           n_workers=args.workers), args.repeats)
    warm = median_time(lambda: findAllSeqs(big, ".flac", loadCache=True), args.repeats)
    seqs, speakers = findAllSeqs(big, ".flac")
    hours = sum(s.n_samples for s in seqs) / 16000 / 3600

    def load_all() -> None:
        data = AudioBatchData(big, 20480, seqs, None, len(speakers),
                              n_process_loader=args.workers)
        data.load(data.plan(0)[0])
        data.close()
    load = median_time(load_all, args.repeats)
    print(f"index {len(seqs)} files ({hours:.2f} h): cold {cold:.2f} s, cached {warm:.3f} s "
          f"(medians)")
    print(f"load {len(seqs)} files into one pack with {args.workers} threads: median "
          f"{load:.2f} s ({hours * 3600 / load:.0f} s of audio per second)")


if __name__ == "__main__":
    main()
