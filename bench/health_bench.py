"""What the health monitor and the collapse guard cost, as a share of a training step.

    python bench/health_bench.py [--steps 20] [--every 100] [--device cpu]

For the default CPC model (encoder 256, LSTM 256, 12 heads, 128 negatives, batch 8 x 20480) with
linear heads, and for the demo model, steps alternate (in both orders) between a plain step (zero_grad, forward,
backward, Adam) and a monitored step (the same through the Updater with gradient clipping and
per-part norms, plus the monitor's per-step bookkeeping). A health check (figures, one
synchronisation) and the guard's copy of the healthy state are timed on their own and
amortised over ``--every`` steps (``--logging_step``). Figures are medians.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cpc.collapse_guard import CollapseGuard, CollapseRule  # noqa: E402
from cpc.criterion.registry import build_criterion  # noqa: E402
from cpc.demo import DEMO_TRAIN_FLAGS  # noqa: E402
from cpc.health import HealthMonitor  # noqa: E402
from cpc.model import build_model  # noqa: E402
from cpc.criterion.objective import CriterionObjective  # noqa: E402
from cpc.options import build_parser
from cpc.trainer import TrainedState, StepModule  # noqa: E402
from cpc.utils.optim import Updater, build_optimizer  # noqa: E402

CONFIGS = {"CPC 256, linear heads": ["--rnnMode", "linear"],
           "demo model (128, 8 heads, 64 negatives)": DEMO_TRAIN_FLAGS}


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(flags: list[str], steps: int, device: torch.device) -> dict[str, float]:
    args = build_parser().parse_args(["--pathDB", "unused"] + flags)
    torch.manual_seed(0)
    model = build_model(args).to(device)
    criterion = build_criterion("cpc", args, dim_context=model.dim_context,
                                dim_encoded=model.dim_encoded).to(device)
    optimizer, rate = build_optimizer(list(model.parameters()) + list(criterion.parameters()),
                                           args.learningRate, args.beta1, args.beta2,
                                           args.epsilon, None, -1)
    training = TrainedState(model, CriterionObjective(criterion), {"model": optimizer},
                        {"model": rate})
    step_module = StepModule(model, training.objective)
    updater = Updater(training.optimizers, training.rates, training.parameter_parts(),
                      clip_grad_norm=1.0)
    monitor = HealthMonitor(list(updater.parts), saturating_context=True, device=device)
    guard = CollapseGuard("rollback", CollapseRule(), criterion.chance_loss(), training,
                          lambda n: None)
    batch = SimpleNamespace(audio=torch.randn(8, 1, args.sizeWindow, device=device),
                            speaker=torch.zeros(8, dtype=torch.long, device=device))

    def plain() -> None:
        optimizer.zero_grad(set_to_none=True)
        step_module(batch).loss.backward()
        optimizer.step()

    def monitored() -> None:
        updater.zero_grad()
        out = step_module(batch)
        out.loss.backward()
        monitor.observe(out, updater.step())

    def check() -> None:
        guard.after_check(monitor.check(), 0, 0)  # a healthy check copies the state

    times: dict[str, list[float]] = {"plain": [], "monitored": [], "check": []}
    for step in range(steps + 2):
        if step % 2:  # alternate the order: neither kind always runs on a warmer cache
            plain_s, monitored_s = timed(plain, device), timed(monitored, device)
        else:
            monitored_s, plain_s = timed(monitored, device), timed(plain, device)
        check_s = timed(check, device)
        if step >= 2:
            times["plain"].append(plain_s)
            times["monitored"].append(monitored_s)
            times["check"].append(check_s)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=100, help="--logging_step")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"command: python bench/health_bench.py --steps {args.steps} --every {args.every} "
          f"--device {args.device}")
    for name, flags in CONFIGS.items():
        r = measure(flags, args.steps, device)
        per_step = r["monitored"] - r["plain"]
        amortised = per_step + r["check"] / args.every
        print(f"{name}: plain step {1000 * r['plain']:.0f} ms, monitored step "
              f"{1000 * r['monitored']:.0f} ms ({100 * per_step / r['plain']:+.2f}%), check + "
              f"state copy {1000 * r['check']:.1f} ms once per {args.every} steps -> "
              f"{100 * amortised / r['plain']:+.2f}% of a step in all", flush=True)


if __name__ == "__main__":
    main()
