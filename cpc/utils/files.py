"""The one way this project writes a file: complete or absent, never half-written.

Everything that must survive a crash (checkpoints, args, logs, captures, listings, exported
features, generated corpora) goes through :func:`atomic_write`: the content is written to a
hidden temp file beside the target (``.<name>.<random>.tmp``), flushed, then renamed over it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from cpc.utils.errors import ConfigError, OutOfSpace
from cpc.utils.signals import unfinished_output

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
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _device_full(exc, path.parent):
            raise OutOfSpace(f"no space left on device while writing {path} (the previous "
                             f"version, if any, is intact): free space on "
                             f"{path.parent} and rerun") from None
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _device_full(exc: BaseException, directory: Path) -> bool:
    """A write error caused by a full device: ENOSPC, or torch.save's zip writer failing (it
    reports a full disk as "unexpected pos") while the device has (almost) no room left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, RuntimeError) and "unexpected pos" in str(exc):
        try:
            return shutil.disk_usage(directory).free < 64 * 2**20
        except OSError:
            return False
    return False


@contextlib.contextmanager
def exclusive_lock(directory: str | Path | None, what: str,
                   output: str | None = None) -> Iterator[None]:
    """Hold ``<directory>/.lock`` for the block, so that a second process using the same
    directory stops with a :class:`ConfigError` instead of overwriting its files. The kernel
    releases the lock when the process dies, however it dies. ``None``: no lock.

    ``what`` names the writer ("training", "feature export"). A tool that writes one file of
    a shared directory (ABX scores next to a training run, one split of the quantized units)
    names it as ``output``: the lock is then that file's own, ``<directory>/.<output>.lock``,
    and writers of other files of the directory go on side by side. While the block runs, an
    interruption names the directory (or the file) as left unfinished
    (:func:`cpc.utils.signals.unfinished_output`). A directory the lock created and nothing
    was written into is removed at the end."""
    if directory is None:
        yield
        return
    lock_path = Path(directory) / (f".{output}.lock" if output else ".lock")
    target = Path(directory) / output if output else Path(directory)
    created = not lock_path.parent.exists()
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(f"{target} is in use by {holder}: two {what}s writing one "
                              f"{'file' if output else 'directory'} would overwrite each "
                              f"other's files; wait for it, or choose another directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            with unfinished_output(target, what):
                yield
        finally:
            lock_path.unlink(missing_ok=True)  # no stray file in a finished run's directory
            fcntl.flock(handle, fcntl.LOCK_UN)
            if created:  # a run refused before writing anything leaves no empty directory
                with contextlib.suppress(OSError):
                    lock_path.parent.rmdir()


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


def check_output_dir(path: str | Path, flag: str) -> None:
    """Refuse, before any work, an output directory that could not be created or written: the
    path (or a parent of it) is a file, or its nearest existing parent is read-only."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    culprit = "" if existing == path else f": {existing}"
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}{culprit} is a file, not a directory; give a directory "
                          f"(it is created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}{culprit} is not writable; give a directory you can "
                          f"write to")


def missing_directories(path: str | Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first: what creating
    it would add (see :func:`remove_empty_directories`)."""
    path = Path(path).absolute()
    return [p for p in (path, *path.parents) if not p.exists()]


def remove_empty_directories(directories: list[Path]) -> None:
    """Remove, deepest first, those of ``directories`` that exist and are empty: a failed run
    leaves no folder it created behind, and a folder holding anything is kept."""
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:  # absent, not empty, or not ours to remove
            pass
