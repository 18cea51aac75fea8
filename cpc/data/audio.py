"""Reading one audio file as the model sees it: 16 kHz mono float32, every sample finite."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from cpc.audio_check import find_non_finite, non_finite_message
from cpc.utils.constants import SAMPLE_RATE
from cpc.utils.errors import DataError


def read_audio(path: str | Path) -> np.ndarray:
    """Mono float32 samples in [-1, 1] of a 16 kHz file; stereo is averaged with a warning.
    A NaN or infinite sample is a DataError naming the file (tools check their files before
    reading them, so that ``--bad_audio skip`` can leave such files out)."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise DataError(f"cannot read audio file {path}: {exc}") from None
    if rate != SAMPLE_RATE:
        raise DataError(f"{path} is sampled at {rate} Hz; expected {SAMPLE_RATE} Hz (resample "
                        f"the corpus first)")
    if data.shape[0] == 0:
        raise DataError(f"{path} is empty (0 samples)")
    found = find_non_finite(data)
    if found is not None:
        raise DataError(non_finite_message(path, found))
    if data.shape[1] > 1:
        warnings.warn(f"{path} has {data.shape[1]} channels; averaging them to mono")
        return data.mean(axis=1)
    return data[:, 0]
