"""ABX speed on the built-in corpus: items and triplets per second, within + across.

    python bench/abx_bench.py [--corpus /tmp/cpc_abx_bench/corpus] [--repeats 3] \
        [--checkpoint runs/demo] [--device cpu] [--threads 1] [--group_sizes 10 100 1000]

The corpus (20 speakers x 20 utterances, the demo's) is generated if absent. Items come from
its val split (the "dev" items) and, as a heavier load, from all its files. Features are
precomputed (one-hot phone labels, 13 MFCCs, and a checkpoint's contexts with --checkpoint), so
the figures time the ABX computation alone. Then, on the val items' MFCCs, each mode alone at
each ``--max_size_group`` of ``--group_sizes``: no group there exceeds 3 items, so the time
should not grow with it; the ratio to the cost before cells were padded to the real groups
(measured with this bench, see ``BEFORE``) follows. Prints the machine, the command and medians.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cpc.data.audio import read_audio  # noqa: E402
from cpc.data.labels import parseSeqLabels  # noqa: E402
from cpc.data.splits import read_split_list  # noqa: E402
from cpc.eval.ABX import ItemFile, gather_item_frames  # noqa: E402
from cpc.eval.abx_core import MODES, Items, abx  # noqa: E402
from cpc.eval.build_zeroSpeech_features import build_feature_maker, list_files_by_stem  # noqa: E402
from cpc.eval.make_abx_items import make_items, read_phone_symbols  # noqa: E402
from cpc.feature_loader import buildFeature  # noqa: E402
from cpc.audio_features import mfcc  # noqa: E402
from cpc.corpora.synthetic import generate_corpus  # noqa: E402


def item_file(corpus: Path, stems: list[str]) -> ItemFile:
    """In-memory item file of the given stems (what make_abx_items writes)."""
    labels, _ = parseSeqLabels(corpus / "converted_aligned_phones.txt")
    items = make_items(labels, read_phone_symbols(corpus / "phones.txt"), stems)
    return ItemFile(path=corpus, file=[i.file for i in items], onset=np.array([i.onset for i in items]),
                    offset=np.array([i.offset for i in items]), phone=[i.phone for i in items],
                    context=[f"{i.prev}+{i.next}" for i in items], speaker=[i.speaker for i in items])


def feature_functions(corpus: Path, checkpoint: str | None, device: torch.device) -> dict:
    """Name -> (file stem -> T x D features)."""
    labels, n_phones = parseSeqLabels(corpus / "converted_aligned_phones.txt")
    audio = list_files_by_stem(corpus, ".flac")
    functions = {
        "one-hot": lambda stem: np.eye(n_phones, dtype=np.float32)[labels[stem]],
        "mfcc13": lambda stem: mfcc(torch.from_numpy(read_audio(audio[stem])), n_mfcc=13, n_mels=40,
                                    n_fft=512, win_length=400).T,
    }
    if checkpoint:
        maker = build_feature_maker(checkpoint, device=device)
        # strict: every model run sees a whole 64000-sample chunk, never a sliver of a remainder
        functions["checkpoint"] = lambda stem: buildFeature(maker, audio[stem], strict=True)[0]
    return functions


# Median seconds per (mode, max_size_group) of the group-size figures when every cell was padded
# to max_size_group: this bench, --repeats 5, 2-core x86_64 shared machine (load average 2-3),
# torch 2.13 CPU, one thread.
BEFORE = {("within", 10): 0.035, ("within", 100): 0.044, ("within", 1000): 0.957,
          ("across", 10): 0.093, ("across", 100): 0.146, ("across", 1000): 12.868}


def run_times(run: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    """Wall times of ``repeats`` calls of ``run`` and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return times, result


def group_size_figures(frames: torch.Tensor, ids: Items, sizes: list[int], repeats: int) -> None:
    """Print each mode's median time and score at each max_size_group."""
    largest = int(np.unique(np.stack([ids.context, ids.speaker, ids.phone]), axis=1,
                            return_counts=True)[1].max())
    print(f"val (dev) items, mfcc13, each mode alone; largest group: {largest} items")
    for mode in MODES:
        for size in sizes:
            times, result = run_times(lambda: abx(frames, ids, mode, max_size_group=size), repeats)
            median = statistics.median(times)
            old = BEFORE.get((mode, size))
            versus = (f"; padded to max_size_group it took {old:.3f} s ({old / median:.1f}x)"
                      if old else "")
            print(f"  {mode} --max_size_group {size}: median {median:.3f} s "
                  f"(runs: {', '.join(f'{t:.3f}' for t in times)}); {result.n_cells} cells, "
                  f"{result.n_triplets} triplets, error {100 * result.error:.6f} %{versus}",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/cpc_abx_bench/corpus"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", default=None, help="also time a checkpoint's features")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--group_sizes", type=int, nargs="*", default=[10, 100, 1000],
                        help="max_size_group values timed on the val items (none: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, device {device}, "
          f"{args.threads} thread(s)")
    print(f"command: python bench/abx_bench.py --corpus {args.corpus} --repeats {args.repeats}"
          + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
          + f" --device {args.device} --threads {args.threads}"
          + f" --group_sizes {' '.join(map(str, args.group_sizes))}")
    generate_corpus(args.corpus, 20, 2, 10, seed=0)
    val = read_split_list(args.corpus / "val_split.txt")
    every = val + read_split_list(args.corpus / "train_split.txt")
    for set_name, stems in (("val (dev) items", val), ("all-file items", every)):
        items = item_file(args.corpus, stems)
        for name, load in feature_functions(args.corpus, args.checkpoint, device).items():
            frames, ids, _ = gather_item_frames(items, load, progress=False)
            frames = frames.to(device)
            times, results = run_times(lambda: [abx(frames, ids, mode) for mode in MODES],
                                       args.repeats)
            median = statistics.median(times)
            triplets = sum(r.n_triplets for r in results)
            print(f"{set_name}, {name}: {len(ids)} items, {triplets} triplets; median "
                  f"{median:.2f} s -> {len(ids) / median:.0f} items/s, {triplets / median:.0f} "
                  f"triplets/s (runs: {', '.join(f'{t:.2f}' for t in times)}); within "
                  f"{100 * results[0].error:.2f} %, across {100 * results[1].error:.2f} %",
                  flush=True)
    if args.group_sizes:
        frames, ids, _ = gather_item_frames(item_file(args.corpus, val),
                                            feature_functions(args.corpus, None, device)["mfcc13"],
                                            progress=False)
        group_size_figures(frames.to(device), ids, args.group_sizes, args.repeats)


if __name__ == "__main__":
    main()
