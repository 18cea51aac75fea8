"""This project against CPC_audio (and its CPC-CTC fork) on the same corpus, split and
configuration: wall time, steps, windows trained, trained audio seconds per wall second and
peak RSS of N epochs.

    python bench/compare_cpc_audio.py --cpc_audio PATH [--fork PATH] [--corpus DIR]
        [--files 64] [--epochs 1] [--repeats 1] [--only cpc_transformer cpc_linear cpcctc]
        [--device cpu|cuda] [--precision fp32|bf16|fp16]

PATH is a checkout of facebookresearch/CPC_audio (``--fork``: chorowski-lab/CPC_audio, for the
CPC-CTC row). Their code assumes CUDA and torchaudio: with ``--device cpu`` a small runner
(written to a temporary directory) makes ``.cuda()`` a no-op and reports one device; on either
device a stand-in provides the two torchaudio calls their data loading needs through soundfile
(torchaudio 2.9 removed them); their other requirements (psutil, progressbar2) must be
installed. ``--precision`` is this project's (theirs has only float32). Nothing in the
checkouts is modified. Each run is one whole process, one at a time; peak RSS includes its
children (data loading). Without ``--cpc_audio`` only this project's rows are measured.

Besides whole runs (start-up included), the table gives the last epoch's wall time (training,
validation, checkpoint) and its trained audio per second: with ``--epochs 2`` or more, the
steady state, which is what a long GPU run sees.

The two samplers do not cut an epoch into the same windows: with its random offset, CPC_audio's
same-speaker sampler takes ``n // sizeWindow - 1`` windows of a speaker's ``n`` samples (185 in
31 batches on the default split, counted by running its sampler), this project's
``(n - offset) // sizeWindow`` (about 198 in 36 batches). So besides the wall-time ratio the
table gives the ratio of trained audio per wall second, which does not favour the system that
trains on more windows. With ``--repeats R`` each config runs R times, the two systems
alternating; the table gives the medians, and each ratio is the median of the R pairs' ratios
(a 2-core virtual machine's speed drifts by 10-20% between minutes).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFIGS = {
    "cpc_transformer": ["--rnnMode", "transformer"],
    "cpc_linear": ["--rnnMode", "linear"],
    "cpcctc": ["--rnnMode", "transformer", "--nPredicts", "8", "--CPCCTC",
               "--CPCCTCNumMatched", "12", "--CPCCTCSelfLoop", "--CPCCTCSkipBeg", "1",
               "--CPCCTCSkipEnd", "2"],
}
WINDOW, SAMPLE_RATE, BATCH = 20480, 16000, 8
COMMON = ["--batchSizeGPU", str(BATCH), "--sizeWindow", str(WINDOW), "--hiddenEncoder", "256",
          "--hiddenGar", "256", "--nPredicts", "12", "--negativeSamplingExt", "128",
          "--samplingType", "samespeaker", "--n_process_loader", "2", "--random_seed", "0",
          "--save_step", "1"]

TORCHAUDIO_SHIM = '''"""torchaudio's info() and load(), through soundfile (for running CPC_audio on CPU)."""
import soundfile
import torch


class _Info:
    def __init__(self, path):
        info = soundfile.info(path)
        self.length = self.num_frames = info.frames
        self.rate = self.sample_rate = info.samplerate


def info(path):
    return _Info(path), None


def load(path):
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), rate
'''

RUNNER = '''"""Run a CUDA-only training script on CPU: .cuda() is a no-op and one device is reported."""
import runpy
import sys

import torch

torch.Tensor.cuda = lambda self, *args, **kwargs: self
torch.nn.Module.cuda = lambda self, *args, **kwargs: self
torch.cuda.device_count = lambda: 1

if __name__ == "__main__":
    script, sys.argv = sys.argv[1], sys.argv[1:]
    sys.path[0] = str(__import__("pathlib").Path(script).resolve().parent)  # as `python script`
    runpy.run_path(script, run_name="__main__")
