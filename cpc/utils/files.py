"""The one way this project writes a file: complete or absent, never half-written.

Everything that must survive a crash (checkpoints, args, logs, captures, listings, exported
features, generated corpora) goes through :func:`atomic_write`: the content is written to a
hidden temp file beside the target (``.<name>.<random>.tmp``), flushed, then renamed over it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

TEMP_SUFFIX = ".tmp"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb",
                 durable: bool = True) -> None:
    """Write ``path`` through ``write(handle)`` into a temp file beside it, then rename.

    The file gets the permissions of a plain ``open`` under the process umask (``mkstemp``
    alone would make it 0600). ``durable`` also fsyncs the file and its directory, so the
    rename survives a power loss (checkpoints); caches skip that cost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> None:
    """:func:`atomic_write` of a text."""
    atomic_write(path, lambda handle: handle.write(text), "w", durable)


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temp files of writes that were killed (SIGKILL, power loss) in ``directory``."""
    directory = Path(directory)
    stale = [p for p in directory.glob(f".*{TEMP_SUFFIX}") if p.is_file()] \
        if directory.is_dir() else []
    for path in stale:
        path.unlink()
    return stale
