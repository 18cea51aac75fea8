"""Learning quality within a fixed training budget: CPC and CPC-CTC against MFCC and random init.

    python bench/learning_bench.py [--speakers 40] [--train_minutes 12] [--device auto] \\
        [--models cpc cpcctc] [--eval_points 3] [--runs runs/learning_bench] [--json PATH]

The built-in espeak-ng corpus (``--speakers`` x 2 chapters x 10 utterances, corpus seed 0) is
generated into ``--corpus`` unless already there. Each model (the demo's architecture and
recipe, ``cpc.demo.train_command``; CPC-CTC adds the fork's ``--CPCCTC`` flags) trains with
cpc/train.py one epoch per call, resumed from its newest checkpoint, until its summed training
passes (``train_seconds`` of checkpoint_logs.json: no start-up, no validation) reach
``--train_minutes``; the models train one after the other, never together. Default budget: 2 x
12 min of training + evaluation ~ 30 min on 2 CPU cores; on a GPU raise ``--train_minutes``
(and pass ``--device cuda``). A run directory already in ``--runs`` is restarted, not resumed.

Evaluated for the checkpoints where the training time first passes 1/N, 2/N,
... of the budget (N = ``--eval_points``) and the final one, and for two baselines: the same
architecture untrained ("random init", seeded with ``--seed``) and MFCCs. Columns:

  train min      summed training-pass minutes of the evaluated checkpoint
  phone          frame phone accuracy of a linear probe on the contexts (best probe epoch,
                 cpc/eval/linear_separability.py defaults; MFCC: its 40-coefficient baseline)
  speaker        speaker accuracy of a linear probe on the time-mean of each window's contexts
  ABX within/across  phone ABX error in % (cpc/eval/ABX.py, angular distance, context
                 features; MFCC: 13 coefficients), LOWER is better; chance 50 %

The chance row gives the majority phone's and the majority speaker's share of the val frames
(what always guessing them scores; 1 / speakers is printed beside), and the ABX sample size
(items, cells and triplets per mode; "n/a" where a mode has none). The probes are trained on
the train split and scored on the val split; ABX is scored on every file of the corpus (the val
split alone is too small for ABX within; self-supervised training sees no labels). The targets (CPC and CPC-CTC beat MFCC on
phone, speaker and ABX; CPC-CTC >= CPC) are computed from the final checkpoints and printed
one per line, whatever they are: nothing here is tuned to win.

Note: the budget is checked between epochs, so a model trains whole epochs and may overrun it
by up to one epoch (the table shows the minutes actually trained); when an epoch is longer
than a third of the budget, the 1/3 and 2/3 evaluation points fall on the same epochs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cpc.data.audio import read_audio  # noqa: E402
from cpc.data.labels import parseSeqLabels  # noqa: E402
from cpc.data.splits import read_split_list  # noqa: E402
from cpc.demo import train_command  # noqa: E402
from cpc.eval import ABX, abx_core, linear_separability  # noqa: E402
from cpc.eval.build_zeroSpeech_features import list_files_by_stem  # noqa: E402
from cpc.eval.make_abx_items import make_items, read_phone_symbols, write_item_file  # noqa: E402
from cpc.feature_loader import loadArgs  # noqa: E402
from cpc.model import build_model  # noqa: E402
from cpc.utils import checkpoint as ckpt  # noqa: E402
from cpc.audio_features import mfcc  # noqa: E402
from cpc.corpora.synthetic import generate_corpus  # noqa: E402

CPCCTC_FLAGS = ["--CPCCTC", "--CPCCTCNumMatched", "12", "--CPCCTCSelfLoop", "--CPCCTCSkipBeg",
                "1", "--CPCCTCSkipEnd", "2", "--limitNegsInBatch", "8"]
MODELS = {"cpc": ("CPC", []), "cpcctc": ("CPC-CTC", CPCCTC_FLAGS)}
RANDOM, MFCC = "CPC (untrained)", "MFCC"
METRICS = ("phone", "speaker", "abx_within", "abx_across")
LOWER_IS_BETTER = {"abx_within", "abx_across"}


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------

def prepare_corpus(root: Path, speakers: int) -> dict:
    """Generate (or reuse) the corpus; returns its summary as a dict."""
    summary = generate_corpus(root, speakers, 2, 10, seed=0)
    print(f"corpus: {summary.n_files} files, {summary.n_speakers} speakers, "
          f"{summary.total_seconds / 60:.1f} min of audio at {root}"
          f"{' (reused)' if summary.reused else ''}", flush=True)
    return {"root": str(root), "n_speakers": summary.n_speakers, "n_files": summary.n_files,
            "minutes": summary.total_seconds / 60, "n_phones": summary.n_phones}


def chance_levels(corpus: Path) -> dict:
    """What always guessing the majority class scores on the val frames (phone, speaker; the
    probes score windows, whose shares are close), 1 / speakers, and ABX chance (50 %)."""
    labels, _ = parseSeqLabels(corpus / "converted_aligned_phones.txt")
    stems = read_split_list(corpus / "val_split.txt")
    frames = np.concatenate([labels[s] for s in stems])
    per_speaker: dict[str, int] = {}
    for stem in stems:
        speaker = stem.split("-")[0]
        per_speaker[speaker] = per_speaker.get(speaker, 0) + len(labels[stem])
    return {"phone": float(np.bincount(frames).max() / len(frames)),
            "speaker": max(per_speaker.values()) / len(frames), "speaker_uniform":
            1 / len(per_speaker), "abx_within": 50.0, "abx_across": 50.0}


def abx_cells(corpus: Path, items_path: Path) -> dict:
    """Items, cells and triplets of each ABX mode on the items (one-hot phone features:
    the counts depend on the items only), so that the ABX columns' sample size is known."""
    labels, n_phones = parseSeqLabels(corpus / "converted_aligned_phones.txt")
    items = ABX.read_item_file(items_path)
    frames, ids, _ = ABX.gather_item_frames(
        items, lambda stem: np.eye(n_phones, dtype=np.float32)[labels[stem]], progress=False)
    counts = {"items": len(ids.phone)}
    for mode in ("within", "across"):
        result = abx_core.abx(frames, ids, mode)
        counts[mode] = {"cells": result.n_cells, "triplets": result.n_triplets}
    return counts


