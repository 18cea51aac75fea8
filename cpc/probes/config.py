"""The probe names and the settings of a probe run.

Torch-free: the option modules (:mod:`cpc.options`, :mod:`cpc.eval.options`) take the defaults
of their probe flags from :class:`ProbeConfig`, so that a default is written once, here.
"""
from __future__ import annotations

from dataclasses import dataclass

PROBES = ("speaker", "speaker_mean", "phone", "phone_ctc")


@dataclass
class ProbeConfig:
    """Optimisation and bookkeeping of one probe run (the fork's --linsep_* flags).

    Its field defaults are the defaults of training's --linsep_* flags and of the probes'
    script's flags (both parsers read them here): change a default here, and only here."""

    n_epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    n_layers: int = 1
    logging_step: int = 1
    feature_budget_gb: float = 4.0
    seed: int = 0
    save_step: int = 0  # also save the probe every save_step epochs (0: only the best one)
    unfrozen: bool = False  # fine-tune the model with each probe
    model_lr: float | None = None  # learning rate of the model under unfrozen (None: lr)
