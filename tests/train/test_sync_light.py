"""The training loop reads device values back to the host at most once per --logging_step.

On a GPU every such read (``.item()``, ``.tolist()``, ``.cpu()``, ``bool(tensor)``...) waits
for the device to finish its queue. Without a GPU this counts the calls themselves: a torch
function mode records every such call made by this project's code in the training thread,
between an epoch's first and last update. Adam's step counters are host tensors on every
device (torch keeps them on the CPU unless capturable or fused), so reading them is not a
sync and is not counted. The CUDA tier checks the same with ``torch.cuda.set_sync_debug_mode``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from cpc import train
from cpc.utils import optim
from tests.train.test_train import SMALL, corpus_args

PACKAGE = str(Path(train.__file__).resolve().parent)
READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"}
# (``.to(device)`` is left out: on CPU it cannot be told from a no-op move of a host tensor)


class HostReads(TorchFunctionMode):
    """Records ("read", where) for each host read by the project's code and ("update", n)
    after each optimiser update."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []
        self.host_tensors: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READS and id(args[0]) not in self.host_tensors:
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(PACKAGE):
                self.events.append(("read", f"{Path(caller.f_code.co_filename).name}:"
                                            f"{caller.f_lineno} {name}"))
        return func(*args, **kwargs)


@pytest.mark.parametrize("flags", [[], ["--update_freq", "2", "--save_interval_steps", "0"]],
                         ids=["plain", "accumulated"])
def test_at_most_one_host_read_per_logging_step(tiny_corpus, tmp_path, monkeypatch, flags):
    mode = HostReads()
    original_step = optim.Updater.step

    def step(self, *args, **kwargs):
        norms = original_step(self, *args, **kwargs)
        mode.host_tensors = {id(state["step"]) for optimizer in self.optimizers.values()
                             for state in optimizer.state.values() if "step" in state}
        mode.events.append(("update", ""))
        return norms
    monkeypatch.setattr(optim.Updater, "step", step)
    logging_step = 10
    with mode:
        assert train.main([str(a) for a in corpus_args(tiny_corpus) + SMALL + flags +
                           ["--pathCheckpoint", tmp_path / "run", "--nEpoch", "1",
                            "--logging_step", str(logging_step)]]) == 0
    kinds = [kind for kind, _ in mode.events]
    first, last = kinds.index("update"), len(kinds) - 1 - kinds[::-1].index("update")
    reads_between_updates: dict[int, list[str]] = {}
    updates = 0
    for kind, where in mode.events[first:last]:
        if kind == "update":
            updates += 1
        else:
            reads_between_updates.setdefault(updates, []).append(where)
    assert updates >= 2 * logging_step
    # one read (the sync point) right after every logging_step-th update, none elsewhere
    assert set(reads_between_updates) <= {n for n in range(updates + 1)
                                          if n % logging_step == 0}, reads_between_updates
    assert all(len(reads) == 1 for reads in reads_between_updates.values()), \
        reads_between_updates
