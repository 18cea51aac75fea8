"""The PASE worker recipe's declaration: the flags of a workers run (:class:`PaseOptions`) and
the settings its ``--config FILE.yaml`` may hold besides flag names (:class:`WorkerRecipe`:
SpeechBrain's PASE recipe keys), each with its type, default and range.

Torch-free, beside the workers (:mod:`cpc.criterion.workers`), so that the parser and
``--help`` need no torch; :mod:`cpc.config_file` reads a recipe file against it.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from cpc.utils.option_classes import option


@dataclass(frozen=True)
class PaseOptions:
    """The flags of a PASE workers run."""

    title: ClassVar[str] = "PASE"
    description: ClassVar[str] = (
        "A YAML file supplies defaults for any flag (the command line wins) and the PASE "
        "recipe: workers_config (regressors and classifiers on the encoder output, each with its "
        "own Adam), chunk_size, encoder_lr_start, worker_lr_start, lr_update_interval, "
        "decay_factor, ckpt_save_interval, num_ckpts_keep. See configs/pase.yaml.")

    config: str | None = option(None, "YAML settings file.")
    pase_stats_batches: int = option(50, "Training batches used to estimate the regression "
                                         "targets' mean and std before training.")


def setting(default: Any, low: float, high: float | None = None) -> Any:
    """A recipe setting: its default and its range (ints from ``low`` on, floats above
    ``low``; at most ``high``)."""
    return dataclasses.field(default=default, metadata={"low": low, "high": high})


@dataclass(frozen=True)
class WorkerRecipe:
    """The settings of a workers recipe file, beside ``workers_config`` and ``chunk_size``."""

    ckpt_save_interval: int = setting(1, low=1)  # PASE's name of --save_step
    num_ckpts_keep: int = setting(0, low=0)  # PASE's name of --keep_checkpoints
    encoder_lr_start: float = setting(5e-4, low=0)  # the encoder's initial learning rate
    worker_lr_start: float = setting(5e-4, low=0)  # each worker's initial learning rate
    lr_update_interval: int = setting(30, low=1)  # epochs between learning-rate decays
    decay_factor: float = setting(0.5, low=0, high=1)  # factor applied at each decay


def recipe_settings() -> dict[str, tuple[type, Any, float, float | None]]:
    """Every :class:`WorkerRecipe` setting as ``name: (type, default, lowest, highest)``."""
    hints = typing.get_type_hints(WorkerRecipe)
    return {field.name: (hints[field.name], field.default, field.metadata["low"],
                         field.metadata["high"])
            for field in dataclasses.fields(WorkerRecipe)}
