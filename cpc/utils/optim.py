"""Optimiser and learning-rate schedule of CPC training (CPC_audio semantics)."""
from __future__ import annotations

from typing import Iterable

import torch


def lr_factor(epoch: int, ramp_epochs: int | None, step_epochs: int) -> float:
    """Multiplier of the base learning rate at ``epoch`` (0-based, stepped once per epoch).

    ``--schedulerRamp R``: linear warm-up, (epoch + 1) / R for the first R epochs.
    ``--schedulerStep N`` (> 0): halve every N epochs, counted after the ramp.
    """
    ramp = ramp_epochs or 0
    if epoch < ramp:
        return (epoch + 1) / ramp
    if step_epochs > 0:
        return 0.5 ** ((epoch - ramp) // step_epochs)
    return 1.0


def build_optimizer(params: Iterable[torch.nn.Parameter], lr: float, beta1: float, beta2: float,
                    epsilon: float, ramp_epochs: int | None, step_epochs: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam and its per-epoch schedule."""
    optimizer = torch.optim.Adam(list(params), lr=lr, betas=(beta1, beta2), eps=epsilon)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_factor(epoch, ramp_epochs, step_epochs))
    return optimizer, scheduler
