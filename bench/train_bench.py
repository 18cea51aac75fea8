"""CPC training-step figures: audio seconds per wall-second, step split, peak RSS.

    python bench/train_bench.py [--steps 20] [--batch 8] [--device cpu]

Each configuration runs in its own process (so peak RSS is its own): the default architecture
(CPC encoder 256, LSTM 256, 12 transformer heads, 128 negatives) and the same with
``--rnnMode linear``. A step is split into encoder+AR (forward and backward through the model)
and criterion (forward and backward of the loss given the model outputs), plus the optimizer.
Figures are medians over steps after two warm-up steps.
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


def measure(flags: list[str], steps: int, batch: int, device_name: str) -> dict:
    import torch

    from cpc.criterion import build_criterion
    from cpc.model import build_model
    from cpc.options import build_parser
    from cpc.utils.optim import build_optimizer

    args = build_parser().parse_args(["--pathDB", "unused"] + flags)
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = build_model(args).to(device)
    criterion = build_criterion("cpc", args, dim_context=model.dim_context,
                                dim_encoded=model.dim_encoded).to(device)
    optimizer, _ = build_optimizer(list(model.parameters()) + list(criterion.parameters()),
                                   args.learningRate, args.beta1, args.beta2, args.epsilon,
                                   None, -1)
    audio = torch.randn(batch, 1, args.sizeWindow, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    model_times, criterion_times, step_times = [], [], []
    for step in range(steps + 2):
        sync()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        c, z, _ = model(audio, None)
        c_leaf = c.detach().requires_grad_()
        z_leaf = z.detach().requires_grad_()
        sync()
        t_model_fwd = time.perf_counter()
        out = criterion(c_leaf, z_leaf, None)
        out.loss.backward()
        sync()
        t_criterion = time.perf_counter()
        torch.autograd.backward([c, z], [c_leaf.grad, z_leaf.grad])
        sync()
        t_model_bwd = time.perf_counter()
        optimizer.step()
        sync()
        end = time.perf_counter()
        if step >= 2:
            model_times.append((t_model_fwd - start) + (t_model_bwd - t_criterion))
            criterion_times.append(t_criterion - t_model_fwd)
            step_times.append(end - start)
    step = statistics.median(step_times)
    return {"step_s": step, "model_s": statistics.median(model_times),
            "criterion_s": statistics.median(criterion_times),
            "audio_per_s": batch * args.sizeWindow / 16000 / step,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.one is not None:
        keep_freed_memory()  # as train.py does
        print(json.dumps(measure(CONFIGS[args.one], args.steps, args.batch, args.device)))
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"batch {args.batch} x 20480 samples; {args.steps} steps after 2 warm-up; "
          f"device {args.device}")
    print(f"command: python bench/train_bench.py --steps {args.steps} --batch {args.batch} "
          f"--device {args.device}")
    for name in CONFIGS:
        result = subprocess.run([sys.executable, __file__, "--one", name, "--steps",
                                 str(args.steps), "--batch", str(args.batch), "--device",
                                 args.device], check=True, capture_output=True, text=True)
        r = json.loads(result.stdout.strip().splitlines()[-1])
        share = r["criterion_s"] / r["step_s"]
        print(f"{name:15s}: {r['audio_per_s']:5.1f} s audio/s | step {r['step_s'] * 1000:6.0f} ms"
              f" = encoder+AR {r['model_s'] * 1000:5.0f} ms + criterion "
              f"{r['criterion_s'] * 1000:5.0f} ms ({share:.0%}) + optimizer | peak RSS "
              f"{r['peak_rss_gb']:.2f} GB | {r['threads']} threads")


if __name__ == "__main__":
    main()
