"""When a health check counts as collapsed, and what ``--on_collapse`` may do about it.

Torch-free, so that the parser takes its choices and defaults from here; the guard that applies
the rule during training is :mod:`cpc.collapse_guard`, which documents the rule's measurements.
"""
from __future__ import annotations

from dataclasses import dataclass

ON_COLLAPSE = ("rollback", "stop", "warn")


@dataclass(frozen=True)
class CollapseRule:
    cosine: float = 0.99
    chance_tolerance: float = 0.05
    patience: int = 3
    dead_fraction: float = 0.9

    def is_collapsed(self, metrics: dict[str, float], chance_loss: float | None) -> bool:
        """Whether one check's figures look collapsed (NaN figures never do)."""
        if not (metrics.get("z_cos_across", float("nan")) >= self.cosine
                or metrics.get("dead_units", float("nan")) >= self.dead_fraction):
            return False
        return chance_loss is None or metrics["loss"] >= (1 - self.chance_tolerance) * chance_loss
