"""PASE and PASE+ training steps against a CPC step of the same batch and window, and where a
PASE+ step spends its time (encoder, each worker's target and head).

    python bench/pase_bench.py [--steps 8] [--batch 8] [--window 16000] [--threads 2]

A step is forward + backward + every optimiser's update, on random audio (targets are computed
from it like from speech). Figures are medians over steps after two warm-up steps; each
configuration runs in the same process, one after the other.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpc.utils.memory import keep_freed_memory  # noqa: E402 (after the path)

CONFIGS = {"CPC (train.py defaults)": None, "PASE (configs/pase.yaml)": "configs/pase.yaml",
           "PASE+ (configs/pase_plus.yaml)": "configs/pase_plus.yaml"}


def build(config: str | None, window: int):
    """Model, objective, optimisers and the parsed args of one configuration."""
    import torch

    from cpc.run_config import parse_args
    from cpc.train import build_training
    argv = ["--pathDB", "unused", "--sizeWindow", str(window)]
    args, pase = parse_args(argv + (["--config", str(ROOT / config)] if config else []))
    torch.manual_seed(0)
    return build_training(args, pase, torch.device("cpu"), n_speakers=8, n_phones=0)


def step_times(training, audio, speaker, steps: int) -> list[float]:
    import torch

    from cpc.data.batch import Batch
    from cpc.trainer import StepModule
    from cpc.utils.optim import Updater
    module = StepModule(training.model, training.objective)
    updater = Updater(training.optimizers, training.rates, training.parameter_parts())
    index = torch.arange(len(audio))
    batch = Batch(audio=audio, speaker=speaker, phones=None, seq_index=index,
                  seq_offset=torch.zeros_like(index))
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        out = module(batch)
        updater.zero_grad()
        out.loss.backward()
        updater.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return times


def worker_split(training, audio, speaker, steps: int) -> dict[str, tuple[float, float]]:
    """Per worker: median seconds of its target (labeller) and of its head forward+backward."""
    import torch
    encoded = training.model(audio, None)[1].detach()
    split = {}
    for name, worker in training.objective.workers.items():
        targets, heads = [], []
        for _ in range(steps):
            start = time.perf_counter()
            if hasattr(worker, "target"):
                with torch.no_grad():
                    worker.target(audio)
            middle = time.perf_counter()
            leaf = encoded.clone().requires_grad_()
            worker(leaf, audio, speaker).loss.backward()
            end = time.perf_counter()
            targets.append(middle - start)
            heads.append(end - middle - (middle - start))  # the call computes its target too
        split[name] = (statistics.median(targets), statistics.median(heads))
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=int, default=16000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()  # as train.py does
    import torch
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} thread(s)")
    print(f"command: python bench/pase_bench.py --steps {args.steps} --batch {args.batch} "
          f"--window {args.window} --threads {args.threads}")
    torch.manual_seed(0)
    audio = torch.randn(args.batch, 1, args.window) * 0.1
    speaker = torch.arange(args.batch) % 4
    medians = {}
    for label, config in CONFIGS.items():
        training = build(config, args.window)
        times = step_times(training, audio, speaker, args.steps)
        medians[label] = statistics.median(times)
        audio_rate = args.batch * args.window / 16000 / medians[label]
        print(f"{label}: step {medians[label]:.3f} s (runs: "
              f"{', '.join(f'{t:.3f}' for t in times)}), {audio_rate:.1f} s of audio/s")
        if config.endswith("pase_plus.yaml"):
            encoder = []
            for _ in range(args.steps):
                start = time.perf_counter()
                training.model(audio, None)[1].sum().backward()
                encoder.append(time.perf_counter() - start)
            print(f"  encoder forward+backward: {statistics.median(encoder):.3f} s")
            for name, (target, head) in worker_split(training, audio, speaker,
                                                      args.steps).items():
                print(f"  worker {name}: target {1000 * target:.1f} ms, head fwd+bwd "
                      f"{1000 * head:.1f} ms")
    cpc = medians["CPC (train.py defaults)"]
    for label, value in medians.items():
        print(f"{label} / CPC step: {value / cpc:.2f}x")


if __name__ == "__main__":
    main()
