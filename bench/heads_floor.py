"""How close the transformer prediction heads run to this machine's matrix-multiply speed.

    python bench/heads_floor.py [--heads 12] [--batch 8] [--window 20480] [--anchors N]

Counts the multiply-adds of K CPC_audio-style transformer heads (one causal layer each: Q/K/V/O
projections, 8-head attention with relative keys, a 2048-wide ReLU feed-forward block) on
``batch x (window / 160 - K)`` anchors, forward and backward (backward = twice the forward's
matmul work), times the largest of those matmuls (the feed-forward one) to get the machine's
attainable float32 matmul rate, and compares the real heads' forward+backward with the
floor that rate gives. With ``--anchors N`` (anchors in one epoch, e.g. 199 windows x 116) it
also prints the epoch's floor: no implementation of the same heads trains that epoch faster on
this machine. The matmul rate is the best of 20 runs (the attainable rate), the heads' time the
median of 10, each after 2 warm-up runs.
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

DIM, DIM_FF = 256, 2048


def head_macs_per_anchor(window: int) -> int:
    """Forward multiply-adds of one head for one anchor (query) in a window of ``window`` frames."""
    projections = 4 * DIM * DIM
    feed_forward = 2 * DIM * DIM_FF
    attention = 2 * window * DIM  # Q.K^T and weights.V over the (masked) window
    relative_keys = window * DIM  # q . r_d for every distance d < window
    return projections + feed_forward + attention + relative_keys


def run_seconds(fn, runs: int, warmup: int = 2) -> list[float]:
    times = []
    for run in range(warmup + runs):
        start = time.perf_counter()
        fn()
        if run >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=int, default=20480)
    parser.add_argument("--anchors", type=int, default=None)
    args = parser.parse_args()
    keep_freed_memory()  # as train.py does
    import torch

    from cpc.criterion.cpc import PredictionHeads

    frames = args.window // 160 - args.heads
    anchors = args.batch * frames
    flops = 2 * 3 * args.heads * anchors * head_macs_per_anchor(frames)
    x = torch.randn(anchors, DIM)
    w1 = torch.randn(DIM_FF, DIM)
    grad = torch.randn(anchors, DIM_FF)
    ff_seconds = min(run_seconds(lambda: (x @ w1.t(), grad @ w1, grad.t() @ x), runs=20))
    rate = 3 * 2 * anchors * DIM * DIM_FF / ff_seconds
    torch.manual_seed(0)
    heads = PredictionHeads(args.heads, DIM, DIM, "transformer", max_rel_distance=frames)
    c = torch.randn(args.batch, frames, DIM, requires_grad=True)
    real = statistics.median(run_seconds(lambda: heads(c).sum().backward(), runs=10))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"command: python bench/heads_floor.py --heads {args.heads} --batch {args.batch} "
          f"--window {args.window}" + (f" --anchors {args.anchors}" if args.anchors else ""))
    print(f"{args.heads} transformer heads, {anchors} anchors: {flops / 1e9:.1f} GFLOP forward+backward")
    print(f"feed-forward matmuls (forward, both backward): {rate / 1e9:.0f} GFLOP/s")
    print(f"floor {flops / rate:.3f} s; the heads forward+backward {real:.3f} s "
          f"({flops / rate / real:.0%} of the matmul rate)")
    if args.anchors:
        print(f"epoch of {args.anchors} anchors: floor {args.anchors / anchors * flops / rate:.1f} s, "
              f"the heads {args.anchors / anchors * real:.1f} s")


if __name__ == "__main__":
    main()
