"""Mixed precision (``--precision``, ``--no_tf32``): the dtype of the forward, what stays in
float32, and the loss scaler of fp16.

* ``fp32``: every operation in float32 (on CUDA, matmuls and convolutions use TF32 tensor cores
  unless ``--no_tf32``: 10-bit mantissa products, float32 accumulation);
* ``bf16``: the forward runs under ``torch.autocast(dtype=torch.bfloat16)`` (matmuls,
  convolutions, recurrent layers in bfloat16); no loss scaling is needed;
* ``fp16``: the same in float16, with a dynamic loss scale (``torch.amp.GradScaler``) against
  gradient underflow; the scaler reads its overflow flag once per update (one host sync).

Weights, optimiser states and checkpoints stay float32 in every mode, so a run resumes under
another precision. The numerically delicate parts compute in float32 whatever the mode: the
InfoNCE scores and their log-softmax, the CPC-CTC cell scores and soft alignment (their
criteria call :func:`float32_island`), the QRNN recurrence, the PASE workers' losses.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The forward's autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def float32_island(*tensors: torch.Tensor) -> tuple[ContextManager, list[torch.Tensor]]:
    """Autocast switched off on the tensors' device, and the tensors in float32: the context
    and inputs of a computation that must not run in reduced precision."""
    device_type = tensors[0].device.type
    context = torch.autocast(device_type=device_type, enabled=False) \
        if torch.is_autocast_enabled(device_type) else contextlib.nullcontext()
    return context, [t.float() for t in tensors]


def loss_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16's dynamic loss scale; None in the other modes."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for float32 matmuls and cuDNN convolutions / RNNs (CUDA only)."""
    if hasattr(torch.backends.cudnn, "conv"):  # torch >= 2.9: per-backend precision
        mode = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
        torch.backends.cudnn.rnn.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