def abx_stems(corpus: Path) -> list[str]:
    """Every file of the corpus: the val split alone (2 files per speaker) holds too few
    same-speaker occurrences of a context for ABX within. No labels reach the training, so
    scoring ABX on the training audio leaks nothing."""
    return read_split_list(corpus / "train_split.txt") + read_split_list(corpus / "val_split.txt")


def write_items(corpus: Path, out: Path) -> Path:
    """ABX item file of every file (what ``python -m cpc.eval.make_abx_items`` writes)."""
    labels, _ = parseSeqLabels(corpus / "converted_aligned_phones.txt")
    items = make_items(labels, read_phone_symbols(corpus / "phones.txt"), abx_stems(corpus))
    write_item_file(out, items)
    return out


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def train_one_epoch(argv: list[str], log_file: Path, first: bool) -> int:
    """One cpc/train.py call (its output appended to log_file); returns its exit status."""
    with open(log_file, "w" if first else "a") as log:
        log.write(f"$ python cpc/train.py {shlex.join(argv)}\n")
        log.flush()
        return subprocess.run([sys.executable, str(ROOT / "cpc" / "train.py")] + argv,
                              stdout=log, stderr=subprocess.STDOUT).returncode


def epoch_records(logs: dict) -> list[dict]:
    """Per-epoch (epoch, cumulative training minutes, train loss, mean train accuracy)."""
    records, total = [], 0.0
    for epoch, seconds, loss, accs in zip(logs["epoch"], logs["train_seconds"],
                                          logs["loss_train"], logs["locAcc_train"]):
        total += seconds
        records.append({"epoch": epoch, "minutes": total / 60, "loss": loss,
                        "acc": sum(accs) / len(accs) if accs else float("nan")})
    return records


