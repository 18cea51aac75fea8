"""When a health check counts as collapsed, and what ``--on_collapse`` may do about it.

Torch-free, so that the parser takes its choices and defaults from here; the guard that applies
the rule during training is :mod:`cpc.collapse_guard`, which documents the rule's measurements.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

ON_COLLAPSE = ("rollback", "stop", "warn")


@dataclass(frozen=True)
class CollapseRule:
    """A check is collapsed when the loss is back at chance and either part of the model has
    stopped carrying information: the encoder (its frames nearly parallel across windows, or
    most units dead) or an LSTM / GRU context network (its vectors nearly parallel across
    windows and most of its outputs saturated at +-1, where they pass no gradient; other
    context networks have no saturation figure, and no measured collapse to calibrate on)."""

    cosine: float = 0.99
    context_cosine: float = 0.95
    saturated: float = 0.5
    chance_tolerance: float = 0.05
    patience: int = 3
    dead_fraction: float = 0.9

    @staticmethod
    def is_conclusive(metrics: dict[str, float]) -> bool:
        """Whether a check can tell: its loss and its cosine across windows are numbers. A batch
        of one window has no pair of windows (NaN cosines); a NaN loss is the non-finite
        watch's business. Such a check neither extends nor breaks a streak."""
        return not (math.isnan(metrics["loss"]) or math.isnan(metrics.get("z_cos_across", 0.0)))

    def collapsed_part(self, metrics: dict[str, float], chance_loss: float | None) -> str | None:
        """``"encoder"`` or ``"context"`` when one check's figures look collapsed, else None
        (NaN figures never count)."""
        if chance_loss is not None \
                and not metrics["loss"] >= (1 - self.chance_tolerance) * chance_loss:
            return None
        if (metrics.get("z_cos_across", math.nan) >= self.cosine
                or metrics.get("dead_units", math.nan) >= self.dead_fraction):
            return "encoder"
        if metrics.get("c_cos_across", math.nan) >= self.context_cosine \
                and metrics.get("saturated", math.nan) >= self.saturated:
            return "context"
        return None

    def is_collapsed(self, metrics: dict[str, float], chance_loss: float | None) -> bool:
        """Whether one check's figures look collapsed."""
        return self.collapsed_part(metrics, chance_loss) is not None
