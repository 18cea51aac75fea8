"""Read captures back: ``CaptureLoader(root_or_epoch_dir, only=...)`` iterates batches as dicts.

    loader = CaptureLoader("captures/", only=["ctx_repr", "phone_align"])  # newest epoch
    for batch in loader:
        batch["ctx_repr"]   # (B, T, D)
        batch["origin"]     # {"seq_index", "seq_offset", "frame_seq_index"}
        batch["files"]      # relative path of the file each window starts in

An interrupted capture is refused (:class:`cpc.capture.completeness.IncompleteCapture`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import torch

from cpc.utils import checkpoint as ckpt
from cpc.capture.completeness import MARKER, check_complete
from cpc.capture.kinds import CAPTURE_KINDS

BATCH_RE = re.compile(r"^(?P<kind>[a-z_]+)_batch(?P<first>\d+)-(?P<last>\d+)\.pt$")


def capture_epochs(root: str | Path) -> list[int]:
    """Epochs captured under a --pathCaptureSave directory, oldest first."""
    root = Path(root)
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()) \
        if root.is_dir() else []


class CaptureLoader:
    """Batches of one captured epoch, in window order, as dicts of tensors."""

    def __init__(self, root_or_epoch_dir: str | Path, only: list[str] | None = None,
                 epoch: int | None = None) -> None:
        path = Path(root_or_epoch_dir)
        if not ((path / "sequences.json").is_file() or (path / MARKER).exists()):
            epochs = capture_epochs(path)
            if not epochs:
                raise FileNotFoundError(f"{path} holds no capture (no <epoch>/sequences.json)")
            path = path / str(epoch if epoch is not None else epochs[-1])
        check_complete(path)
        self.epoch_dir = path
        self.sequences = ckpt.read_json(path / "sequences.json")
        self.kinds = [k for k in CAPTURE_KINDS if (path / k).is_dir()]
        if only is not None:
            missing = [k for k in only if k not in self.kinds]
            if missing:
                raise ValueError(f"{path} has no capture of {', '.join(missing)} (captured: "
                                 f"{', '.join(self.kinds) or 'none'})")
            self.kinds = list(only)
        self.batches = self._batch_ranges()

    def _batch_ranges(self) -> list[tuple[int, int]]:
        ranges = set()
        for kind in self.kinds + ["origin"]:
            directory = self.epoch_dir / kind
            if directory.is_dir():
                for file in directory.iterdir():
                    match = BATCH_RE.match(file.name)
                    if match and match.group("kind") == kind:
                        ranges.add((int(match.group("first")), int(match.group("last"))))
        return sorted(ranges)

    @property
    def stats(self) -> dict:
        path = self.epoch_dir / "stats.json"
        return ckpt.read_json(path) if path.is_file() else {}

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict]:
        for first, last in self.batches:
            batch: dict = {"first": first, "last": last}
            for kind in self.kinds:
                batch[kind] = self._load(kind, first, last)
            origin_file = self.epoch_dir / "origin" / f"origin_batch{first}-{last}.pt"
            if origin_file.is_file():
                origin = ckpt.load_torch(origin_file)
                batch["origin"] = origin
                batch["files"] = [self.sequences[int(i)]["path"] for i in origin["seq_index"]]
            yield batch

    def _load(self, kind: str, first: int, last: int) -> torch.Tensor:
        return ckpt.load_torch(self.epoch_dir / kind / f"{kind}_batch{first}-{last}.pt")