def train_model(name: str, flags: list[str], corpus: Path, run_dir: Path, minutes: float,
                seed: int, device: str) -> list[dict]:
    """Train epoch by epoch until the summed training passes reach ``minutes``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file, records, wall = run_dir / "train_output.txt", [], time.time()
    while not records or records[-1]["minutes"] < minutes:
        argv = train_command(corpus, run_dir, len(records) + 1, seed) + flags + \
            ["--device", device] + ([] if records else ["--restart"])
        if not records:
            print(f"training {name}: python cpc/train.py {shlex.join(argv)}  "
                  f"(one epoch per call; output in {log_file})", flush=True)
        status = train_one_epoch(argv, log_file, first=not records)
        logs_path = run_dir / ckpt.LOGS_FILE
        new = epoch_records(ckpt.read_json(logs_path)) if logs_path.is_file() else []
        grew = len(new) > len(records)
        if grew:
            records = new
            r = records[-1]
            print(f"  {name:8s} epoch {r['epoch']:3d}  {r['minutes']:6.2f} train min  loss "
                  f"{r['loss']:.4f}  acc {r['acc']:.3f}  ({(time.time() - wall) / 60:.1f} "
                  f"wall min)", flush=True)
        if status != 0 or not grew:
            tail = log_file.read_text()[-2000:]
            if not records:
                raise SystemExit(f"training {name} failed (exit {status}):\n{tail}")
            print(f"{name}: training stopped (exit {status}) after epoch "
                  f"{records[-1]['epoch']}; evaluating what it reached. Output tail:\n{tail}")
            break
    return records


def eval_epochs(records: list[dict], minutes: float, points: int) -> list[int]:
    """Epochs where training time first passes k/points of the budget, and the last epoch."""
    chosen = {records[-1]["epoch"]}
    for k in range(1, points):
        chosen.add(next((r["epoch"] for r in records if r["minutes"] >= k / points * minutes),
                        records[-1]["epoch"]))
    return sorted(chosen)


def write_random_init(run_dir: Path, out: Path, seed: int) -> Path:
    """The run's architecture untrained, as a checkpoint directory ABX and the probes load.

    Seeded as linear_separability's ``--features random_init`` (torch.manual_seed, then
    build_model), so both see the same weights."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / ckpt.ARGS_FILE, out / ckpt.ARGS_FILE)
    torch.manual_seed(seed)
    model = build_model(loadArgs(out / ckpt.ARGS_FILE))
    path = ckpt.checkpoint_path(out, 0)
    ckpt.save_checkpoint(path, {"gEncoder": model.state_dict(), "epoch": 0})
    return path


def write_mfcc13(corpus: Path, out: Path) -> Path:
    """13 MFCCs (T x 13, 10 ms frames) of every ABX file as ``<stem>.npy``."""
    out.mkdir(parents=True, exist_ok=True)
    audio = list_files_by_stem(corpus, ".flac")
    for stem in abx_stems(corpus):
        features = mfcc(torch.from_numpy(read_audio(audio[stem])), n_mfcc=13, n_mels=40,
                        n_fft=512, win_length=400).T
        np.save(out / f"{stem}.npy", features.numpy().astype(np.float32))
    return out


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

def probe(corpus: Path, features: str, checkpoint: Path | None, out: Path, seed: int,
          device: str) -> dict:
    """Speaker and phone probes, in-process, as ``cpc.demo.probe_table`` runs them."""
    argv = [str(corpus), str(corpus / "train_split.txt"), str(corpus / "val_split.txt")]
    argv += [str(checkpoint)] if checkpoint is not None else []
    argv += ["--features", features, "--pathPhone", str(corpus / "converted_aligned_phones.txt"),
             "--out", str(out), "--seed", str(seed), "--n_process_loader", "2",
             "--device", device]
    print(f"probing: python cpc/eval/linear_separability.py {shlex.join(argv)}", flush=True)
    if linear_separability.main(argv) != 0:
        raise SystemExit(f"probing {features} {checkpoint or ''} failed")
    return json.loads((out / "results.json").read_text())


def abx(argv: list[str], out: Path) -> dict:
    """ABX in-process; returns errors in %, None where a mode had no triplet."""
    argv = argv + ["--out", str(out)]
    print(f"ABX: python cpc/eval/ABX.py {shlex.join(argv)}", flush=True)
    if ABX.main(argv) != 0:
        raise SystemExit(f"ABX {argv[1]} failed")
    scores = json.loads((out / "ABX_scores.json").read_text())
    return {mode: None if scores.get(mode) is None else 100 * scores[mode]
            for mode in ("within", "across")}


def evaluate(corpus: Path, probe_features: str, probe_checkpoint: Path | None,
             abx_argv: list[str], out: Path, seed: int, device: str) -> dict:
    """Probe and ABX figures of one feature set (abx_argv: ABX.py's arguments before --out)."""
    start = time.time()
    probes = probe(corpus, probe_features, probe_checkpoint, out / "linsep", seed, device)
    scores = abx(abx_argv + ["--device", device], out / "abx")
    return {"phone": probes["phone_best_val_acc"], "speaker": probes["speaker_mean_best_val_acc"],
            "speaker_last": probes["speaker_best_val_acc"], "abx_within": scores["within"],
            "abx_across": scores["across"], "eval_minutes": (time.time() - start) / 60}


