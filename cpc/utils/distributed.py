"""torchrun / DistributedDataParallel plumbing: process groups, ranks, collectives.

``torchrun --nproc_per_node N cpc/train.py ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them a run is a single process and every helper here is a no-op.

Two process groups, each collective on a device its group serves:

* the default group (NCCL on CUDA, gloo on CPU) carries values that live on the training
  device: DDP's gradients, the epoch totals, the health figures. NCCL serves only the GPU, so
  these helpers move a tensor to :attr:`DistInfo.device` before the collective (no copy when
  it is already there) and back after it; a CPU tensor never reaches NCCL.
* a host group (gloo, CPU tensors) carries what lives on the host: the stop and save votes,
  the epoch length the ranks agree on, Python objects (the corpus listing, the resumed
  state, RNG states), and the barrier behind which the other ranks wait while rank 0 probes
  or captures. Its timeout is :data:`HOST_WAIT`: rank-0 work of any length cannot trip it, and
  NCCL, having nothing in flight meanwhile, has nothing to time out either.

``--dist_timeout_minutes`` is the default group's timeout (NCCL's watchdog kills a job whose
collective waits longer).
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

HOST_WAIT = timedelta(days=30)  # the host group's timeout: rank 0's probes may take hours
T = TypeVar("T")


class PeerFailed(Exception):
    """Rank 0 failed at a step every rank waits for; it reports the error, the others exit."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job, and the groups and device of its collectives."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # what the default group's collectives take
    host_group: Any = field(default=None, compare=False)  # gloo group of host values

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints, captures and probe results."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_ranks() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def collective_device(backend: str, device: torch.device) -> torch.device:
    """The device the default group's collectives run on: the rank's GPU under NCCL, the CPU
    under gloo."""
    return device if backend == "nccl" else torch.device("cpu")


def init_distributed(device: torch.device, timeout_minutes: float = 60.0
                     ) -> tuple[DistInfo, torch.device]:
    """Join the job torchrun describes: the default group (NCCL on CUDA, gloo on CPU) with
    ``timeout_minutes``, and the host group. Returns this rank's DistInfo and its device."""
    world_size = launched_ranks()
    if world_size == 1:
        return DistInfo(device=device), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes),
                                device_id=device if device.type == "cuda" else None)
    host_group = dist.new_group(backend="gloo", timeout=HOST_WAIT)
    return DistInfo(rank, world_size, local_rank, collective_device(backend, device),
                    host_group), device


def shutdown_distributed() -> None:
    """Shut the process groups down while Python is alive. A DistributedDataParallel module
    sits in a reference cycle and holds its group: unless a collection frees it first, the
    group's threads outlive the interpreter and the process aborts at exit (SIGABRT,
    "terminate called without an active exception"), about one exit in 25 on 2 cores."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# Values on the training device (default group)
# --------------------------------------------------------------------------------------------

def sum_over_ranks(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise sum of ``tensor`` over ranks, on the device of ``tensor``."""
    if not info.active:
        return tensor
    shared = tensor.to(info.device, copy=True)
    dist.all_reduce(shared)
    return shared.to(tensor.device)


def mean_over_ranks(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise mean of a floating ``tensor`` over ranks."""
    return sum_over_ranks(tensor, info) / info.world_size if info.active else tensor


# --------------------------------------------------------------------------------------------
# Values on the host (host group)
# --------------------------------------------------------------------------------------------

def broadcast_object(value: Any, info: DistInfo) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank."""
    if not info.active:
        return value
    holder = [value if info.is_main else None]
    dist.broadcast_object_list(holder, src=0, group=info.host_group)
    return holder[0]


def on_main(compute: Callable[[], T], info: DistInfo) -> T:
    """``compute()`` on rank 0 only (listing a corpus, choosing the checkpoint to resume from),
    its result on every rank. If it raises, rank 0 raises it and the other ranks raise
    :class:`PeerFailed` instead of waiting for a result that will not come."""
    if not info.active:
        return compute()
    outcome: tuple[bool, Any] = (False, None)
    error: BaseException | None = None
    if info.is_main:
        try:
            outcome = (True, compute())
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after telling the others
            error = exc
    outcome = broadcast_object(outcome, info)
    if error is not None:
        raise error
    if not outcome[0]:
        raise PeerFailed("rank 0 failed")
    return outcome[1]


def gather_objects(value: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not info.active:
        return [value]
    values: list[Any] = [None] * info.world_size
    dist.all_gather_object(values, value, group=info.host_group)
    return values


def min_over_ranks(value: int, info: DistInfo) -> int:
    """The smallest ``value`` of all ranks (e.g. the epoch length all ranks can take)."""
    if not info.active:
        return value
    tensor = torch.tensor([value], dtype=torch.long)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=info.host_group)
    return int(tensor[0])


def barrier(info: DistInfo) -> None:
    """Wait for every rank, on the host group (no timeout that rank-0 work could reach)."""
    if info.active:
        dist.barrier(group=info.host_group)


class FlagVote:
    """Flags every rank agrees on at the same step, without waiting at any step.

    ``poll(flags)`` is called after every optimiser step with this rank's flags (e.g. "a stop
    signal arrived", "rank 0's clock says checkpoint"). In one process it returns them at once.
    Under torchrun, every ``every`` steps it reads the vote launched ``every`` steps earlier (an
    all-reduce MAX on the host group, long finished by then) and launches a new one with the
    current flags; in between it returns all False. Every rank therefore acts at the same step,
    ``every`` to ``2 * every`` steps after a flag is raised. :meth:`settle` ends an epoch: the
    pending vote and one more, blocking.
    """

    def __init__(self, info: DistInfo, n_flags: int, every: int = 8) -> None:
        self.info, self.n_flags, self.every = info, n_flags, every
        self._steps = 0
        self._pending: tuple[Any, torch.Tensor] | None = None

    def poll(self, flags: list[bool]) -> list[bool]:
        if not self.info.active:
            return list(flags)
        self._steps += 1
        if self._steps % self.every:
            return [False] * self.n_flags
        decided = self._collect()
        self._pending = self._launch(flags)
        return decided

    def settle(self, flags: list[bool]) -> list[bool]:
        """The pending vote and a vote on ``flags``, both awaited (at an epoch's end)."""
        if not self.info.active:
            return list(flags)
        earlier = self._collect()
        self._pending = self._launch(flags)
        now = self._collect()
        self._steps = 0
        return [a or b for a, b in zip(earlier, now)]

    def _launch(self, flags: list[bool]) -> tuple[Any, torch.Tensor]:
        tensor = torch.tensor([int(f) for f in flags], dtype=torch.long)
        work = dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.info.host_group,
                               async_op=True)
        return work, tensor

    def _collect(self) -> list[bool]:
        if self._pending is None:
            return [False] * self.n_flags
        work, tensor = self._pending
        work.wait()
        self._pending = None
        return [bool(v) for v in tensor.tolist()]
