"""Build batches ahead, in a background thread, while the model trains on the current one.

The training loop then only takes a finished batch from a queue and starts its copy to the
device; with ``pin`` (a CUDA device) the batch is in page-locked memory, so that copy runs
asynchronously (``non_blocking=True``) instead of stalling the host.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class Prefetcher(Iterator[T]):
    """Iterate ``source`` in a thread, at most ``depth`` items ahead; with ``pin`` (the CUDA
    device the items will go to) each item's ``pin_memory()`` is called, the thread set to that
    device first (as torch's DataLoader does: pinning from a thread otherwise opens a context
    on GPU 0 in every process). An exception in the thread is raised by ``next``. Use as a
    context manager (or call :meth:`close`): leaving early stops the thread."""

    def __init__(self, source: Iterable[T], depth: int = 2, pin: Any = None) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._pin = pin
        self._thread = threading.Thread(target=self._fill, args=(iter(source),),
                                        name="cpc-batches", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, items: Iterator[T]) -> None:
        try:
            if self._pin is not None:
                import torch
                torch.cuda.set_device(self._pin)
            for item in items:
                if self._pin is not None:
                    item = item.pin_memory()
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)

    def __next__(self) -> T:
        item = self._queue.get()
        if item is _DONE:
            self._queue.put(_DONE)  # later calls end too
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
