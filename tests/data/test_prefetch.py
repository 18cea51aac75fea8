"""The background batch thread: order, errors, early exit, pinning."""
from __future__ import annotations

import threading

import pytest

from cpc.data.prefetch import Prefetcher


def test_items_come_in_order_and_the_thread_ends():
    with Prefetcher(range(100), depth=3) as items:
        assert list(items) == list(range(100))
        assert list(items) == []  # exhausted stays exhausted
    assert not any(t.name == "cpc-batches" and t.is_alive() for t in threading.enumerate())


def test_an_error_in_the_thread_is_raised_by_the_consumer():
    def failing():
        yield 1
        raise ValueError("bad file")
    with Prefetcher(failing()) as items:
        assert next(items) == 1
        with pytest.raises(ValueError, match="bad file"):
            next(items)


def test_leaving_early_stops_a_producer_that_is_waiting_to_put():
    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1
    with Prefetcher(endless(), depth=2) as items:
        assert next(items) == 0
    assert len(produced) <= 5  # it stopped instead of running on


def test_pinning_sets_the_threads_device_and_pins_each_item(monkeypatch):
    import torch
    devices = []
    monkeypatch.setattr(torch.cuda, "set_device", devices.append)

    class Item:
        pinned = False

        def pin_memory(self):
            self.pinned = True
            return self
    with Prefetcher([Item(), Item()], pin="cuda:1") as items:
        assert all(item.pinned for item in items)
    assert devices == ["cuda:1"]
