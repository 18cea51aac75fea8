"""What defines a trained network: the options of the model and of every registered encoder,
context network and criterion (their options dataclasses, :mod:`cpc.utils.option_classes`).

A resumed run takes these options from its saved args and refuses an explicit value that
contradicts one (:mod:`cpc.run_config`); each checkpoint holds their values as ``model_args``,
with ``sizeWindow`` (the length of the transformers' position tables), so that a checkpoint
copied alone rebuilds its model (:mod:`cpc.feature_loader`). A new component's options are
part of it by its registration line alone.
"""
from __future__ import annotations

import argparse

from cpc.model_options import ModelOptions
from cpc.registries import ARS, CRITERIA, ENCODERS
from cpc.utils.option_classes import option_names

# Read by the builders beside the architecture options: a checkpoint's model_args hold it too.
BUILD_INPUTS = frozenset({"sizeWindow"})


def architecture_classes() -> list[type]:
    """The options dataclasses of the model and of the registered components, in the order of
    their groups in ``--help``."""
    return [ModelOptions, *ARS.option_classes(), *ENCODERS.option_classes(),
            *CRITERIA.option_classes()]


def architecture_options() -> set[str]:
    """Every architecture option (field) of :func:`architecture_classes`."""
    return option_names(architecture_classes())


def model_args(values: argparse.Namespace) -> dict:
    """The values of the architecture options and of sizeWindow: what a checkpoint needs to be
    rebuilt from (nanoGPT's ``model_args``)."""
    return {name: getattr(values, name) for name in sorted(architecture_options() | BUILD_INPUTS)}
