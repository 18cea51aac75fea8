"""The collapse guard: notices a collapsed training from its health checks and acts on it.

Rule (:class:`~cpc.collapse_rule.CollapseRule`, from the measured collapses of the CPC recipe):
a check counts as collapsed when, for criteria with a chance level, the mean training loss
since the previous check is back within ``chance_tolerance`` of chance (CPC: K ln(1 + N)) and
one part of the model carries no information:

* the encoder: frames of different windows point in nearly one direction (``z_cos_across`` at
  least ``cosine``: measured 0.93-0.97 at initialisation, since ReLU outputs share a positive
  component, 0.5-0.7 while learning, 0.995-0.997 collapsed) or at least ``dead_fraction`` of
  its units are dead;
* the context network: context vectors of different windows point in nearly one direction
  (``c_cos_across`` at least ``context_cosine``) and, for LSTM / GRU contexts, at least
  ``saturated`` of their outputs sit at +-1, where they pass no gradient. Measured on natural
  speech (251 LibriSpeech utterances, the demo model, seed 0): 0.98-0.9995 and 52-91%
  saturated while the loss stays at chance, the encoder's cosine meanwhile 0.94-0.99; on the
  built-in corpus, learning runs reach at most 22% saturated (their contexts' cosine does pass
  0.99 for a step or two, with nothing saturated). Contexts without a saturation figure
  (transformer, QRNN) are judged by the encoder part only (README, "Training health").

A collapse is declared after ``patience`` consecutive collapsed checks, so a run that collapses
briefly and recovers by itself is left alone. A check that cannot tell (a batch of one window
has no pair of windows, so NaN cosines; a NaN loss, which the non-finite watch handles) neither
extends nor breaks a streak, and its state is never kept as the healthy one.

``--on_collapse`` then says what happens:

* ``warn``: one line naming the step and the figures (again if it recovers);
* ``stop``: the run checkpoints the epoch in progress and ends with a message;
* ``rollback`` (default): the last healthy state kept in memory (model, criterion / workers,
  optimisers, schedules; copied on the training device at every healthy check, so keeping it
  reads nothing back to the host) is restored, every learning rate is
  multiplied by ``lr_factor``, the data order is drawn anew, and training continues; after
  ``max_rollbacks`` rollbacks the run stops instead.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from cpc.collapse_rule import ON_COLLAPSE, CollapseRule
from cpc.utils.errors import CPCError


class TrainingCollapsed(CPCError):
    """The guard stopped a collapsed run (``--on_collapse stop``, or rollbacks exhausted)."""


def snapshot(tree: Any) -> Any:
    """A deep copy of a state tree, every tensor cloned where it is."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {key: snapshot(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(snapshot(value) for value in tree)
    return copy.deepcopy(tree)


@dataclass
class CollapseGuard:
    """Decides after each health check; keeps the last healthy state for ``rollback``.

    ``training`` is the run's :class:`~cpc.trainer.TrainedState` (``state``/``load``, ``scale_lr``,
    ``lr``); ``reseed_data`` draws a new data order from an integer.
    """

    mode: str
    rule: CollapseRule
    chance_loss: float | None
    training: Any
    reseed_data: Any
    lr_factor: float = 0.5
    max_rollbacks: int = 5
    streak: int = 0
    rollbacks: int = 0
    stop_requested: bool = False
    events: list[dict] = field(default_factory=list)
    _snapshot: dict | None = None
    _snapshot_rollbacks: int = 0  # rollbacks whose lower rates the snapshot already has

    def __post_init__(self) -> None:
        if self.mode not in ON_COLLAPSE:
            raise ValueError(f"unknown --on_collapse {self.mode!r}; use one of {ON_COLLAPSE}")

    def keep_healthy_state(self) -> None:
        """Copy the current training state as the one to roll back to."""
        if self.mode == "rollback":
            self._snapshot = snapshot(self.training.state(epoch=-1))
            self._snapshot_rollbacks = self.rollbacks

    def figures(self, metrics: dict[str, float], part: str = "encoder") -> str:
        """The loss and the figures that show ``part`` (encoder or context) collapsed."""
        chance = f" (chance {self.chance_loss:.4g})" if self.chance_loss is not None else ""
        margin = f", score margin {metrics['score_margin']:.2g}" if "score_margin" in metrics \
            else ""
        if part == "context":
            saturated = f", saturated {100 * metrics['saturated']:.0f}%" \
                if "saturated" in metrics else ""
            shown = (f"context cosine across windows {metrics['c_cos_across']:.3f}{saturated} "
                     f"(the context network, not the encoder: z cosine "
                     f"{metrics['z_cos_across']:.3f})")
        else:
            shown = (f"z cosine across windows {metrics['z_cos_across']:.3f}, dead units "
                     f"{100 * metrics['dead_units']:.0f}%")
        return f"loss {metrics['loss']:.4g}{chance}, {shown}{margin}"

    def after_check(self, metrics: dict[str, float], step: int, epoch: int) -> dict | None:
        """Act on one check; returns the logged event (None when nothing happened)."""
        if not self.rule.is_conclusive(metrics):
            return None  # no verdict: the streak and the healthy copy stay as they are
        part = self.rule.collapsed_part(metrics, self.chance_loss)
        if part is None:
            recovered = self.streak >= self.rule.patience
            self.streak = 0
            self.keep_healthy_state()
            if recovered and self.mode == "warn":
                return self._event("recovered", step, epoch, metrics,
                                   f"training recovered from the collapse at step {step}: "
                                   f"{self.figures(metrics)}")
            return None
        self.streak += 1
        if self.streak != self.rule.patience:
            return None  # not yet confirmed, or already reported
        where = (f"collapse detected at step {step} (epoch {epoch}): "
                 f"{self.figures(metrics, part)}")
        if self.mode == "warn":
            return self._event("warn", step, epoch, metrics,
                               f"warning: {where}; training goes on (--on_collapse warn)",
                               part=part)
        if self.mode == "rollback" and self._snapshot is not None \
                and self.rollbacks < self.max_rollbacks:
            return self._rollback(step, epoch, metrics, where, part)
        self.stop_requested = True
        why = "--on_collapse stop" if self.mode == "stop" else \
            f"{self.rollbacks} rollbacks did not help (--max_rollbacks {self.max_rollbacks})" \
            if self._snapshot is not None else "no healthy state to roll back to"
        return self._event("stop", step, epoch, metrics, f"{where}; stopping ({why})",
                           part=part)

    def _rollback(self, step: int, epoch: int, metrics: dict[str, float], where: str,
                  part: str) -> dict:
        self.training.load(self._snapshot)
        self.rollbacks += 1
        factor = self.lr_factor ** (self.rollbacks - self._snapshot_rollbacks)
        self.training.scale_lr(factor)
        self.reseed_data(self.rollbacks)
        self.streak = 0
        lr = self.training.lr
        return self._event("rollback", step, epoch, metrics,
                           f"{where}; rolled back to the last healthy state, learning rate now "
                           f"{lr:.3g}, new data order (rollback {self.rollbacks} of at most "
                           f"{self.max_rollbacks})", rollback=self.rollbacks, lr=lr, part=part)

    def _event(self, action: str, step: int, epoch: int, metrics: dict[str, float],
               message: str, **extra: Any) -> dict:
        event = {"action": action, "step": step, "epoch": epoch, "message": message,
                 "loss": metrics["loss"], "z_cos_across": metrics["z_cos_across"],
                 "c_cos_across": metrics.get("c_cos_across", float("nan")), **extra}
        self.events.append(event)
        return event