def evaluate_checkpoint(corpus: Path, items: Path, checkpoint: Path, out: Path, seed: int,
                        device: str, probe_features: str = "checkpoint") -> dict:
    """A checkpoint's contexts (probe_features "random_init": its architecture untrained)."""
    return evaluate(corpus, probe_features, checkpoint,
                    ["from_checkpoint", str(checkpoint), str(items), str(corpus),
                     "--file_extension", ".flac"], out, seed, device)


def evaluate_mfcc(corpus: Path, items: Path, out: Path, seed: int, device: str) -> dict:
    """The MFCC baseline: 40-coefficient probes, 13-coefficient ABX."""
    features = write_mfcc13(corpus, out / "mfcc13")
    return evaluate(corpus, "mfcc", None, ["from_pre_computed", str(features), str(items),
                                           "--file_extension", ".npy"], out, seed, device)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def row_text(label: str, minutes: float | None, m: dict) -> str:
    return (f"  {label:16s} {fmt(minutes, '9.2f'):>9s} {fmt(m.get('phone'), '7.3f'):>7s} "
            f"{fmt(m.get('speaker'), '8.3f'):>8s} {fmt(m.get('abx_within'), '11.2f'):>11s} "
            f"{fmt(m.get('abx_across'), '11.2f'):>11s}")


def print_final(rows: list[dict], chance: dict, cells: dict) -> None:
    print("\nfinal (val split; phone = frame accuracy, speaker = mean-pooled accuracy: higher is "
          "better; ABX error %: LOWER is better):")
    print(f"  {'features':16s} {'train min':>9s} {'phone':>7s} {'speaker':>8s} "
          f"{'ABX within':>11s} {'ABX across':>11s}")
    for row in rows:
        print(row_text(row["label"], row["minutes"], row))
    print(row_text("chance", None, chance))
    print(f"  (chance: majority phone's and speaker's share of val frames (1 / speakers = "
          f"{chance['speaker_uniform']:.3f}), ABX 50 %. ABX items (all files): {cells['items']}; within "
          f"{cells['within']['cells']} cells / {cells['within']['triplets']} triplets, across "
          f"{cells['across']['cells']} cells / {cells['across']['triplets']} triplets)")


def print_curve(points: list[dict]) -> None:
    print("\naccuracy against training time (val split):")
    print(f"  {'model':8s} {'epoch':>5s} {'train min':>9s} {'loss':>8s} {'phone':>7s} "
          f"{'speaker':>8s} {'ABX within':>11s} {'ABX across':>11s}")
    for p in points:
        print(f"  {p['label']:8s} {p['epoch']:5d} {p['minutes']:9.2f} {p['loss']:8.4f} "
              f"{fmt(p['phone'], '7.3f'):>7s} {fmt(p['speaker'], '8.3f'):>8s} "
              f"{fmt(p['abx_within'], '11.2f'):>11s} {fmt(p['abx_across'], '11.2f'):>11s}")


def compare(a: dict, b: dict, metric: str, strict: bool) -> str:
    """'yes (a vs b)' when a is better than b on metric (strict) or at least as good."""
    x, y = a.get(metric), b.get(metric)
    if x is None or y is None or math.isnan(x) or math.isnan(y):
        return f"n/a ({fmt(x, '.3f')} vs {fmt(y, '.3f')}: no score)"
    if metric in LOWER_IS_BETTER:
        x_wins = x < y if strict else x <= y
        spec = ".2f"
    else:
        x_wins = x > y if strict else x >= y
        spec = ".3f"
    return f"{'yes' if x_wins else 'no'} ({x:{spec}} vs {y:{spec}})"


METRIC_NAMES = {"phone": "phone", "speaker": "speaker", "abx_within": "ABX within (lower)",
                "abx_across": "ABX across (lower)"}


