"""CPC training-step figures: audio seconds per wall-second, step split, peak memory.

    python bench/train_bench.py [--steps 20] [--batch 8] [--device cpu] [--precision fp32 ...]

Each configuration runs in its own process (so peak memory is its own): the default
architecture (CPC encoder 256, LSTM 256, 12 transformer heads, 128 negatives) and the same with
``--rnnMode linear``, in each ``--precision`` (train.py's autocast; fp16 with its loss scale).
A step is split into encoder+AR (forward and backward through the model) and criterion
(forward and backward of the loss given the model outputs), plus the optimizer. Figures are
medians over steps after two warm-up steps; on CUDA peak memory is the GPU's
(``torch.cuda.max_memory_allocated``), on CPU the process's RSS. ``--device cuda`` without a
GPU prints that and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpc.utils.memory import keep_freed_memory  # noqa: E402 (after the path)

CONFIGS = {"default": [], "rnnMode linear": ["--rnnMode", "linear"]}


def measure(flags: list[str], steps: int, batch: int, device_name: str,
            precision: str = "fp32") -> dict:
    import torch

    from cpc.criterion.registry import build_criterion
    from cpc.model import build_model
    from cpc.options import build_parser
    from cpc.precision import autocast, loss_scaler, set_tf32
    from cpc.utils.optim import Updater, build_optimizer

    args = build_parser().parse_args(["--pathDB", "unused"] + flags)
    device = torch.device(device_name)
    if device.type == "cuda":
        set_tf32(True)  # train.py's default
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = build_model(args).to(device)
    criterion = build_criterion("cpc", args, dim_context=model.dim_context,
                                dim_encoded=model.dim_encoded).to(device)
    optimizer, rate = build_optimizer(list(model.parameters()) +
                                           list(criterion.parameters()), args.learningRate,
                                           args.beta1, args.beta2, args.epsilon, None, -1)
    updater = Updater({"model": optimizer}, {"model": rate},
                      {"all": list(model.parameters()) + list(criterion.parameters())},
                      scaler=loss_scaler(precision, device))
    audio = torch.randn(batch, 1, args.sizeWindow, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    model_times, criterion_times, step_times = [], [], []
    for step in range(steps + 2):
        sync()
        start = time.perf_counter()
        updater.zero_grad()
        with autocast(precision, device):
            c, z, _ = model(audio, None)
        c_leaf = c.detach().requires_grad_()
        z_leaf = z.detach().requires_grad_()
        sync()
        t_model_fwd = time.perf_counter()
        with autocast(precision, device):
            out = criterion(c_leaf, z_leaf, None)
        updater.backward(out.loss)
        sync()
        t_criterion = time.perf_counter()
        torch.autograd.backward([c, z], [c_leaf.grad, z_leaf.grad])
        sync()
        t_model_bwd = time.perf_counter()
        updater.step()
        sync()
        end = time.perf_counter()
        if step >= 2:
            model_times.append((t_model_fwd - start) + (t_model_bwd - t_criterion))
            criterion_times.append(t_criterion - t_model_fwd)
            step_times.append(end - start)
    step = statistics.median(step_times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"step_s": step, "model_s": statistics.median(model_times),
            "criterion_s": statistics.median(criterion_times),
            "audio_per_s": batch * args.sizeWindow / 16000 / step, "peak_gb": peak,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["fp32"],
                        choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--only", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.one is not None:
        if args.device == "cpu":
            keep_freed_memory()  # as train.py does
        print(json.dumps(measure(CONFIGS[args.one], args.steps, args.batch, args.device,
                                 args.precision[0])))
        return
    if args.device == "cuda" and not cuda_available():
        print("train_bench: no CUDA device here; nothing measured")
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"batch {args.batch} x 20480 samples; {args.steps} steps after 2 warm-up; "
          f"device {args.device}")
    print(f"command: python bench/train_bench.py --steps {args.steps} --batch {args.batch} "
          f"--device {args.device} --precision {' '.join(args.precision)}")
    memory = "peak GPU memory" if args.device == "cuda" else "peak RSS"
    for name in args.only:
        for precision in args.precision:
            result = subprocess.run([sys.executable, __file__, "--one", name, "--steps",
                                     str(args.steps), "--batch", str(args.batch), "--device",
                                     args.device, "--precision", precision], check=True,
                                    capture_output=True, text=True)
            r = json.loads(result.stdout.strip().splitlines()[-1])
            share = r["criterion_s"] / r["step_s"]
            print(f"{name:15s} {precision}: {r['audio_per_s']:6.1f} s audio/s | step "
                  f"{r['step_s'] * 1000:6.1f} ms = encoder+AR {r['model_s'] * 1000:5.1f} ms + "
                  f"criterion {r['criterion_s'] * 1000:5.1f} ms ({share:.0%}) + optimizer | "
                  f"{memory} {r['peak_gb']:.2f} GB | {r['threads']} threads", flush=True)


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
