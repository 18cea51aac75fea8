"""Stop signals: training stops cleanly, every other interruption is one line and status 130.

In training, :class:`StopRequest` lets the current step finish and a checkpoint be written on
SIGTERM (clusters send it before preemption) or a first Ctrl-C. A second SIGINT interrupts at
once (KeyboardInterrupt).

Everywhere else, and for that second Ctrl-C, :func:`run_command` (every command line's
``__main__`` block) turns SIGINT and SIGTERM into one line naming what was left unfinished and
exit status 130, instead of a traceback.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Callable, Iterator


class StopRequest:
    """Context manager recording a stop signal instead of dying on it."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name} received: finishing the current step, then writing a "
              f"checkpoint (Ctrl-C again to stop at once)", flush=True)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# --------------------------------------------------------------------------------------------
# Every command line: an interruption is one line and exit status 130
# --------------------------------------------------------------------------------------------

INTERRUPTED_STATUS = 130  # what a shell reports for a process ended by SIGINT (128 + 2)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM in a command line: unwinds like Ctrl-C, so that ``finally`` blocks
    close files, remove temp files and release locks, and names the signal."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


_unfinished: list[tuple[str, str]] = []  # (output, what writes it), innermost last
_cut: list[tuple[str, str]] = []  # those whose block an interruption has unwound
_main_running = False


@contextlib.contextmanager
def unfinished_output(output: str | Path, what: str) -> Iterator[None]:
    """Name ``output`` (written by ``what``, e.g. "feature export") in the line an interruption
    prints while the block runs; :func:`cpc.utils.files.exclusive_lock` does it for every
    directory it locks."""
    entry = (str(output), what)
    _unfinished.append(entry)
    try:
        yield
    except KeyboardInterrupt:
        _cut.insert(0, entry)  # unwound innermost first: keep the outermost first
        raise
    finally:
        _unfinished.remove(entry)


def interruption_line(signal_name: str) -> str:
    """``interrupted (SIGINT)``, and what was left unfinished and how to finish it."""
    outputs = _unfinished + _cut
    if not outputs:
        return f"interrupted ({signal_name})"
    left = " and ".join(f"{output} ({what})" for output, what in outputs)
    verb = "was" if len(outputs) == 1 else "were"
    return (f"interrupted ({signal_name}): {left} {verb} left unfinished; rerun the command to "
            f"finish it")


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if not _main_running:  # importing modules: nothing written yet, nothing to unwind
        print(interruption_line(name), file=sys.stderr, flush=True)
        os._exit(INTERRUPTED_STATUS)
    raise Interrupted(name)


def handle_interrupts() -> None:
    """From now on, SIGINT and SIGTERM end this command line with one line and status 130.
    Called first in a ``__main__`` block, before the slow imports, and by :func:`run_command`."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _on_signal)


def run_command(main: Callable[[], int]) -> int:
    """``main()``'s exit status; an interruption (SIGINT, SIGTERM, or Ctrl-C a second time
    during training's graceful stop) instead prints :func:`interruption_line` and gives 130,
    after ``finally`` blocks have run. Every command line's ``__main__`` block ends with
    ``exit_without_teardown(run_command(main))`` (or ``sys.exit``). The signal handlers found
    on entry are put back on return (ignored signals would be inherited by child processes)."""
    global _main_running
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    handle_interrupts()
    _main_running = True
    try:
        return main()
    except KeyboardInterrupt as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a further Ctrl-C cannot cut this line
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
        print(interruption_line(name), file=sys.stderr, flush=True)
        return INTERRUPTED_STATUS
    finally:
        _main_running = False
        _cut.clear()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