def verdicts(rows: dict[str, dict]) -> list[str]:
    """The issue's targets, computed from the final rows present."""
    lines = []
    for model in ("CPC", "CPC-CTC"):
        if model in rows and MFCC in rows:
            lines += [f"{model} beats MFCC on {METRIC_NAMES[m]}: "
                      f"{compare(rows[model], rows[MFCC], m, strict=True)}" for m in METRICS]
    if "CPC" in rows and "CPC-CTC" in rows:
        lines += [f"CPC-CTC >= CPC on {METRIC_NAMES[m]}: "
                  f"{compare(rows['CPC-CTC'], rows['CPC'], m, strict=False)}" for m in METRICS]
    return lines


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "learning_corpus")
    parser.add_argument("--speakers", type=int, default=40)
    parser.add_argument("--train_minutes", type=float, default=12.0,
                        help="training-pass minutes per model (raise it on a GPU)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--seed", type=int, default=0, help="training, probe and init seed")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["cpc", "cpcctc"])
    parser.add_argument("--eval_points", type=int, default=3,
                        help="checkpoints evaluated per model: at k/N of the budget and the end")
    parser.add_argument("--skip_baselines", action="store_true",
                        help="no MFCC / random-init rows (and no verdicts against MFCC)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "learning_bench",
                        help="output directory (run directories are restarted)")
    parser.add_argument("--json", type=Path, default=None, help="also write everything here")
    args = parser.parse_args(argv)
    if args.train_minutes <= 0 or args.eval_points < 1:
        parser.error("--train_minutes must be positive and --eval_points at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.time()
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
               f"average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
               f"cuda {'available' if torch.cuda.is_available() else 'not available'}")
    command = "python bench/learning_bench.py " + shlex.join(sys.argv[1:] if argv is None
                                                             else argv)
    print(f"machine: {machine}\ncommand: {command}", flush=True)
    corpus = prepare_corpus(args.corpus, args.speakers)
    chance = chance_levels(args.corpus)
    args.runs.mkdir(parents=True, exist_ok=True)
    items = write_items(args.corpus, args.runs / "all.item")
    cells = abx_cells(args.corpus, items)
    models = [m for m in MODELS if m in args.models]

    training = {}
    for model in models:
        label, flags = MODELS[model]
        training[model] = train_model(label, flags, args.corpus, args.runs / model,
                                      args.train_minutes, args.seed, args.device)
    train_wall = (time.time() - wall) / 60

    points, final = [], {}
    for model in models:
        label, records = MODELS[model][0], training[model]
        for epoch in eval_epochs(records, args.train_minutes, args.eval_points):
            record = next(r for r in records if r["epoch"] == epoch)
            checkpoint = ckpt.checkpoint_path(args.runs / model, epoch)
            metrics = evaluate_checkpoint(args.corpus, items, checkpoint,
                                          args.runs / model / f"eval_{epoch}", args.seed,
                                          args.device)
            points.append({"label": label, "model": model, **record, **metrics})
        final[label] = {"label": label, **points[-1]}
    if not args.skip_baselines:
        random_ckpt = write_random_init(args.runs / models[0], args.runs / "random_init",
                                        args.seed)
        final[RANDOM] = {"label": RANDOM, "minutes": 0.0, **evaluate_checkpoint(
            args.corpus, items, random_ckpt, args.runs / "random_init", args.seed, args.device,
            probe_features="random_init")}
        final[MFCC] = {"label": MFCC, "minutes": None,
                       **evaluate_mfcc(args.corpus, items, args.runs / "mfcc", args.seed,
                                       args.device)}

    print(f"\nmachine: {machine}\ncommand: {command}")
    print(f"corpus: {corpus['n_speakers']} speakers, {corpus['n_files']} files, "
          f"{corpus['minutes']:.1f} min of audio; budget {args.train_minutes:g} training min "
          f"per model")
    print_final(list(final.values()), chance, cells)
    print_curve(points)
    lines = verdicts(final)
    print("\ntargets (final checkpoints):" if lines else "")
    for line in lines:
        print(f"  {line}")
    total = (time.time() - wall) / 60
    print(f"\nwall time: {total:.1f} min ({train_wall:.1f} training incl. start-up and "
          f"validation passes, {total - train_wall:.1f} evaluation)")
    if args.json:
        ckpt.write_json(args.json, {"machine": machine, "command": command, "corpus": corpus,
                                    "args": {k: str(v) if isinstance(v, Path) else v
                                             for k, v in vars(args).items()},
                                    "chance": chance, "abx_cells": cells, "training": training,
                                    "curve": points, "final": final, "verdicts": lines,
                                    "wall_minutes": total})
    return 0


if __name__ == "__main__":
    sys.exit(main())
