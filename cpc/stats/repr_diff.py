"""reprDiff: how much consecutive frames of a representation differ.

``reprDiff:METRIC,REPR,STEP,DIR`` — METRIC is ``cosine`` (1 - cosine similarity), ``euclid``,
``euclidsq`` (squared euclidean) or ``coscorr`` (|cosine similarity|, the fork's definition);
REPR is ``ctx_repr`` or ``conv_repr`` (the fork's ``ctx`` and ``repr`` are accepted); STEP is the
histogram bin width; a histogram PNG per epoch goes under DIR. Mean and quantiles are exact:
the distances are kept (one float per frame of the capture dataset), not binned first.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Stat, StatError, output_dir

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
REPR_ALIASES = {"ctx_repr": "ctx_repr", "ctx": "ctx_repr", "conv_repr": "conv_repr",
                "repr": "conv_repr"}


def consecutive_distances(frames: torch.Tensor, metric: str) -> torch.Tensor:
    """Distances between frames t and t+1 of ``(B, T, D)`` features, flattened to (B * (T-1),)."""
    a, b = frames[:, 1:].double(), frames[:, :-1].double()
    if metric in ("euclid", "euclidsq"):
        squared = (a - b).pow(2).sum(-1)
        out = squared if metric == "euclidsq" else squared.sqrt()
    elif metric in ("cosine", "coscorr"):
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)
        out = 1 - cos if metric == "cosine" else cos.abs()
    else:
        raise StatError(f"reprDiff: unknown metric {metric!r}; use cosine, euclid, euclidsq or "
                        f"coscorr")
    return out.flatten().float()


def histogram(values: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Counts of ``values`` in bins [k*step, (k+1)*step): (bin left edges, counts)."""
    bins = np.floor(values / step).astype(np.int64)
    keys, counts = np.unique(bins, return_counts=True)
    return keys * step, counts


class ReprDiffStat(Stat):
    def __init__(self, metric: str, representation: str, step: float, directory: str) -> None:
        consecutive_distances(torch.zeros(1, 2, 1), metric)  # validates the metric
        if representation not in REPR_ALIASES:
            raise StatError(f"reprDiff: unknown representation {representation!r}; use ctx_repr "
                            f"or conv_repr")
        if not step > 0:
            raise StatError(f"reprDiff: the bin width must be positive, got {step}")
        self.metric = metric
        self.representation = REPR_ALIASES[representation]
        self.step = step
        self.directory = directory
        self.needs = frozenset({self.representation})

    @property
    def name(self) -> str:
        return f"reprDiff_{self.representation}_{self.metric}_by{self.step:g}"

    def compute(self, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        return [consecutive_distances(batch[self.representation], self.metric).cpu().numpy()]

    def merge(self, first: list[np.ndarray], second: list[np.ndarray]) -> list[np.ndarray]:
        return first + second

    def finalize(self, merged: list[np.ndarray], epoch: int) -> dict[str, float]:
        values = np.concatenate(merged)
        edges, counts = histogram(values, self.step)
        self._plot(edges, counts, epoch)
        out = {"mean": float(values.mean()), "std": float(values.std()),
               "count": float(len(values))}
        for q, value in zip(QUANTILES, np.quantile(values, QUANTILES)):
            out[f"q{int(q * 100):02d}"] = float(value)
        return out

    def _plot(self, edges: np.ndarray, counts: np.ndarray, epoch: int) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(edges, counts, width=self.step, align="edge")
        ax.set_xlabel(f"{self.metric} distance between consecutive {self.representation} frames")
        ax.set_ylabel("frames")
        ax.set_title(f"epoch {epoch}")
        fig.tight_layout()
        path = output_dir(self.directory) / f"{self.name}_{epoch}.png"
        fig.savefig(path)
        plt.close(fig)


def build(arguments: list[str]) -> ReprDiffStat:
    """reprDiff:METRIC,REPR,STEP,DIR."""
    if len(arguments) != 4:
        raise StatError(f"reprDiff takes METRIC,REPR,STEP,DIR (4 arguments), got "
                        f"{','.join(arguments)!r}")
    metric, representation, step, directory = arguments
    try:
        step_value = float(step)
    except ValueError:
        raise StatError(f"reprDiff: the bin width STEP must be a number, got {step!r}") from None
    return ReprDiffStat(metric, representation, step_value, directory)
