"""Building a criterion by name, so that a new criterion is one file plus one line.

A criterion module defines ``build(options, *, dim_context, dim_encoded, ...)`` and, beside it,
its options dataclass (:mod:`cpc.utils.option_classes`); its line in :mod:`cpc.registries`
(``CRITERIA.add("name", "cpc.criterion.module:build", options="...:Options")``) registers both.
``build_criterion("name", args, ...)`` then builds it from a Namespace of training args.

A builder receives its options (none if it names none) and the keywords ``dim_context``,
``dim_encoded``, ``n_speakers``, ``n_phones``, ``size_window`` (samples of a training window)
and ``reverse`` (``--cpc_mode reverse``: the windows are read backwards); it takes those it
needs and ignores the rest (``**_``).
"""
from __future__ import annotations

import argparse

import torch.nn as nn

from cpc.registries import CRITERIA


def build_criterion(name: str, args: argparse.Namespace, *, dim_context: int, dim_encoded: int,
                    n_speakers: int = 0, n_phones: int = 0) -> nn.Module:
    """Build the criterion registered as ``name`` from a complete Namespace of training args
    (ConfigError listing the names if unknown)."""
    return CRITERIA.build(name, args, dim_context=dim_context, dim_encoded=dim_encoded,
                          n_speakers=n_speakers, n_phones=n_phones, size_window=args.sizeWindow,
                          reverse=args.cpc_mode == "reverse")
