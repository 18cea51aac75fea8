"""Optimiser, learning rate and the update step of CPC training.

An optimiser's learning rate has one owner, :class:`LearningRate`, and one formula,
:meth:`LearningRate.lr_at` ``(step, epoch)``: the base rate times

* the per-epoch schedule (CPC_audio semantics: ``--schedulerRamp``, ``--schedulerStep``; the
  PASE recipe's decay), a function of the epoch the trainer is in;
* a linear warm-up ``(n + 1) / W`` over the first ``--warmup_steps W`` steps, where n is the
  optimiser's own step count (Adam's ``step`` state), so it resumes exactly from a checkpoint
  and restarts nowhere else.

The collapse guard's rollbacks and a resume with a new ``--learningRate`` rescale the base rate
(:meth:`LearningRate.scale`); the base is saved with the checkpoint (CPC_audio's ``scheduler``
key, ``{"base_lrs": [...]}``), so a rescaled rate persists on resume.

:class:`Updater` sets each rate before its optimiser steps, accumulates the gradients of
``--update_freq`` micro-batches into one update, scales the loss under fp16 (``--precision
fp16``), clips the global gradient norm (``--clip_grad_norm``) and returns the gradient norm of
each named part of the model (encoder, context network, criterion) for the health monitor.
"""
from __future__ import annotations

from typing import Callable, Iterable

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


def warmup_factor(steps_taken: int, warmup_steps: int) -> float:
    """Multiplier of the learning rate for the optimiser step after ``steps_taken`` steps."""
    if warmup_steps <= 0 or steps_taken >= warmup_steps:
        return 1.0
    return (steps_taken + 1) / warmup_steps


