"""Training health: cheap measurements that tell a learning run from a collapsed one.

A CPC encoder can collapse in one update (measured on the demo recipe: the mean cosine between
encoded frames goes 0.55 -> 0.996 in a few steps, half the last ReLU's units die, the positive
and negative scores become equal and the loss returns to chance for good). These figures make
that visible every ``--logging_step`` steps and at every epoch end:

* ``z_cos_within`` / ``z_cos_across``: mean cosine similarity of random pairs of encoded frames
  of the same window / of two different windows (likewise ``c_cos_*`` for the contexts);
* ``dead_units``: fraction of encoder output channels constant over the whole batch (a dead
  ReLU unit is 0 everywhere);
* ``saturated``: fraction of context values with ``|c| > 0.95`` (LSTM / GRU outputs, bounded
  by 1; absent for other context networks);
* ``grad_<part>``: gradient L2 norm of each part (encoder, context, criterion or workers),
  before clipping;
* ``score_margin``: mean positive score minus mean negative score (CPC, CPC-CTC);
* ``loss``: mean training loss since the previous check.

The pair indices come from a private generator on the training device, so measuring never
changes the training's random stream and never copies from the host; under torchrun every
figure is averaged over ranks. The figures stay on the device until the trainer's sync point
reads them, together with everything else due (see :mod:`cpc.trainer`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cpc.criterion.base import CriterionOutput
from cpc.utils.distributed import DistInfo, mean_over_ranks

SATURATION_BOUND = 0.95
SATURATING_CONTEXTS = ("LSTM", "GRU")  # context networks whose outputs are tanh-bounded


def pair_cosines(frames: torch.Tensor, n_pairs: int, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine of ``n_pairs`` random frame pairs of ``(B, T, D)`` features: pairs from one
    window (distinct times) and pairs from two windows (distinct items; NaN when B == 1)."""
    batch, seq_len, _ = frames.shape
    flat = frames.detach().float().reshape(batch * seq_len, -1)

    def draw(high: int) -> torch.Tensor:
        return torch.randint(0, high, (n_pairs,), generator=generator, device=generator.device)

    item, t1 = draw(batch), draw(seq_len)
    t2 = (t1 + 1 + draw(max(seq_len - 1, 1))) % seq_len  # another time of the same item
    within = (item * seq_len + t1, item * seq_len + t2)
    other = (item + 1 + draw(max(batch - 1, 1))) % batch  # another item
    across = (item * seq_len + t1, other * seq_len + draw(seq_len))

    def mean_cosine(pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        a, b = (flat[idx.to(flat.device)] for idx in pair)
        return F.cosine_similarity(a, b, dim=-1, eps=1e-8).mean()

    nan = flat.new_full((), float("nan"))
    return (mean_cosine(within) if seq_len > 1 else nan,
            mean_cosine(across) if batch > 1 else nan)


def dead_unit_fraction(encoded: torch.Tensor) -> torch.Tensor:
    """Fraction of the ``D`` channels of ``(B, T, D)`` features constant over every frame."""
    flat = encoded.detach().float().reshape(-1, encoded.shape[-1])
    spread = flat.amax(dim=0) - flat.amin(dim=0)
    scale = flat.abs().amax(dim=0).clamp(min=1.0)
    return (spread <= 1e-6 * scale).float().mean()


def saturated_fraction(context: torch.Tensor, bound: float = SATURATION_BOUND) -> torch.Tensor:
    """Fraction of the values of ``context`` with ``|c| > bound``."""
    return (context.detach().abs() > bound).float().mean()


def health_metrics(context: torch.Tensor, encoded: torch.Tensor, grad_norms: torch.Tensor, *,
                   part_names: list[str], loss: torch.Tensor, score_margin: torch.Tensor | None,
                   saturating_context: bool, generator: torch.Generator,
                   n_pairs: int = 256) -> dict[str, torch.Tensor]:
    """Every health figure of one step as 0-d tensors (no device synchronisation)."""
    z_within, z_across = pair_cosines(encoded, n_pairs, generator)
    c_within, c_across = pair_cosines(context, n_pairs, generator)
    out = {"loss": loss.detach().float(), "z_cos_within": z_within, "z_cos_across": z_across,
           "c_cos_within": c_within, "c_cos_across": c_across,
           "dead_units": dead_unit_fraction(encoded)}
    if saturating_context:
        out["saturated"] = saturated_fraction(context)
    out.update({f"grad_{name}": norm.float() for name, norm in zip(part_names, grad_norms)})
    if score_margin is not None:
        out["score_margin"] = score_margin.detach().float()
    return out


def describe(metrics: dict[str, float]) -> str:
    """One short console line of a check's figures."""
    parts = [f"z cos {metrics['z_cos_within']:.2f}/{metrics['z_cos_across']:.2f}",
             f"c cos {metrics['c_cos_within']:.2f}/{metrics['c_cos_across']:.2f}",
             f"dead {100 * metrics['dead_units']:.0f}%"]
    if "saturated" in metrics:
        parts.append(f"saturated {100 * metrics['saturated']:.0f}%")
    grads = [f"{key[5:]} {value:.2g}" for key, value in metrics.items() if key.startswith("grad_")]
    parts.append("grad " + " ".join(grads))
    if "score_margin" in metrics:
        parts.append(f"margin {metrics['score_margin']:.3g}")
    return "health: " + ", ".join(parts) + " (cos: within/across windows)"


class HealthMonitor:
    """Measures the latest observed training step when asked (the trainer asks every
    ``--logging_step`` updates and at epoch ends); ``latest`` holds the last figures read."""

    def __init__(self, part_names: list[str], *, saturating_context: bool,
                 info: DistInfo = DistInfo(), seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.part_names = part_names
        self.saturating_context = saturating_context
        self.info = info
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.latest: dict[str, float] | None = None
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self._last: tuple | None = None  # the latest step's detached tensors

    def observe(self, out: CriterionOutput, grad_norms: torch.Tensor) -> None:
        """Record one training step (cheap: keeps references, no synchronisation)."""
        loss = out.loss.detach().float()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._loss_count += 1
        self._last = (out.context, out.encoded, grad_norms, out.score_margin)

    def figures(self) -> dict[str, torch.Tensor] | None:
        """The figures of the latest observed step as device scalars (loss: mean since the
        previous call), None when nothing was observed since; nothing is read back."""
        if self._last is None or self._last[0] is None:
            return None
        context, encoded, grad_norms, margin = self._last
        loss = self._loss_sum / self._loss_count
        figures = health_metrics(context, encoded, grad_norms, part_names=self.part_names, loss=loss,
                                 score_margin=margin, saturating_context=self.saturating_context,
                                 generator=self.generator)
        self._loss_sum, self._loss_count, self._last = None, 0, None
        return figures

    def check(self) -> dict[str, float] | None:
        """:meth:`figures`, averaged over ranks and read back (one synchronisation)."""
        figures = self.figures()
        if figures is None:
            return None
        stacked = mean_over_ranks(torch.stack([v.float() for v in figures.values()]), self.info)
        self.latest = dict(zip(figures, stacked.tolist()))
        return self.latest
