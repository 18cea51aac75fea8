"""Stop a run cleanly on SIGTERM / SIGINT: the current step finishes, a checkpoint is written.

Clusters send SIGTERM before preemption; a first Ctrl-C behaves the same. A second SIGINT
interrupts at once (KeyboardInterrupt).
"""
from __future__ import annotations

import signal
import threading
from types import FrameType


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