def pase_lr_factor(epoch: int, interval: int, decay: float) -> float:
    """PASE's multiplier of (0-based) ``epoch``: ``decay ** (epoch // interval)``, i.e. the rate
    is multiplied by ``decay`` every ``interval`` epochs."""
    if interval < 1:
        raise ValueError(f"the decay interval must be at least 1 epoch; got {interval}")
    return decay ** (epoch // interval)


def steps_taken(optimizer: torch.optim.Optimizer) -> int:
    """Optimiser steps taken so far (Adam's per-parameter ``step`` counter; 0 before the first)."""
    for state in optimizer.state.values():
        if "step" in state:
            return int(state["step"])
    return 0


class LearningRate:
    """The one writer of ``optimizer``'s learning rate: ``base`` x ``schedule(epoch)`` x the
    warm-up factor of its step count (see the module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, base: float,
                 schedule: Callable[[int], float], warmup_steps: int = 0) -> None:
        self.optimizer, self.base, self.schedule = optimizer, base, schedule
        self.warmup_steps = warmup_steps
        self.epoch = 0
        self.apply()

    def lr_at(self, step: int, epoch: int) -> float:
        """The rate of the optimiser step after ``step`` steps, in ``epoch``."""
        return self.base * self.schedule(epoch) * warmup_factor(step, self.warmup_steps)

    def scheduled(self) -> float:
        """The current epoch's rate, the warm-up aside (the rate logged for the epoch)."""
        return self.base * self.schedule(self.epoch)

    def apply(self) -> float:
        """Set the rate of the optimiser's next step; returns it."""
        lr = self.lr_at(steps_taken(self.optimizer), self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.apply()

    def scale(self, factor: float) -> None:
        """Multiply the base rate (a rollback's factor, or a resume's new --learningRate over
        the saved one); it is saved with the checkpoint, so it persists on resume."""
        self.base *= factor
        self.apply()

    def state_dict(self) -> dict:
        return {"base_lrs": [self.base]}

    def load_state_dict(self, state: dict) -> None:
        """A state of :meth:`state_dict`, or of the LambdaLR that older checkpoints saved."""
        self.base = float(state["base_lrs"][0])
        self.apply()


def set_adam_settings(optimizer: torch.optim.Optimizer, betas: tuple[float, float],
                      eps: float) -> None:
    """Changed Adam settings for a resumed optimiser (its moments are kept)."""
    for group in optimizer.param_groups:
        group["betas"], group["eps"] = betas, eps


def build_adam(params: Iterable[torch.nn.Parameter], lr: float, *, betas: tuple[float, float],
               eps: float, schedule: Callable[[int], float], warmup_steps: int = 0
               ) -> tuple[torch.optim.Optimizer, LearningRate]:
    """Adam and the owner of its rate: ``lr`` x ``schedule(epoch)`` x warm-up."""
    optimizer = torch.optim.Adam(list(params), lr=lr, betas=betas, eps=eps)
    return optimizer, LearningRate(optimizer, lr, schedule, warmup_steps)


def build_optimizer(params: Iterable[torch.nn.Parameter], lr: float, beta1: float, beta2: float,
                    epsilon: float, ramp_epochs: int | None, step_epochs: int,
                    warmup_steps: int = 0) -> tuple[torch.optim.Optimizer, LearningRate]:
    """Adam on CPC_audio's per-epoch schedule (``--schedulerRamp``, ``--schedulerStep``)."""
    return build_adam(params, lr, betas=(beta1, beta2), eps=epsilon,
                      schedule=lambda epoch: lr_factor(epoch, ramp_epochs, step_epochs),
                      warmup_steps=warmup_steps)


class Updater:
    """One update of every optimiser from the gradients of ``update_freq`` micro-batches.

    :meth:`backward` adds a micro-batch's gradients, its loss divided by ``update_freq`` (and
    multiplied by the fp16 loss scale of ``scaler``), so that ``update_freq`` micro-batches of
    B windows give the gradient of one batch of ``update_freq * B`` windows; :meth:`step`
    then updates. ``parts`` names disjoint parameter lists (e.g. encoder, context, criterion);
    their gradient norms are measured at every update (one fused norm per part, no device
    synchronisation) and, with ``clip_grad_norm > 0``, all gradients are scaled so that the
    global norm is at most that value. Each optimiser steps at the rate its
    :class:`LearningRate` gives.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer],
                 rates: dict[str, LearningRate], parts: dict[str, list[torch.nn.Parameter]],
                 clip_grad_norm: float = 0.0, update_freq: int = 1,
                 scaler: torch.amp.GradScaler | None = None) -> None:
        self.optimizers = optimizers
        self.rates = rates
        self.parts = parts
        self.clip_grad_norm = clip_grad_norm
        self.update_freq = update_freq
        self.scaler = scaler

    def backward(self, loss: torch.Tensor) -> None:
        """Add the gradients of one micro-batch's loss."""
        loss = loss / self.update_freq if self.update_freq > 1 else loss
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def grad_norms(self) -> torch.Tensor:
        """``(len(parts),)`` L2 norm of each part's gradients (0 for a part without any)."""
        norms = []
        for params in self.parts.values():
            grads = [p.grad for p in params if p.grad is not None]
            norms.append(torch.nn.utils.get_total_norm(grads) if grads else None)
        device = next((n.device for n in norms if n is not None), torch.device("cpu"))
        return torch.stack([n.to(device) if n is not None else torch.zeros((), device=device)
                            for n in norms])

    def step(self, micro_batches: int | None = None) -> torch.Tensor:
        """Unscale, clip, set the rates, step; returns the per-part gradient norms before
        clipping.

        ``micro_batches`` (default ``update_freq``) is how many micro-batches the gradients
        hold: fewer at the end of an epoch, or when some were skipped, and the gradients are
        rescaled to their mean.
        """
        if self.scaler is not None:
            for optimizer in self.optimizers.values():
                self.scaler.unscale_(optimizer)
        held = self.update_freq if micro_batches is None else micro_batches
        if 0 < held < self.update_freq:
            for part in self.parts.values():
                for param in part:
                    if param.grad is not None:
                        param.grad.mul_(self.update_freq / held)
        norms = self.grad_norms()
        if self.clip_grad_norm > 0:
            total = torch.linalg.vector_norm(norms)
            params = [p for part in self.parts.values() for p in part]
            torch.nn.utils.clip_grads_with_norm_(params, self.clip_grad_norm, total)
        for name, optimizer in self.optimizers.items():
            self.rates[name].apply()
            if self.scaler is not None:
                self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            else:
                optimizer.step()
        if self.scaler is not None:
            self.scaler.update()
        return norms
