"""Building a criterion by name, so that a new criterion is one file plus one line.

A criterion module defines ``build(args, *, dim_context, dim_encoded, n_speakers, n_phones)``;
its line in :mod:`cpc.registries` (``CRITERIA.add("name", "cpc.criterion.module:build")``)
registers it. ``build_criterion("name", args, ...)`` then builds it.
"""
from __future__ import annotations

import argparse

import torch.nn as nn

from cpc.registries import CRITERIA


def build_criterion(name: str, args: argparse.Namespace, *, dim_context: int, dim_encoded: int,
                    n_speakers: int = 0, n_phones: int = 0) -> nn.Module:
    """Build the criterion registered as ``name`` from a complete Namespace of training args
    (ConfigError listing the names if unknown)."""
    return CRITERIA.get(name)(args, dim_context=dim_context, dim_encoded=dim_encoded,
                              n_speakers=n_speakers, n_phones=n_phones)
