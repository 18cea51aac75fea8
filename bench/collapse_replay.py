"""Replay the collapse rule over recorded health checks: when would the guard have acted?

    python bench/collapse_replay.py RUN/checkpoint_logs.json logs_dir/*.json --every 5 \\
        --context_cosine 0.99 --saturated 0.5

Each file is a run's ``checkpoint_logs.json`` (or a log kept by ``stability_bench.py
--keep_logs``); its ``health_steps`` are fed, in order, to :class:`cpc.collapse_rule.CollapseRule`
with the patience of the guard. ``--every K`` keeps every K-th check, so that runs recorded with
``--logging_step 20`` stand for runs checked every ``20 K`` steps. Printed per run: the checks,
how many count as collapsed (and by which part: encoder or context), the longest streak, the
step at which a collapse would be declared, and the extremes of the figures the rule reads.
This is how the rule's thresholds were calibrated (README, "Training health").
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpc.collapse_rule import CollapseRule  # noqa: E402


def replay(checks: list[dict], rule: CollapseRule, chance: float | None) -> dict:
    """The guard's decisions over ``checks``: collapsed counts per part, longest streak, and
    the step of the first declared collapse (None if the rule never fires)."""
    streak = longest = encoder = context = 0
    declared = None
    for check in checks:
        if not rule.is_conclusive(check):
            continue
        part = rule.collapsed_part(check, chance)
        encoder += part == "encoder"
        context += part == "context"
        streak = streak + 1 if part else 0
        longest = max(longest, streak)
        if streak == rule.patience and declared is None:
            declared = check["step"]
    return {"checks": len(checks), "encoder": encoder, "context": context, "longest": longest,
            "declared": declared}


def extreme(checks: list[dict], key: str) -> float:
    values = [c[key] for c in checks if key in c and not math.isnan(c[key])]
    return max(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, nargs="+", help="checkpoint_logs.json files")
    parser.add_argument("--every", type=int, default=1, help="keep every K-th check")
    parser.add_argument("--chance", type=float, default=8 * math.log(65),
                        help="chance loss (default: the demo model's 8 ln 65)")
    defaults = CollapseRule()
    for name in ("cosine", "context_cosine", "saturated", "chance_tolerance", "dead_fraction"):
        parser.add_argument(f"--{name}", type=float, default=getattr(defaults, name))
    parser.add_argument("--patience", type=int, default=defaults.patience)
    args = parser.parse_args(argv)
    rule = CollapseRule(cosine=args.cosine, context_cosine=args.context_cosine,
                        saturated=args.saturated, chance_tolerance=args.chance_tolerance,
                        patience=args.patience, dead_fraction=args.dead_fraction)
    print(f"rule: {rule}; chance {args.chance:.2f}; every {args.every} check(s)")
    print("run | checks | collapsed (encoder / context) | longest streak | declared at step | "
          "max z cos | max c cos | max saturated | min loss")
    for path in args.logs:
        checks = json.loads(path.read_text()).get("health_steps", [])[args.every - 1::args.every]
        result = replay(checks, rule, args.chance)
        declared = result["declared"] if result["declared"] is not None else "never"
        print(f"{path} | {result['checks']} | {result['encoder']} / {result['context']} | "
              f"{result['longest']} | {declared} | {extreme(checks, 'z_cos_across'):.3f} | "
              f"{extreme(checks, 'c_cos_across'):.3f} | {extreme(checks, 'saturated'):.2f} | "
              f"{min((c['loss'] for c in checks), default=float('nan')):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
