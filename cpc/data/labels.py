"""Phone labels in CPC_audio's format: one line per file, ``<stem> id id ...``, one id per
10 ms frame; reading them, and matching them to the listed files.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from cpc.data.listing import SeqInfo
from cpc.utils.constants import FRAME_SIZE
from cpc.utils.errors import DataError


def parseSeqLabels(pathLabels: str | Path) -> tuple[dict[str, np.ndarray], int]:
    """Read CPC_audio phone labels: one line per file, ``<stem> id id id ...`` (one id per 10 ms).

    Returns (labels by stem, number of phone classes = max id + 1).
    """
    pathLabels = Path(pathLabels)
    if pathLabels.is_dir():
        raise DataError(f"phone label file {pathLabels} (--path_phone_data) is a directory; "
                        f"expected a text file of lines '<stem> id id ...' (CPC_audio's "
                        f"converted_aligned_phones.txt)")
    if not pathLabels.is_file():
        raise DataError(f"phone label file {pathLabels} (--path_phone_data) does not exist")
    labels: dict[str, np.ndarray] = {}
    max_id = -1
    try:
        with open(pathLabels, encoding="utf-8-sig") as handle:  # -sig: drop a byte-order mark
            for line_no, line in enumerate(handle, 1):
                max_id = max(max_id, _parse_label_line(pathLabels, line_no, line, labels))
    except UnicodeDecodeError as exc:
        raise DataError(f"phone label file {pathLabels} is not a text file ({exc.reason} at "
                        f"byte {exc.start}); expected lines '<stem> id id ...'") from None
    if not labels:
        raise DataError(f"phone label file {pathLabels} holds no labels")
    return labels, max_id + 1


def _parse_label_line(path: Path, line_no: int, line: str, labels: dict[str, np.ndarray]
                      ) -> int:
    """Add one ``<stem> id id ...`` line to ``labels``; returns its largest id (-1: blank)."""
    fields = line.split()
    if not fields:
        return -1
    try:
        ids = np.array(fields[1:], dtype=np.int64)
    except ValueError:
        raise DataError(f"{path}:{line_no}: expected '<stem> id id ...' with integer ids, got "
                        f"{line.strip()[:80]!r}") from None
    if len(ids) == 0 or ids.min() < 0:
        raise DataError(f"{path}:{line_no}: {fields[0]} has no labels or a negative id")
    if fields[0] in labels:
        raise DataError(f"{path}:{line_no}: {fields[0]} is labelled twice; one line per file")
    labels[fields[0]] = ids.astype(np.int32)
    return int(ids.max())


def attach_phone_labels(seqs: Sequence[SeqInfo], labels: dict[str, np.ndarray],
                        path_db: str | Path = "", labels_file: str | Path = "--path_phone_data"
                        ) -> list[SeqInfo]:
    """Keep the labelled sequences, trimmed so that audio and labels have the same frame count.

    A file may differ from its labels by at most one 10 ms frame (rounding of the aligner): both
    are then cut to the shorter. Files without labels are reported and dropped; no labelled file
    at all, or a larger mismatch, is a DataError naming the file.
    """
    kept, missing = [], []
    for seq in seqs:
        lab = labels.get(seq.stem)
        if lab is None:
            missing.append(seq.stem)
            continue
        n_frames = seq.n_samples // FRAME_SIZE
        if abs(n_frames - len(lab)) > 1:
            raise DataError(f"{Path(path_db) / seq.path}: {seq.n_samples} samples "
                            f"({n_frames} frames of {FRAME_SIZE}) but {len(lab)} phone labels; "
                            f"a mismatch of more than one frame means labels of another file "
                            f"or another frame rate")
        kept.append(seq._replace(n_samples=min(n_frames, len(lab)) * FRAME_SIZE))
    if not kept:
        raise DataError(f"none of the {len(seqs)} files has phone labels in {labels_file} "
                        f"(first stems: {', '.join(s.stem for s in seqs[:3])})")
    if missing:
        warnings.warn(f"{len(missing)} of {len(seqs)} files have no phone labels and are dropped "
                      f"(first: {', '.join(missing[:5])})")
    return kept
