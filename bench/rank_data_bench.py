"""Audio each torchrun rank decodes, and its peak memory, in a 2-rank CPU (gloo) training.

    python bench/rank_data_bench.py [--corpus data/demo_corpus] [--epochs 2]
        [--code DIR ...] [--max_size_loaded N ...]

For each checkout given with ``--code`` (default: this one; give an older one, e.g. a
``git worktree`` of an earlier commit that has ``cpc/data/packs.py``, to compare) and each
``--max_size_loaded``, runs ``torchrun --nproc_per_node 2 cpc/train.py`` on the corpus with a
small model, every rank wrapped so that it counts the samples its ``cpc.data.packs.read_audio``
decodes and reports its peak resident memory. Prints one row per rank, and the corpus's size for reference.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RANK_WRAPPER = '''"""One torchrun rank of cpc/train.py, counting decoded samples and peak memory."""
import json, os, resource, sys
sys.path.insert(0, os.environ["CPC_CODE"])
import cpc.data.packs as packs
original, decoded = packs.read_audio, [0]

def counting(path):
    samples = original(path)
    decoded[0] += len(samples)
    return samples

packs.read_audio = counting
from cpc import train
code = train.main(sys.argv[1:])
rank = int(os.environ.get("RANK", 0))
with open(os.path.join(os.environ["CPC_BENCH_OUT"], f"rank{rank}.json"), "w") as out:
    json.dump({"rank": rank, "code": code, "decoded": decoded[0],
               "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, out)
'''

MODEL = ["--hiddenEncoder", "64", "--hiddenGar", "64", "--rnnMode", "linear", "--nPredicts", "4",
         "--negativeSamplingExt", "16", "--batchSizeGPU", "8", "--n_process_loader", "2",
         "--random_seed", "0", "--device", "cpu", "--save_step", "100"]


def run(code: Path, corpus: Path, epochs: int, max_size: int, work: Path) -> list[dict]:
    wrapper = work / "rank.py"
    wrapper.write_text(RANK_WRAPPER)
    run_dir = work / f"run_{abs(hash((str(code), max_size)))}"
    reports = run_dir.with_name(run_dir.name + "_ranks")
    reports.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(wrapper), "--pathDB", str(corpus),
               "--pathTrain", str(corpus / "train_split.txt"),
               "--pathVal", str(corpus / "val_split.txt"), "--file_extension", ".flac",
               "--pathCheckpoint", str(run_dir), "--nEpoch", str(epochs),
               "--max_size_loaded", str(max_size)] + MODEL
    out = subprocess.run(command, capture_output=True, text=True,
                         env={**os.environ, "CPC_CODE": str(code), "OMP_NUM_THREADS": "1",
                              "CPC_CACHE_DIR": str(work / "cache"),
                              "CPC_BENCH_OUT": str(reports)})
    ranks = [json.loads(path.read_text()) for path in sorted(reports.glob("rank*.json"))]
    if len(ranks) != 2 or any(rank["code"] for rank in ranks):
        raise SystemExit(f"{code}: the run failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return sorted(ranks, key=lambda r: r["rank"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "demo_corpus")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--code", type=Path, nargs="+", default=[ROOT])
    parser.add_argument("--max_size_loaded", type=int, nargs="+", default=[4_000_000_000])
    args = parser.parse_args()
    if not (args.corpus / "train_split.txt").is_file():
        raise SystemExit(f"{args.corpus} is not the built-in corpus: run `make demo` first")
    import soundfile
    stems = set((args.corpus / "train_split.txt").read_text().split()) | \
        set((args.corpus / "val_split.txt").read_text().split())
    total = sum(soundfile.info(p).frames for p in args.corpus.rglob("*.flac") if p.stem in stems)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"command: python bench/rank_data_bench.py --corpus {args.corpus} --epochs "
          f"{args.epochs} --code {' '.join(map(str, args.code))} --max_size_loaded "
          f"{' '.join(map(str, args.max_size_loaded))}")
    print(f"training + validation splits: {total} samples ({total / 16000 / 3600:.2f} h, "
          f"{total * 4 / 2**20:.0f} MB as float32); {args.epochs} epochs on 2 gloo ranks")
    print("| code | --max_size_loaded | rank | decoded samples | decoded / (epochs x splits) "
          "| peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="rank_data_bench_") as work:
        for max_size in args.max_size_loaded:
            for code in args.code:
                for rank in run(code, args.corpus, args.epochs, max_size, Path(work)):
                    share = rank["decoded"] / (args.epochs * total)
                    print(f"| {code} | {max_size} | {rank['rank']} | {rank['decoded']} | "
                          f"{share:.2f} | {rank['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
