"""The Stat interface: statistics computed on captured batches, merged, then finalised."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

from cpc.utils.errors import ConfigError


class Stat(ABC):
    """A statistic over the capture dataset.

    ``compute`` turns one batch (a dict of captured tensors, e.g. ``ctx_repr`` (B, T, D)) into a
    partial result, ``merge`` combines two partial results, and ``finalize`` turns the merged
    result into numbers (and may write files such as plots under ``out_dir``).
    """

    #: capture kinds the stat reads from each batch (e.g. {"ctx_repr"})
    needs: frozenset[str] = frozenset()

    @property
    @abstractmethod
    def name(self) -> str:
        """Unique name, used as the prefix of the stat's results."""

    @abstractmethod
    def compute(self, batch: dict[str, torch.Tensor]) -> Any:
        """Partial result of one batch."""

    @abstractmethod
    def merge(self, first: Any, second: Any) -> Any:
        """Partial result of two batches' partial results."""

    @abstractmethod
    def finalize(self, merged: Any, epoch: int) -> dict[str, float]:
        """Numbers of the whole dataset (files, if any, are written here too)."""


class StatError(ConfigError):
    """A stat spec or argument the user got wrong; the message says what is accepted."""


def output_dir(path: str) -> Path:
    """A directory for a stat's files, created if needed."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out
