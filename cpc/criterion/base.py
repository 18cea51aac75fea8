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
    """

    loss: torch.Tensor
    step_losses: torch.Tensor
    step_accuracies: torch.Tensor
    captures: dict[str, torch.Tensor] = field(default_factory=dict)
