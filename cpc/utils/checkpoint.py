"""Checkpoint and run-file I/O: atomic writes, listing, safe loading.

A run directory (``--pathCheckpoint``) holds ``checkpoint_<epoch>.pt``, ``checkpoint_args.json``
and ``checkpoint_logs.json``, the layout of CPC_audio, and after a stop signal
``interrupted_checkpoint_<epoch>.pt`` (the epoch in progress, for resuming only). Every file is written to a temporary name,
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

from cpc.utils.errors import CheckpointError
from cpc.utils.files import atomic_write

CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)\.pt$")
INTERRUPTED_RE = re.compile(r"^interrupted_checkpoint_(\d+)\.pt$")
ARGS_FILE = "checkpoint_args.json"
LOGS_FILE = "checkpoint_logs.json"
FORMAT_VERSION = 1  # of the checkpoint content; CPC_audio's files (no version) read as 1
MODEL_KEY = "gEncoder"  # CPC_audio's key of the model's weights (encoder and context network)


def write_json(path: str | Path, content: Any) -> None:
    """Atomically write ``content`` as indented JSON."""
    atomic_write(Path(path), lambda h: json.dump(content, h, indent=2, sort_keys=True), "w")


def read_json(path: str | Path) -> Any:
    with open(path) as handle:
        return json.load(handle)


def save_torch(path: str | Path, content: Any) -> None:
    """Atomically ``torch.save`` tensors and plain containers (captures, probe states)."""
    atomic_write(Path(path), lambda h: torch.save(content, h))


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a ``torch.save`` file without unpickling code (tensors, numbers, strings,
    containers only); a missing, truncated or foreign file is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist" if not path.exists() else
                              f"{path} is not a file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated zip, a JSON or text file, a pickle with code...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = reason.split(". ")[0].rstrip(".")[:160]  # torch's first sentence
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, or not written "
                              f"by torch.save: {reason})") from None


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomically save a training state, stamped with :data:`FORMAT_VERSION`."""
    save_torch(path, {**state, "format_version": FORMAT_VERSION})


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A training state (ours or CPC_audio's); a file that is not one, or is from a newer
    format, is a :class:`CheckpointError` naming it."""
    state = load_torch(path, map_location)
    if not isinstance(state, dict) or MODEL_KEY not in state:
        raise CheckpointError(f"{path} is not a CPC checkpoint (no '{MODEL_KEY}' model weights)")
    version = state.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}, newer than the "
                              f"{FORMAT_VERSION} this code reads: update this code to load it")
    return state


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / f"checkpoint_{epoch}.pt"


def best_checkpoint_path(run_dir: str | Path) -> Path:
    """The state of the epoch with the lowest validation loss so far (``best_epoch`` in the
    logs); outside the keep-last-K rotation, and not a ``checkpoint_<N>.pt``."""
    return Path(run_dir) / "checkpoint_best.pt"


def interrupted_checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    """Where a stopped run saves epoch ``epoch`` in progress: a name that tools looking for
    finished epochs (``checkpoint_*.pt``, ours and CPC_audio's) never pick up."""
    return Path(run_dir) / f"interrupted_checkpoint_{epoch}.pt"


def _numbered(run_dir: str | Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted((int(match.group(1)), entry) for entry in run_dir.iterdir()
                  for match in [pattern.match(entry.name)] if match)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every finished epoch's ``checkpoint_<epoch>.pt``, oldest first."""
    return _numbered(run_dir, CHECKPOINT_RE)


def list_interrupted(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the checkpoints of epochs cut by a stop, oldest first."""
    return _numbered(run_dir, INTERRUPTED_RE)


def load_newest_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu",
                           with_interrupted: bool = False) -> tuple[int, Path, dict] | None:
    """The newest checkpoint that loads, as (epoch, path, state); None if there is none, a
    :class:`CheckpointError` if none loads.

    With ``with_interrupted`` (resuming), a cut epoch counts as newer than the finished epochs
    before it. A truncated or corrupt newest file (a kill mid-copy, a full disk) is skipped
    with a warning naming it, and the previous checkpoint is used.
    """
    candidates = [(epoch, 1, path) for epoch, path in list_checkpoints(run_dir)]
    if with_interrupted:  # epoch N cut is older than epoch N finished
        candidates += [(epoch, 0, path) for epoch, path in list_interrupted(run_dir)]
    errors = []
    for epoch, _, path in sorted(candidates, reverse=True):
        try:
            return epoch, path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; falling back to the previous checkpoint")
            errors.append(exc)
    if errors:
        raise CheckpointError(f"no checkpoint of {run_dir} can be read; the newest: {errors[0]}")
    return None


def remove_interrupted(run_dir: str | Path, up_to_epoch: int) -> None:
    """Delete the cut-epoch checkpoints that a finished checkpoint has superseded."""
    for epoch, path in list_interrupted(run_dir):
        if epoch <= up_to_epoch:
            path.unlink(missing_ok=True)


def remove_old_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints (keep <= 0 keeps everything)."""
    if keep <= 0:
        return []
    removed = []
    for _, path in list_checkpoints(run_dir)[:-keep]:
        path.unlink()
        removed.append(path)
    return removed


def load_model_weights(model: torch.nn.Module, state: dict) -> None:
    """The model's weights from a checkpoint's content (:data:`MODEL_KEY`)."""
    model.load_state_dict(state[MODEL_KEY])
