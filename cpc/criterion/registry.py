"""Name -> builder registry for criteria, so that a new criterion is one file plus one line.

A criterion module defines ``build(args, *, dim_context, dim_encoded, n_speakers, n_phones)``
decorated with ``@register_criterion("name")``; ``cpc/criterion/__init__.py`` imports the module
so the name is registered. ``build_criterion("name", args, ...)`` then builds it.
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch.nn as nn

CriterionBuilder = Callable[..., nn.Module]
_CRITERIA: dict[str, CriterionBuilder] = {}


def register_criterion(name: str) -> Callable[[CriterionBuilder], CriterionBuilder]:
    """Decorator registering ``builder(args, *, dim_context, dim_encoded, n_speakers, n_phones)``."""
    def decorator(builder: CriterionBuilder) -> CriterionBuilder:
        if name in _CRITERIA:
            raise ValueError(f"criterion {name!r} is already registered")
        _CRITERIA[name] = builder
        return builder
    return decorator


def available_criteria() -> list[str]:
    """Registered criterion names, sorted."""
    return sorted(_CRITERIA)


def build_criterion(name: str, args: argparse.Namespace, *, dim_context: int, dim_encoded: int,
                    n_speakers: int = 0, n_phones: int = 0) -> nn.Module:
    """Build the criterion registered as ``name`` (ValueError listing the names if unknown)."""
    if name not in _CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; available: {available_criteria()}")
    return _CRITERIA[name](args, dim_context=dim_context, dim_encoded=dim_encoded,
                           n_speakers=n_speakers, n_phones=n_phones)
