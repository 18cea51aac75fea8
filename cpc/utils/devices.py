"""The ``--device`` choice shared by training and the eval scripts."""
from __future__ import annotations

import torch

from cpc.utils.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def select_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is a ConfigError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda (or --nGPU 1) but no CUDA device is available; use "
                          "--device cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
