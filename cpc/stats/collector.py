"""Feed captured batches to several stats and collect their final numbers."""
from __future__ import annotations

from typing import Any

import torch

from .base import Stat


class StatsCollector:
    """Accumulates every stat over the batches of one capture epoch."""

    def __init__(self, stats: list[Stat]) -> None:
        self.stats = stats
        self.partials: list[Any] = [None] * len(stats)

    @property
    def needs(self) -> set[str]:
        """Capture kinds the stats read."""
        return set().union(*(stat.needs for stat in self.stats))

    def update(self, batch: dict[str, torch.Tensor]) -> None:
        for i, stat in enumerate(self.stats):
            partial = stat.compute(batch)
            self.partials[i] = partial if self.partials[i] is None else \
                stat.merge(self.partials[i], partial)

    def finalize(self, epoch: int) -> dict[str, float]:
        """``<stat name>_<key>`` -> value for every stat that saw at least one batch; resets."""
        results = {}
        for stat, partial in zip(self.stats, self.partials):
            if partial is not None:
                results.update({f"{stat.name}_{key}": value
                                for key, value in stat.finalize(partial, epoch).items()})
        self.partials = [None] * len(self.stats)
        return results
