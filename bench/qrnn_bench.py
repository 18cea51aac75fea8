"""QRNN vs nn.LSTM speed on CPU: one layer, forward and forward+backward, and the recurrence alone.

    python bench/qrnn_bench.py [--lengths 32 128 512] [--batch 8] [--hidden 256] [--input 256]
                               [--repeats 30] [--threads N]

Prints the machine, the command, then median milliseconds per call over ``--repeats`` timed
calls (after warm-up; the variants are timed in turn) and the LSTM / QRNN ratio of forward +
backward. ``forget_mult`` is compared with a naive Python loop under autograd. Figures to quote,
not a timed test: the load average is printed because other processes on a small machine move
them.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpc.qrnn import QRNN, forget_mult  # noqa: E402


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int,
                        warmup: int = 3) -> dict[str, float]:
    """Median ms per call of each run, timing them in turn so that load changes hit all alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def naive_forget_mult(f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The recurrence as a plain loop under autograd (what forget_mult replaces)."""
    h, steps = torch.zeros_like(f[0]), []
    for f_t, z_t in zip(f, z):
        h = f_t * h + (1 - f_t) * z_t
        steps.append(h)
    return torch.stack(steps)


def forward_backward(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        module(x)[0].sum().backward()
    return run


def forward_only(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            module(x)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--input", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    print("command: python bench/qrnn_bench.py " + " ".join(sys.argv[1:]))
    print(f"B={args.batch} input={args.input} hidden={args.hidden}, one layer, "
          f"median ms over {args.repeats} calls")

    qrnn = QRNN(args.input, args.hidden)  # window 1, output gate, as nn.LSTM's one layer
    lstm = torch.nn.LSTM(args.input, args.hidden)
    print(f"{'T':>5} {'QRNN fwd':>9} {'LSTM fwd':>9} {'QRNN f+b':>9} {'LSTM f+b':>9} {'ratio':>6} "
          f"{'forget_mult f+b':>15} {'naive loop f+b':>14}")
    for length in args.lengths:
        x = torch.randn(length, args.batch, args.input, requires_grad=True)
        f = torch.rand(length, args.batch, args.hidden, requires_grad=True)
        z = torch.randn(length, args.batch, args.hidden, requires_grad=True)
        ms = interleaved_medians({
            "qrnn_fwd": forward_only(qrnn, x), "lstm_fwd": forward_only(lstm, x),
            "qrnn_fb": forward_backward(qrnn, x), "lstm_fb": forward_backward(lstm, x),
            "fm_fb": lambda: forget_mult(f, z).sum().backward(),
            "naive_fb": lambda: naive_forget_mult(f, z).sum().backward()}, args.repeats)
        print(f"{length:>5} {ms['qrnn_fwd']:>9.2f} {ms['lstm_fwd']:>9.2f} {ms['qrnn_fb']:>9.2f} "
              f"{ms['lstm_fb']:>9.2f} {ms['lstm_fb'] / ms['qrnn_fb']:>5.1f}x {ms['fm_fb']:>15.2f} "
              f"{ms['naive_fb']:>14.2f}")

if __name__ == "__main__":
    main()
