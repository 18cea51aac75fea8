"""`make demo`: the main job on the built-in corpus, end to end on a CPU.

Generates the espeak-ng corpus if it is absent, then builds the training and validation data and
prints their summary.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cpc.dataset import build_datasets
from cpc.utils.synthetic_corpus import generate_corpus


def ensure_corpus(root: Path, speakers: int, chapters: int, utterances: int, seed: int) -> None:
    """Generate the built-in corpus into ``root`` unless a complete one is already there."""
    start = time.time()
    summary = generate_corpus(root, speakers, chapters, utterances, seed=seed)
    print(f"corpus: {summary.n_files} files, {summary.n_speakers} speakers, "
          f"{summary.total_seconds / 60:.1f} min of audio at {root} "
          f"({time.time() - start:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=Path("data/demo_corpus"))
    parser.add_argument("--speakers", type=int, default=20)
    parser.add_argument("--chapters", type=int, default=2)
    parser.add_argument("--utterances", type=int, default=10, help="per chapter")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    ensure_corpus(args.corpus, args.speakers, args.chapters, args.utterances, args.seed)
    data = build_datasets(args.corpus, ".flac", str(args.corpus / "train_split.txt"),
                          str(args.corpus / "val_split.txt"),
                          str(args.corpus / "converted_aligned_phones.txt"), size_window=20480,
                          seed=args.seed)
    for name, part in (("train", data.train), ("val", data.val)):
        s = part.summary()
        print(f"{name:5s}: {s['files']} files, {s['hours']:.3f} h, {s['speakers']} speakers, "
              f"{s['phones']} phones in use (of {data.n_phones}), {s['windows']} windows of "
              f"{s['size_window']} samples, {s['packs']} pack(s)")
    data.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
