"""Whether a capture epoch folder is whole: an interrupted capture is refused, never read.

A capture writes ``<epoch>/INCOMPLETE`` before its first file and removes it after its last
(``stats.json``), so a folder cut by Ctrl-C, a kill or a crash keeps the marker. Folders written
before the marker existed have none; their writer always wrote ``stats.json`` last, so such a
folder is whole exactly when ``stats.json`` is there.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from cpc.capture.kinds import CAPTURE_KINDS
from cpc.utils.errors import CPCError
from cpc.utils.files import atomic_write_text

MARKER = "INCOMPLETE"
LAST_FILE = "stats.json"


class IncompleteCapture(CPCError):
    """A capture folder whose capture did not finish."""


def start_capture(epoch_dir: Path) -> None:
    """Mark ``epoch_dir`` incomplete, then clear what an earlier capture left in it (the
    folders of every kind, ``sequences.json``, ``stats.json``), so that the new capture's files
    are never mixed with older ones (another batch size, other kinds)."""
    atomic_write_text(epoch_dir / MARKER,
                      "this capture was interrupted before its end: rerun the command that "
                      "wrote it (cpc/train.py ... --onlyCapture captures the newest "
                      "checkpoint), or delete this folder\n")
    for kind in [*CAPTURE_KINDS, "origin"]:
        shutil.rmtree(epoch_dir / kind, ignore_errors=True)
    for name in ("sequences.json", LAST_FILE):
        (epoch_dir / name).unlink(missing_ok=True)


def finish_capture(epoch_dir: Path) -> None:
    """Mark ``epoch_dir`` whole: called once its last file is written."""
    (epoch_dir / MARKER).unlink()


def check_complete(epoch_dir: Path) -> None:
    """Raise :class:`IncompleteCapture` unless ``epoch_dir`` holds a finished capture."""
    if (epoch_dir / MARKER).exists():
        why = f"{MARKER} is there"
    elif not (epoch_dir / LAST_FILE).is_file():
        why = f"it has no {LAST_FILE}, written last"
    else:
        return
    raise IncompleteCapture(f"{epoch_dir} is an incomplete capture, interrupted before its end "
                            f"({why}): redo it with the command that wrote it (cpc/train.py "
                            f"... --onlyCapture captures the newest checkpoint again), or "
                            f"delete the folder")
