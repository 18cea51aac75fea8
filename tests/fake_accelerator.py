"""A stand-in accelerator for CPU tests of the distributed code paths.

On a machine without a GPU, every tensor is a CPU tensor, so a 2-rank gloo run can never show
what NCCL does with a tensor on the wrong device (``No backend type associated with device type
cpu``). Here:

* :func:`install_device` registers a device type ``fakegpu`` (torch's PrivateUse1 key) whose
  tensors wrap a CPU tensor; only what moving data does is implemented (allocation, copies to
  and from the CPU), so any computation on it fails loudly;
* :func:`refuse_foreign_devices` wraps the collectives of ``torch.distributed``: on the default
  process group (the one NCCL would serve) a tensor must be on ``fakegpu``, on any other group
  (the host-side gloo group) on the CPU; the operation itself then runs on a CPU copy through
  the real gloo group and the result is copied back.

Call both in a fresh process (a device type can be registered once per process), before the
code under test starts its process group.
"""
from __future__ import annotations

import functools

import torch
import torch.distributed as dist

DEVICE_TYPE = "fakegpu"
TENSOR_COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "reduce", "gather", "scatter",
                      "all_gather_into_tensor", "reduce_scatter_tensor", "all_to_all_single")


class _FakeGpuTensor(torch.Tensor):
    """A ``fakegpu`` tensor: its metadata lives in the wrapper, its values in ``raw`` (CPU)."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, raw: torch.Tensor):
        wrapper = torch._C._acc.create_empty_tensor(raw.shape, raw.dtype)
        wrapper.__class__ = cls
        return wrapper

    def __init__(self, raw: torch.Tensor):
        self.raw = raw


def install_device() -> None:
    """Register the ``fakegpu`` device type and the few operations that move data."""
    from torch.utils.backend_registration import _setup_privateuseone_for_python_backend
    _setup_privateuseone_for_python_backend(DEVICE_TYPE)

    @torch.library.impl("aten::empty_strided", "privateuseone")
    def empty_strided(size, stride, *, dtype=None, layout=None, device=None, pin_memory=None):
        return _FakeGpuTensor(torch.empty(size, dtype=dtype or torch.float32))

    @torch.library.impl("aten::empty.memory_format", "privateuseone")
    def empty(size, *, dtype=None, layout=None, device=None, pin_memory=None,
              memory_format=None):
        return _FakeGpuTensor(torch.empty(size, dtype=dtype or torch.float32))

    @torch.library.impl("aten::_copy_from", "privateuseone")
    def copy_from(source, destination, non_blocking=False):
        values = source.raw if source.device.type == DEVICE_TYPE else source
        if destination.device.type == DEVICE_TYPE:
            destination.raw = values.to(destination.dtype, copy=True).reshape(destination.shape)
        else:
            destination.copy_(values)
        return destination

    @torch.library.impl("aten::detach", "privateuseone")
    def detach(tensor):
        return _FakeGpuTensor(tensor.raw)

    @torch.library.impl("aten::view", "privateuseone")
    def view(tensor, size):
        return _FakeGpuTensor(tensor.raw.view(size))


def _is_default(group) -> bool:
    return group is None or group is dist.GroupMember.WORLD


def _wrap(name: str, original):
    @functools.wraps(original)
    def checked(*args, **kwargs):
        group = kwargs.get("group")
        tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
        tensors += [t for a in args if isinstance(a, (list, tuple)) for t in a
                    if isinstance(t, torch.Tensor)]
        wanted = DEVICE_TYPE if _is_default(group) else "cpu"
        for tensor in tensors:
            if tensor.device.type != wanted:
                raise RuntimeError(f"No backend type associated with device type "
                                   f"{tensor.device.type} ({name} on a group serving {wanted})")
        if wanted == "cpu":
            return original(*args, **kwargs)
        # the real work, on CPU copies through gloo, copied back into the fakegpu tensors
        copies = {id(t): t.to("cpu") for t in tensors}
        swap = lambda a: copies[id(a)] if isinstance(a, torch.Tensor) else \
            type(a)(swap(x) for x in a) if isinstance(a, (list, tuple)) else a  # noqa: E731
        result = original(*[swap(a) for a in args], **{k: swap(v) for k, v in kwargs.items()})
        if hasattr(result, "wait"):  # async_op=True: the CPU copies are final once it is done
            result.wait()
        for tensor in tensors:
            tensor.copy_(copies[id(tensor)])
        return result
    return checked


def refuse_foreign_devices() -> None:
    """Make the default group's collectives refuse tensors that are not on ``fakegpu``, as
    NCCL refuses CPU tensors, and the other groups' refuse tensors that are not on the CPU."""
    from torch.distributed import distributed_c10d
    for name in TENSOR_COLLECTIVES:
        original = getattr(distributed_c10d, name)
        wrapped = _wrap(name, original)
        setattr(distributed_c10d, name, wrapped)
        setattr(dist, name, wrapped)
