"""The QRNN recurrence ("forget mult"): ``h_t = f_t * h_{t-1} + (1 - f_t) * z_t``, time-major.

:func:`forget_mult` takes ``f`` and ``z`` of shape ``(T, B, H)`` (time first) and an optional
initial state ``h0`` of shape ``(B, H)`` (zeros when ``None``) and returns every ``h_t`` as
``(T, B, H)``. It is differentiable in ``f``, ``z`` and ``h0``.

Why a custom autograd Function: a Python loop under autograd records several graph nodes per
step and its backward walks them all (3-4x slower forward+backward at T=128, B=8, H=256, see
``bench/qrnn_bench.py``). Here the forward is the loop with one in-place ``addcmul`` per step and
the backward is the explicit reverse recurrence of the gradient (``g_{t-1} += f_t * g_t``), after
which the gate gradients are whole-tensor products. The steps run in the naive loop's order, so
results match it to float rounding: no log-space scan (slower, and imprecise gate gradients in
fp32) and no blocked scan with cumulative products (only ~0.15 ms less at T=128 on this CPU).

Backends: the pure torch one always works. On CUDA tensors an optional cupy kernel (one thread
per ``(b, h)`` running over time; ``pip install '.[cuda]'``) is tried first when cupy is
installed and sees a GPU; cupy is imported lazily and never required. A backend that raises is
disabled for the process, with a warning, and the call falls back to torch, which computes the
same values. The backend in use is printed once per process, with why a faster one is not.
"""
from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Optional, Protocol

import numpy as np
import torch
from torch.autograd.function import once_differentiable

logger = logging.getLogger(__name__)

Grads = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------- pure torch math

