"""Does a training recipe learn on every seed and every CPU kernel set? Curves, not single runs.

    python bench/stability_bench.py --recipe demo --seeds 0 1 2 3 4 \\
        --kernels native aten_default dnnl_sse41 --epochs 6

Each (seed, kernel set) trains the demo model (cpc.demo's flags) on the built-in corpus in its
own process, one after the other. Kernel sets stand in for other CPUs: ``aten_default`` runs with
``ATEN_CPU_CAPABILITY=default`` (no AVX2 ATen kernels), ``dnnl_sse41`` with
``DNNL_MAX_CPU_ISA=SSE41`` (oneDNN convolutions limited to SSE4.1). Printed per run: the training
loss per epoch (chance = K ln(1 + N)), the last epoch's accuracy, the collapse guard's events,
and the highest encoded-frame cosine seen by the health checks; then a summary line per recipe.

Recipes: ``demo`` (the demo's flags as they are), ``cpc_audio`` (the same without clipping or
warm-up and with the guard only warning: CPC_audio's optimisation), or any extra flags given
with ``--flags``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpc.demo import DEMO_TRAIN_FLAGS, train_command  # noqa: E402

KERNELS = {"native": {}, "aten_default": {"ATEN_CPU_CAPABILITY": "default"},
           "dnnl_sse41": {"DNNL_MAX_CPU_ISA": "SSE41"}}
RECIPES = {"demo": [],
           "cpc_audio": ["--clip_grad_norm", "0", "--warmup_steps", "0", "--on_collapse",
                         "warn"]}


def flag_value(flags: list[str], name: str) -> str:
    return flags[len(flags) - 1 - flags[::-1].index(name) + 1]


def run_one(corpus: Path, seed: int, kernel: str, epochs: int, extra: list[str],
            keep_logs: Path | None = None, threads: int | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        argv = train_command(corpus, run_dir, epochs, seed) + ["--save_step", "1000"] + extra
        env = {**os.environ, **KERNELS[kernel]}
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        start = time.time()
        proc = subprocess.run([sys.executable, str(ROOT / "cpc" / "train.py")] + argv, env=env,
                              capture_output=True, text=True)
        seconds = time.time() - start
        if proc.returncode not in (0, 2) or not (run_dir / "checkpoint_logs.json").is_file():
            raise SystemExit(f"training failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        logs = json.loads((run_dir / "checkpoint_logs.json").read_text())
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            (keep_logs / f"seed{seed}_{kernel}.json").write_text(json.dumps(logs))
    return {"seed": seed, "kernel": kernel, "seconds": seconds, "returncode": proc.returncode,
            "loss": logs["loss_train"], "acc": [sum(a) / len(a) for a in logs["locAcc_train"]],
            "events": [(e["action"], e["step"]) for e in logs.get("collapse_events", [])],
            "max_z_cos": max((h["z_cos_across"] for h in logs.get("health_steps", [])),
                             default=float("nan"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "demo_corpus")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="demo")
    parser.add_argument("--flags", type=str, default="", help="extra train.py flags")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--kernels", nargs="+", choices=sorted(KERNELS),
                        default=["aten_default", "dnnl_sse41"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None, help="also write the runs here")
    parser.add_argument("--parallel", type=int, default=1,
                        help="runs at once, the cores shared between them (learning figures "
                             "only: times are then not comparable)")
    parser.add_argument("--keep_logs", type=Path, default=None,
                        help="keep each run's checkpoint_logs.json in this directory")
    args = parser.parse_args(argv)

    from cpc.demo import ensure_corpus
    ensure_corpus(args.corpus, 20, 2, 10, 0)
    extra = RECIPES[args.recipe] + shlex.split(args.flags)
    flags = DEMO_TRAIN_FLAGS + extra
    chance = int(flag_value(flags, "--nPredicts")) * math.log(
        1 + int(flag_value(flags, "--negativeSamplingExt")))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"recipe {args.recipe} {' '.join(extra)}; chance loss {chance:.2f}", flush=True)
    jobs = [(seed, kernel) for kernel in args.kernels for seed in args.seeds]
    threads = max(1, (os.cpu_count() or 1) // args.parallel) if args.parallel > 1 else None
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(run_one, args.corpus, seed, kernel, args.epochs, extra,
                               args.keep_logs, threads) for seed, kernel in jobs]
        runs = []
        for future in futures:
            run = future.result()
            runs.append(run)
            curve = " ".join(f"{loss:.2f}" for loss in run["loss"])
            print(f"seed {run['seed']} {run['kernel']:12s} loss/epoch {curve} | acc "
                  f"{run['acc'][-1]:.3f} | max z cos {run['max_z_cos']:.3f} | events "
                  f"{run['events'] or 'none'} | {run['seconds']:.0f} s", flush=True)
    learned = [r for r in runs if r["loss"] and r["loss"][-1] < 0.95 * chance]
    finals = [r["loss"][-1] / chance for r in runs]
    events = sum(len(r["events"]) for r in runs)
    print(f"{len(learned)}/{len(runs)} runs end at least 5% below chance (final loss "
          f"{min(finals):.3f}-{max(finals):.3f} x chance); collapse-guard events: {events}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
