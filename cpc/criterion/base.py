"""The one output type shared by every training / probing criterion."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class CriterionOutput:
    """What ``criterion(cFeature, encodedData, label, capture=False)`` returns.

    loss: scalar to backpropagate (already reduced; call ``loss.backward()`` directly).
    step_losses: ``(n_steps,)`` per-step losses for logging (not detached; for CPC ``loss`` is their sum).
    step_accuracies: ``(n_steps,)`` per-step accuracies in [0, 1] (no gradient).
    captures: optional extra tensors, filled only when ``capture=True`` (e.g. ``"pred"``).
    score_margin: optional detached scalar, mean positive minus mean negative score (health).
    context, encoded: the detached model outputs the loss was computed on, set by the training
        step for the health monitor (None elsewhere).
    """

    loss: torch.Tensor
    step_losses: torch.Tensor
    step_accuracies: torch.Tensor
    captures: dict[str, torch.Tensor] = field(default_factory=dict)
    score_margin: torch.Tensor | None = None
    context: torch.Tensor | None = None
    encoded: torch.Tensor | None = None
