"""Checkpoint and run-file I/O: atomic writes, listing, safe loading.

A run directory (``--pathCheckpoint``) holds ``checkpoint_<epoch>.pt``, ``checkpoint_args.json``
and ``checkpoint_logs.json``, the layout of CPC_audio. Every file is written to a temporary name,
flushed to disk and renamed, so a kill at any moment leaves the previous version intact.
Checkpoints are read with ``weights_only=True``: loading one never runs code.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from cpc.utils.files import atomic_write

CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)\.pt$")
ARGS_FILE = "checkpoint_args.json"
LOGS_FILE = "checkpoint_logs.json"


def write_json(path: str | Path, content: Any) -> None:
    """Atomically write ``content`` as indented JSON."""
    atomic_write(Path(path), lambda h: json.dump(content, h, indent=2, sort_keys=True), "w")


def read_json(path: str | Path) -> Any:
    with open(path) as handle:
        return json.load(handle)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomically ``torch.save`` a state dict."""
    atomic_write(Path(path), lambda h: torch.save(state, h))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint without unpickling code (tensors, numbers, strings, containers only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / f"checkpoint_{epoch}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every ``checkpoint_<epoch>.pt`` of a run directory, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for entry in run_dir.iterdir():
        match = CHECKPOINT_RE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found)


def load_newest_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu"
                           ) -> tuple[int, Path, dict] | None:
    """The newest checkpoint that loads, as (epoch, path, state); None if there is none.

    A truncated or corrupt newest file (a kill mid-copy, a full disk) is skipped with a warning
    naming it, and the previous checkpoint is used.
    """
    for epoch, path in reversed(list_checkpoints(run_dir)):
        try:
            return epoch, path, load_checkpoint(path, map_location)
        except Exception as exc:  # corrupt zip, truncated pickle, wrong content...
            warnings.warn(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
                          f"falling back to the previous one")
    return None


def remove_old_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints (keep <= 0 keeps everything)."""
    if keep <= 0:
        return []
    removed = []
    for _, path in list_checkpoints(run_dir)[:-keep]:
        path.unlink()
        removed.append(path)
    return removed
