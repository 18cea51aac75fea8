"""Replay the collapse rule over recorded health checks: when would the guard have acted?

    python bench/collapse_replay.py RUN/checkpoint_logs.json logs_dir/*.json \\
        --logging_step 100 --context_cosine 0.98 --saturated 0.5

Each file is a run's ``checkpoint_logs.json`` (or a log kept by ``stability_bench.py
--keep_logs``); its ``health_steps`` are fed, in order, to :class:`cpc.collapse_rule.CollapseRule`
with the patience of the guard. ``--logging_step N`` keeps the checks a run checked every N
steps would have made (steps that are multiples of N, and each epoch's last check), so that
runs recorded with ``--logging_step 20`` stand for runs with the default 100. Printed per run: the checks,
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

from cpc.collapse_guard import CollapseGuard  # noqa: E402
from cpc.collapse_rule import CollapseRule  # noqa: E402


def replay(checks: list[dict], rule: CollapseRule, chance: float | None) -> dict:
    """The guard's decisions over ``checks`` (the guard itself, in ``warn`` mode, which never
    touches a training): collapsed counts per part, longest streak, and the step of the first
    declared collapse (None if the rule never fires)."""
    guard = CollapseGuard("warn", rule, chance, training=None, reseed_data=None)
    parts, longest = [], 0
    for check in checks:
        if rule.is_conclusive(check):
            parts.append(rule.collapsed_part(check, chance))
        guard.after_check(check, check["step"], check["epoch"])
        longest = max(longest, guard.streak)
    declared = next((e["step"] for e in guard.events if e["action"] == "warn"), None)
    return {"checks": len(checks), "encoder": parts.count("encoder"),
            "context": parts.count("context"), "longest": longest, "declared": declared}


def checks_at(checks: list[dict], logging_step: int) -> list[dict]:
    """The checks of a run checked every ``logging_step`` steps and at each epoch end."""
    last_of_epoch = {check["epoch"]: check["step"] for check in checks}
    return [check for check in checks if check["step"] % logging_step == 0
            or check["step"] == last_of_epoch[check["epoch"]]]


def extreme(checks: list[dict], key: str) -> float:
    values = [c[key] for c in checks if key in c and not math.isnan(c[key])]
    return max(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, nargs="+", help="checkpoint_logs.json files")
    parser.add_argument("--logging_step", type=int, default=1,
                        help="replay the checks of this --logging_step (default: every check)")
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
    print(f"rule: {rule}; chance {args.chance:.2f}; --logging_step {args.logging_step}")
    print("run | checks | collapsed (encoder / context) | longest streak | declared at step | "
          "max z cos | max c cos | max saturated | min loss")
    for path in args.logs:
        checks = checks_at(json.loads(path.read_text()).get("health_steps", []),
                           args.logging_step)
        result = replay(checks, rule, args.chance)
        declared = result["declared"] if result["declared"] is not None else "never"
        print(f"{path} | {result['checks']} | {result['encoder']} / {result['context']} | "
              f"{result['longest']} | {declared} | {extreme(checks, 'z_cos_across'):.3f} | "
              f"{extreme(checks, 'c_cos_across'):.3f} | {extreme(checks, 'saturated'):.2f} | "
              f"{min((c['loss'] for c in checks), default=float('nan')):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
