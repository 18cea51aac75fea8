"""`make demo`: the main job on the built-in corpus, end to end on a CPU in a few minutes.

1. generate the espeak-ng corpus (skipped when a complete one is already there);
2. train a small CPC model with cpc/train.py (resumed if the run directory has checkpoints);
3. probe its features for speakers and phones with cpc/eval/linear_separability.py, next to
   the same probes on MFCCs and on the untrained architecture, and print the table.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from pathlib import Path

from cpc.utils.cli import DocstringHelpFormatter, exit_without_teardown
from cpc.utils.signals import run_command

# A CPC model small enough to learn something from 25 minutes of audio in a few CPU minutes;
# optimisation is train.py's default: CPC_audio's (Adam 2e-4, same-speaker batches of 8) plus
# gradient clipping and a per-step warm-up, which keep it from collapsing on any seed or CPU
# (bench/stability_bench.py), and the collapse guard behind them.
DEMO_TRAIN_FLAGS = ["--hiddenEncoder", "128", "--hiddenGar", "128", "--rnnMode", "linear",
                    "--nPredicts", "8", "--negativeSamplingExt", "64"]


def ensure_corpus(root: Path, speakers: int, chapters: int, utterances: int, seed: int) -> None:
    """Generate the built-in corpus into ``root`` unless a complete one is already there."""
    from cpc.corpora.synthetic import generate_corpus

    start = time.time()
    summary = generate_corpus(root, speakers, chapters, utterances, seed=seed)
    print(f"corpus: {summary.n_files} files, {summary.n_speakers} speakers, "
          f"{summary.total_seconds / 60:.1f} min of audio at {root} "
          f"({time.time() - start:.1f} s)", flush=True)


def train_command(corpus: Path, run_dir: Path, n_epoch: int, seed: int) -> list[str]:
    """The cpc/train.py command line of the demo."""
    return ["--pathDB", str(corpus), "--pathTrain", str(corpus / "train_split.txt"),
            "--pathVal", str(corpus / "val_split.txt"),
            "--path_phone_data", str(corpus / "converted_aligned_phones.txt"),
            "--file_extension", ".flac", "--pathCheckpoint", str(run_dir),
            "--nEpoch", str(n_epoch), "--save_step", "1", "--random_seed", str(seed),
            "--n_process_loader", "2"] + DEMO_TRAIN_FLAGS


def probe_table(corpus: Path, run_dir: Path, seed: int) -> list[tuple[str, dict]]:
    """Speaker and phone probes on the trained model and on two baselines."""
    from cpc.eval import linear_separability

    rows = []
    for features in ("checkpoint", "random_init", "mfcc"):
        out = run_dir / f"linsep_{features}"
        argv = [str(corpus), str(corpus / "train_split.txt"), str(corpus / "val_split.txt")]
        argv += [str(run_dir)] if features != "mfcc" else []
        argv += ["--features", features, "--pathPhone",
                 str(corpus / "converted_aligned_phones.txt"), "--out", str(out),
                 "--seed", str(seed), "--n_process_loader", "2"]
        print(f"probing: python cpc/eval/linear_separability.py {shlex.join(argv)}", flush=True)
        if linear_separability.main(argv) != 0:
            raise SystemExit(f"probing {features} features failed")
        rows.append((features, json.loads((out / "results.json").read_text())))
    return rows


def chance_levels(corpus: Path) -> dict[str, float]:
    """What guessing scores on the validation split: the speaker probes 1 / speakers, the frame
    phone probe the share of the most frequent phone (always answering it)."""
    import numpy as np

    from cpc.data.labels import parseSeqLabels
    from cpc.data.splits import read_split_list

    stems = read_split_list(corpus / "val_split.txt")
    labels, n_phones = parseSeqLabels(corpus / "converted_aligned_phones.txt")
    counts = np.bincount(np.concatenate([labels[stem] for stem in stems]), minlength=n_phones)
    n_speakers = len({stem.split("-")[0] for stem in stems})
    return {"speaker": 1 / n_speakers, "phone": counts.max() / counts.sum()}


def training_summary(run_dir: Path) -> str:
    """First and last epoch's training loss, against the loss of chance (K ln(1 + N))."""
    logs = json.loads((run_dir / "checkpoint_logs.json").read_text())
    flags = dict(zip(DEMO_TRAIN_FLAGS[::2], DEMO_TRAIN_FLAGS[1::2]))
    chance = int(flags["--nPredicts"]) * math.log(1 + int(flags["--negativeSamplingExt"]))
    rollbacks = sum(e["action"] == "rollback" for e in logs.get("collapse_events", []))
    return (f"CPC training loss {logs['loss_train'][0]:.2f} (epoch 0) -> "
            f"{logs['loss_train'][-1]:.2f} (epoch {logs['epoch'][-1]}); chance {chance:.2f}; "
            f"collapse rollbacks: {rollbacks}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=DocstringHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/demo_corpus"),
                        help="directory of the built-in corpus (generated if incomplete)")
    parser.add_argument("--run", type=Path, default=Path("runs/demo"),
                        help="run directory of the CPC training")
    parser.add_argument("--speakers", type=int, default=20, help="speakers of the corpus")
    parser.add_argument("--chapters", type=int, default=2, help="chapters per speaker")
    parser.add_argument("--utterances", type=int, default=10, help="utterances per chapter")
    parser.add_argument("--epochs", type=int, default=3, help="CPC training epochs")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the corpus, the training and the probes")
    args = parser.parse_args(argv)
    from cpc import train  # here, and each step's libraries in its function: --help needs none

    ensure_corpus(args.corpus, args.speakers, args.chapters, args.utterances, args.seed)
    command = train_command(args.corpus, args.run, args.epochs, args.seed)
    print(f"\ntraining: python cpc/train.py {shlex.join(command)}\n", flush=True)
    status = train.main(command)
    if status != 0:
        return status
    print()
    rows = probe_table(args.corpus, args.run, args.seed)
    chance = chance_levels(args.corpus)
    names = {"checkpoint": "CPC (trained)", "random_init": "CPC (untrained)", "mfcc": "MFCC"}
    print(f"\n{training_summary(args.run)}")
    print("\nlinear separability on the validation split (best probe epoch):")
    print(f"  {'features':16s} {'speaker (last)':>15s} {'speaker (mean)':>15s} {'phone':>8s}")
    for features, result in rows:
        print(f"  {names[features]:16s} {result['speaker_best_val_acc']:15.3f} "
              f"{result['speaker_mean_best_val_acc']:15.3f} {result['phone_best_val_acc']:8.3f}")
    print(f"  {'chance':16s} {chance['speaker']:15.3f} {chance['speaker']:15.3f} "
          f"{chance['phone']:8.3f}")
    print("  (chance: speakers 1 / their number; phone frames the most frequent phone's share)")
    print(f"\ncheckpoints: {args.run}/checkpoint_<epoch>.pt, logs: {args.run}/checkpoint_logs.json"
          f"\nTensorBoard: tensorboard --logdir {args.run}/tensorboard")
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