def recurrence_forward(f: torch.Tensor, z: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """All ``h_t = f_t * h_{t-1} + (1 - f_t) * z_t`` for ``(T, B, H)`` inputs, ``h_{-1} = h0``."""
    h = torch.addcmul(z, f, z, value=-1)  # (1 - f) * z, contiguous; step t adds f_t * h_{t-1}
    previous = h0
    for h_t, f_t in zip(h.unbind(0), f.unbind(0)):
        h_t.addcmul_(f_t, previous)
        previous = h_t
    return h


def recurrence_backward(f: torch.Tensor, z: torch.Tensor, h0: torch.Tensor, h: torch.Tensor,
                        grad_h: torch.Tensor) -> Grads:
    """Gradients ``(grad_f, grad_z, grad_h0)`` of :func:`recurrence_forward` given ``dL/dh``.

    ``g_t = dL/dh_t`` (total) follows the reverse recurrence ``g_t = grad_h_t + f_{t+1} g_{t+1}``;
    then ``dL/df_t = (h_{t-1} - z_t) g_t``, ``dL/dz_t = (1 - f_t) g_t``, ``dL/dh0 = f_0 g_0``.
    """
    g = grad_h.clone(memory_format=torch.contiguous_format)
    g_steps, f_steps = g.unbind(0), f.unbind(0)
    for t in range(len(g_steps) - 1, 0, -1):
        g_steps[t - 1].addcmul_(f_steps[t], g_steps[t])
    grad_f = torch.empty_like(g)
    torch.sub(h[:-1], z[1:], out=grad_f[1:])
    torch.sub(h0, z[0], out=grad_f[0])
    return grad_f.mul_(g), torch.addcmul(g, f, g, value=-1), f[0] * g[0]


# --------------------------------------------------------------------------- backends

class Backend(Protocol):
    """A way to run the recurrence: forward values and the three gradients, same maths."""

    name: str
    failed: bool

    def supports(self, x: torch.Tensor) -> bool: ...

    def forward(self, f: torch.Tensor, z: torch.Tensor, h0: torch.Tensor) -> torch.Tensor: ...

    def backward(self, f: torch.Tensor, z: torch.Tensor, h0: torch.Tensor, h: torch.Tensor,
                 grad_h: torch.Tensor) -> Grads: ...


class TorchBackend:
    """Pure torch on any device and float dtype (the reference and the fallback)."""

    name = "torch"
    failed = False

    def supports(self, x: torch.Tensor) -> bool:
        return True

    forward = staticmethod(recurrence_forward)
    backward = staticmethod(recurrence_backward)


_CUDA_SOURCE = r"""
extern "C" __global__ void forget_mult_forward(
        const scalar_t* f, const scalar_t* z, const scalar_t* h0, scalar_t* h,
        long long steps, long long width) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= width) return;
    scalar_t previous = h0[i];
    for (long long t = 0; t < steps; ++t) {
        long long k = t * width + i;
        previous = f[k] * previous + (1 - f[k]) * z[k];
        h[k] = previous;
    }
}

extern "C" __global__ void forget_mult_backward(
        const scalar_t* f, const scalar_t* z, const scalar_t* h0, const scalar_t* h,
        const scalar_t* grad_h, scalar_t* grad_f, scalar_t* grad_z, scalar_t* grad_h0,
        long long steps, long long width) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= width) return;
    scalar_t g = 0;
    for (long long t = steps - 1; t >= 0; --t) {
        long long k = t * width + i;
        g += grad_h[k];
        scalar_t h_previous = t > 0 ? h[k - width] : h0[i];
        grad_f[k] = (h_previous - z[k]) * g;
        grad_z[k] = (1 - f[k]) * g;
        g = f[k] * g;
    }
    grad_h0[i] = g;
}
"""

_CUDA_TYPES = {torch.float32: "float", torch.float64: "double"}
_THREADS = 256


@functools.lru_cache(maxsize=None)
def _cupy_or_reason() -> tuple[Optional[Any], str]:
    """(the cupy module, "") when it is installed and sees a GPU, else (None, why not);
    imported on first use."""
    try:
        import cupy
    except ImportError:
        return None, "cupy is not installed: pip install '.[cuda]'"
    except Exception as exc:  # noqa: BLE001 - any driver problem means "no cupy"
        return None, f"cupy cannot be imported ({type(exc).__name__}: {exc})"
    try:
        return (cupy, "") if cupy.cuda.is_available() else (None, "cupy sees no GPU")
    except Exception as exc:  # noqa: BLE001
        return None, f"cupy cannot reach the GPU ({type(exc).__name__}: {exc})"


def _cupy() -> Optional[Any]:
    """The cupy module when it is installed and sees a GPU, else None."""
    return _cupy_or_reason()[0]


@functools.lru_cache(maxsize=None)
def _cupy_kernel(name: str, scalar_type: str) -> Any:
    """Kernel ``name`` of :data:`_CUDA_SOURCE` for ``scalar_type``, compiled by NVRTC once."""
    return _cupy().RawKernel(_CUDA_SOURCE.replace("scalar_t", scalar_type), name)


class CupyBackend:
    """Element-parallel CUDA kernels through cupy, on torch's current stream; float32/64 only."""

    name = "cupy"
    failed = False

    def supports(self, x: torch.Tensor) -> bool:
        return x.is_cuda and x.dtype in _CUDA_TYPES and x.numel() > 0 and _cupy() is not None

    def _launch(self, name: str, tensors: list[torch.Tensor], steps: int, width: int) -> None:
        """Run kernel ``name`` on contiguous ``tensors`` (passed as raw device pointers)."""
        cupy = _cupy()
        device = tensors[0].device
        kernel = _cupy_kernel(name, _CUDA_TYPES[tensors[0].dtype])
        stream = torch.cuda.current_stream(device).cuda_stream
        with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream):
            blocks = (width + _THREADS - 1) // _THREADS
            pointers = [np.uint64(t.data_ptr()) for t in tensors]
            kernel((blocks,), (_THREADS,), (*pointers, np.int64(steps), np.int64(width)))

    def forward(self, f: torch.Tensor, z: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        f, z, h0 = f.contiguous(), z.contiguous(), h0.contiguous()
        h = torch.empty_like(f)
        self._launch("forget_mult_forward", [f, z, h0, h], f.shape[0], h0.numel())
        return h

    def backward(self, f: torch.Tensor, z: torch.Tensor, h0: torch.Tensor, h: torch.Tensor,
                 grad_h: torch.Tensor) -> Grads:
        f, z, h0, h, grad_h = (t.contiguous() for t in (f, z, h0, h, grad_h))
        grad_f, grad_z, grad_h0 = torch.empty_like(f), torch.empty_like(z), torch.empty_like(h0)
        self._launch("forget_mult_backward", [f, z, h0, h, grad_h, grad_f, grad_z, grad_h0],
                     f.shape[0], h0.numel())
        return grad_f, grad_z, grad_h0


TORCH_BACKEND = TorchBackend()
FAST_BACKENDS: list[Backend] = [CupyBackend()]


def select_backend(x: torch.Tensor) -> Backend:
    """The first fast backend that supports ``x`` and has not failed, else the torch one."""
    for backend in FAST_BACKENDS:
        if not backend.failed and backend.supports(x):
            return backend
    return TORCH_BACKEND


_announced: set[str] = set()


def announce(backend: Backend, x: torch.Tensor) -> None:
    """Print, once per process, which backend runs the recurrence (and on CUDA, why not cupy)."""
    if "backend" in _announced:
        return
    _announced.add("backend")
    why = ""
    if backend is TORCH_BACKEND and x.is_cuda:
        reason = "the cupy kernel failed (see above)" if FAST_BACKENDS[0].failed else \
            _cupy_or_reason()[1] or f"the cupy kernel takes float32/64, not {x.dtype}"
        why = f"; {reason}"
    print(f"QRNN recurrence: {backend.name} on {x.device.type}{why}", flush=True)


def _run(backend: Backend, method: str, *args: torch.Tensor) -> tuple[Any, Backend]:
    """``backend.method(*args)`` and the backend that ran it: torch if ``backend`` raised."""
    if backend is not TORCH_BACKEND:
        try:
            return getattr(backend, method)(*args), backend
        except Exception as exc:  # noqa: BLE001 - any failure of an optional kernel: use torch
            backend.failed = True
            logger.debug("forget_mult: %s backend failed", backend.name, exc_info=True)
            print(f"warning: QRNN recurrence: the {backend.name} backend failed "
                  f"({type(exc).__name__}: {exc}); using torch from now on", file=sys.stderr,
                  flush=True)
    return getattr(TORCH_BACKEND, method)(*args), TORCH_BACKEND


class _ForgetMult(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f: torch.Tensor, z: torch.Tensor, h0: torch.Tensor,
                backend: Backend) -> torch.Tensor:
        h, ctx.backend = _run(backend, "forward", f, z, h0)
        ctx.save_for_backward(f, z, h0, h)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: torch.Tensor):
        grads, _ = _run(ctx.backend, "backward", *ctx.saved_tensors, grad_h)
        return (*grads, None)


def forget_mult(f: torch.Tensor, z: torch.Tensor, h0: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``h_t = f_t * h_{t-1} + (1 - f_t) * z_t`` for time-major ``f, z`` of shape ``(T, B, H)``.

    ``h0`` (``(B, H)``, default zeros) is ``h_{-1}``. Returns ``h`` of shape ``(T, B, H)``.
    Differentiable (first order) in all three; runs on the fastest available backend.
    """
    if f.dim() != 3 or f.shape != z.shape:
        raise ValueError(f"f and z must both be (T, B, H); got {tuple(f.shape)} and {tuple(z.shape)}")
    if h0 is None:
        h0 = f.new_zeros(f.shape[1:])
    elif h0.shape != f.shape[1:]:
        raise ValueError(f"h0 must be (B, H) = {tuple(f.shape[1:])}; got {tuple(h0.shape)}")
    if f.dtype in (torch.float16, torch.bfloat16):  # under autocast: recur in float32
        f, z, h0 = f.float(), z.float(), h0.float()
    backend = select_backend(f)
    announce(backend, f)
    return _ForgetMult.apply(f, z, h0, backend)