'''


def write_split(corpus: Path, n_files: int, out: Path) -> tuple[Path, Path]:
    """Train / val lists of the first ``n_files`` stems of the corpus's split (seeded)."""
    stems = (corpus / "train_split.txt").read_text().split()
    random.Random(0).shuffle(stems)
    train, val = out / "train.txt", out / "val.txt"
    train.write_text("\n".join(sorted(stems[:n_files])) + "\n")
    val.write_text("\n".join((corpus / "val_split.txt").read_text().split()[:8]) + "\n")
    return train, val


def measure(name: str, system: str, checkout: Path | None, corpus: Path, split: tuple[Path, Path],
            epochs: int, work: Path, repeat: int = 0, device: str = "cpu",
            precision: str = "fp32") -> dict:
    run_dir = work / f"{system}_{name}_{repeat}"
    flags = ["--pathDB", str(corpus), "--pathTrain", str(split[0]), "--pathVal", str(split[1]),
             "--file_extension", ".flac", "--pathCheckpoint", str(run_dir),
             "--nEpoch", str(epochs)] + COMMON + CONFIGS[name]
    env = {**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())}
    if system == "this project":
        command = [sys.executable, str(ROOT / "cpc" / "train.py")] + flags + \
            ["--device", device, "--precision", precision]
    else:
        env["PYTHONPATH"] = f"{work / 'shim'}{os.pathsep}{checkout}"
        runner = [str(work / "shim" / "run_on_cpu.py")] if device == "cpu" else []
        command = [sys.executable] + runner + [str(checkout / "cpc" / "train.py")] + flags
    # one process at a time: RUSAGE_CHILDREN's peak is the largest so far, so each run is
    # measured in its own interpreter
    wrapper = [sys.executable, "-c",
               "import resource, subprocess, sys, time; t = time.perf_counter(); "
               "code = subprocess.call(sys.argv[1:]); "
               "print(f'@@ {code} {time.perf_counter() - t:.2f} "
               "{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20:.2f}')"]
    log = work / f"{system.replace(' ', '_')}_{name}_{repeat}.log"
    out = subprocess.run(wrapper + command, env=env, capture_output=True, text=True)
    log.write_text(out.stdout + out.stderr)
    code, wall, peak = out.stdout.strip().splitlines()[-1].split()[1:]
    if system == "this project":
        steps, windows = our_steps_and_windows(out.stdout + out.stderr)
        epoch_s = our_last_epoch_seconds(run_dir)
    else:
        steps, windows = cpc_audio_steps_and_windows(corpus, split[0])
        steps, windows = steps * epochs, windows * epochs
        epoch_s = cpc_audio_last_epoch_seconds(out.stdout)
    return {"code": int(code), "wall_s": float(wall), "peak_gb": float(peak), "steps": steps,
            "windows": windows, "audio_per_s": windows * WINDOW / SAMPLE_RATE / float(wall),
            "epoch_s": epoch_s,
            "epoch_audio_per_s": windows / epochs * WINDOW / SAMPLE_RATE / max(epoch_s, 1e-9)}


def our_last_epoch_seconds(run_dir: Path) -> float:
    """The last epoch's wall time (training, validation, hooks) from the run log."""
    logs_file = run_dir / "checkpoint_logs.json"
    if not logs_file.is_file():
        return float("nan")
    return float(json.loads(logs_file.read_text())["epoch_seconds"][-1])


def cpc_audio_last_epoch_seconds(log: str) -> float:
    """CPC_audio prints 'Ran N epochs in T seconds' after each epoch (T since the start)."""
    totals = [float(t) for t in re.findall(r"Ran \d+ epochs in ([\d.]+) seconds", log)]
    if not totals:
        return float("nan")
    return totals[-1] - (totals[-2] if len(totals) > 1 else 0.0)



def our_steps_and_windows(log: str) -> tuple[int, int]:
    """Steps (progress bar totals) and windows (each epoch line's seconds x audio rate) trained."""
    steps = sum(int(n) for n in re.findall(r"train:\s+0%\|[^|]*\|\s*0/(\d+)", log))
    audio = sum(float(t) * float(rate) for t, rate in
                re.findall(r"\| ([\d.]+) s, ([\d.]+) s audio/s", log))
    return steps, round(audio * SAMPLE_RATE / WINDOW)


def cpc_audio_steps_and_windows(corpus: Path, train_list: Path) -> tuple[int, int]:
    """One epoch of CPC_audio's same-speaker sampler with a random offset > 0: each speaker's
    audio gives ``n // sizeWindow - 1`` windows, cut into batches of at most ``BATCH``."""
    import soundfile
    stems = set(train_list.read_text().split())
    per_speaker: dict[str, int] = {}
    for path in corpus.rglob("*.flac"):
        if path.stem in stems:
            speaker = path.relative_to(corpus).parts[0]
            per_speaker[speaker] = per_speaker.get(speaker, 0) + soundfile.info(path).frames
    windows = [max(0, n // WINDOW - 1) for n in per_speaker.values()]
    return sum(-(-w // BATCH) for w in windows), sum(windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpc_audio", type=Path, default=None)
    parser.add_argument("--fork", type=Path, default=None)
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "demo_corpus")
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="this project's --precision (CPC_audio runs in float32)")
    args = parser.parse_args()
    if not (args.corpus / "train_split.txt").is_file():
        raise SystemExit(f"{args.corpus} is not the built-in corpus: run `make demo` or "
                         f"python -m cpc.corpora.synthetic {args.corpus} ...")
    work = Path(tempfile.mkdtemp(prefix="compare_cpc_audio_"))
    (work / "shim" / "torchaudio").mkdir(parents=True)
    (work / "shim" / "torchaudio" / "__init__.py").write_text(TORCHAUDIO_SHIM)
    (work / "shim" / "run_on_cpu.py").write_text(RUNNER)
    missing = [name for name in ("psutil", "progressbar")
               if args.cpc_audio and importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"CPC_audio imports {', '.join(missing)}: pip install psutil "
                         f"progressbar2 (torchaudio is provided by this script)")
    split = write_split(args.corpus, args.files, work)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"command: python bench/compare_cpc_audio.py --cpc_audio {args.cpc_audio} --fork "
          f"{args.fork} --files {args.files} --epochs {args.epochs} --repeats {args.repeats} "
          f"--device {args.device} --precision {args.precision}; logs in {work}")
    print("| config | system | wall (s) | steps | windows trained | trained audio s per wall s "
          "| last epoch (s) | its audio s per s | peak RSS (GB) | exit |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.only:
        other = args.fork if name == "cpcctc" else args.cpc_audio
        systems = [("this project", None)] + ([("CPC_audio" if name != "cpcctc" else "fork",
                                                 other)] if other else [])
        runs: dict[str, list[dict]] = {system: [] for system, _ in systems}
        for repeat in range(args.repeats):
            for system, checkout in systems:
                runs[system].append(measure(name, system, checkout, args.corpus, split,
                                            args.epochs, work, repeat, args.device,
                                            args.precision))
        rows = {system: median_row(measured) for system, measured in runs.items()}
        for system, row in rows.items():
            print(f"| {name} | {system} | {row['wall_s']:.1f} | {row['steps']} | {row['windows']} | "
                  f"{row['audio_per_s']:.2f} | {row['epoch_s']:.1f} | "
                  f"{row['epoch_audio_per_s']:.1f} | {row['peak_gb']:.2f} | {row['code']} |",
                  flush=True)
        if len(rows) == 2:
            ours, theirs = runs["this project"], next(r for s, r in runs.items()
                                                     if s != "this project")
            pairs = list(zip(ours, theirs))
            wall = statistics.median(t["wall_s"] / o["wall_s"] for o, t in pairs)
            throughput = statistics.median(o["audio_per_s"] / t["audio_per_s"] for o, t in pairs)
            memory = statistics.median(t["peak_gb"] / max(o["peak_gb"], 1e-9) for o, t in pairs)
            walls = ", ".join(f"{t['wall_s'] / o['wall_s']:.2f}" for o, t in pairs)
            steady = statistics.median(o["epoch_audio_per_s"] / t["epoch_audio_per_s"]
                                       for o, t in pairs)
            print(f"| {name} | ratio | {wall:.2f}x less wall time ({walls}) | | | "
                  f"{throughput:.2f}x the throughput | | {steady:.2f}x the last epoch's "
                  f"throughput | {memory:.2f}x less memory | |")


def median_row(runs: list[dict]) -> dict:
    """Each figure's median over the repeats (exit code: the worst)."""
    row = {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "code"}
    row["code"] = max(run["code"] for run in runs)
    row["steps"], row["windows"] = round(row["steps"]), round(row["windows"])
    return row


if __name__ == "__main__":
    main()
