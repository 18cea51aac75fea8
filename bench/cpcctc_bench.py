"""CPC-CTC figures: soft_align forward+backward time, and a CPC-CTC training step vs CPC's.

    python bench/cpcctc_bench.py [--steps 10] [--batch 8] [--device cpu] [--threads N]

soft_align: forward+backward on 4096 anchors (M=12, K=9, skips 1/2), median over 50 calls
after 5 warm-up calls. Training step: the default model (CPC encoder 256, LSTM 256, 128
negatives, batch x 20480 samples) with CPC (--nPredicts 12) and with CPC-CTC as in the README
(--nPredicts 8 --CPCCTCNumMatched 12 --CPCCTCSelfLoop --CPCCTCSkipBeg 1 --CPCCTCSkipEnd 2), for
--rnnMode linear and transformer. Each rnnMode runs in its own process, alternating CPC and
CPC-CTC steps so that load changes on the machine hit both alike; medians over steps after two
warm-up steps (step = forward, backward and optimizer; the criterion time is its own forward
and backward given the model outputs), and the median ratio of consecutive steps.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpc.utils.memory import keep_freed_memory  # noqa: E402 (after the path)

CPCCTC_FLAGS = ["--nPredicts", "8", "--CPCCTC", "--CPCCTCNumMatched", "12", "--CPCCTCSelfLoop",
                "--CPCCTCSkipBeg", "1", "--CPCCTCSkipEnd", "2"]
CRITERIA = {"CPC": ["--nPredicts", "12"], "CPC-CTC": CPCCTC_FLAGS}
RNN_MODES = ["linear", "transformer"]


def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def soft_align_ms(device_name: str, calls: int = 50, warmup: int = 5) -> float:
    """Median milliseconds of soft_align forward+backward on 4096 x 12 x 9 scores, skips 1/2."""
    import torch

    from cpc.criterion.soft_align import soft_align

    device = torch.device(device_name)
    log_scores = torch.randn(4096, 12, 9, device=device).log_softmax(-1).requires_grad_()
    times = []
    for call in range(warmup + calls):
        sync(device)
        start = time.perf_counter()
        cost, _ = soft_align(log_scores, 1, 2)
        cost.sum().backward()
        sync(device)
        if call >= warmup:
            times.append(time.perf_counter() - start)
        log_scores.grad = None
    return statistics.median(times) * 1000


class Setup:
    """Model, criterion and optimizer of one configuration, and its step timings."""

    def __init__(self, flags: list[str], batch: int, device):
        import torch

        from cpc.criterion.registry import build_criterion
        from cpc.model import build_model
        from cpc.options import build_parser
        from cpc.utils.optim import build_optimizer

        args = build_parser().parse_args(["--pathDB", "unused"] + flags)
        torch.manual_seed(0)
        self.device = device
        self.model = build_model(args).to(device)
        self.criterion = build_criterion("cpcctc" if args.CPCCTC else "cpc", args,
                                         dim_context=self.model.dim_context,
                                         dim_encoded=self.model.dim_encoded).to(device)
        self.optimizer, _ = build_optimizer(
            list(self.model.parameters()) + list(self.criterion.parameters()), args.learningRate,
            args.beta1, args.beta2, args.epsilon, None, -1)
        self.audio = torch.randn(batch, 1, args.sizeWindow, device=device)
        self.step_times: list[float] = []
        self.criterion_times: list[float] = []

    def step(self, record: bool) -> None:
        import torch
        sync(self.device)
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        c, z, _ = self.model(self.audio, None)
        c_leaf, z_leaf = c.detach().requires_grad_(), z.detach().requires_grad_()
        sync(self.device)
        t_criterion = time.perf_counter()
        self.criterion(c_leaf, z_leaf, None).loss.backward()
        sync(self.device)
        t_model = time.perf_counter()
        torch.autograd.backward([c, z], [c_leaf.grad, z_leaf.grad])
        self.optimizer.step()
        sync(self.device)
        if record:
            self.step_times.append(time.perf_counter() - start)
            self.criterion_times.append(t_model - t_criterion)


def compare(rnn_mode: str, steps: int, batch: int, device_name: str) -> dict:
    """CPC and CPC-CTC steps of the same architecture, alternated so that load changes on the
    machine hit both alike; medians, and the median ratio of consecutive steps."""
    import torch
    setups = {name: Setup(["--rnnMode", rnn_mode] + flags, batch, torch.device(device_name))
              for name, flags in CRITERIA.items()}
    for step in range(steps + 2):
        for setup in setups.values():
            setup.step(record=step >= 2)
    result = {name: {"step_s": statistics.median(s.step_times),
                     "criterion_s": statistics.median(s.criterion_times)} for name, s in setups.items()}
    cpc, ctc = setups["CPC"], setups["CPC-CTC"]
    result["ratio"] = statistics.median(a / b for a, b in zip(ctc.step_times, cpc.step_times))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    import torch
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.one is not None:
        keep_freed_memory()  # as train.py does
        print(json.dumps(compare(args.one, args.steps, args.batch, args.device)))
        return
    command = " ".join(["python bench/cpcctc_bench.py"] + sys.argv[1:])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; device {args.device}")
    print(f"command: {command}")
    print(f"soft_align fwd+bwd, 4096 anchors, M=12 K=9 skips 1/2: "
          f"{soft_align_ms(args.device):.1f} ms (median of 50)")
    child = [sys.executable, __file__, "--steps", str(args.steps), "--batch", str(args.batch),
             "--device", args.device] + ([] if args.threads is None else ["--threads", str(args.threads)])
    for mode in RNN_MODES:
        run = subprocess.run(child + ["--one", mode], check=True, capture_output=True, text=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        for name in CRITERIA:
            print(f"rnnMode {mode:11s} {name:7s}: step {r[name]['step_s'] * 1000:6.0f} ms, criterion "
                  f"{r[name]['criterion_s'] * 1000:5.0f} ms (batch {args.batch} x 20480, median of "
                  f"{args.steps} after 2 warm-up)")
        print(f"rnnMode {mode:11s} CPC-CTC / CPC step: {r['ratio']:.2f}x (criterion "
              f"{r['CPC-CTC']['criterion_s'] / r['CPC']['criterion_s']:.2f}x)")


if __name__ == "__main__":
    main()
