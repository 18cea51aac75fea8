"""Labellers: the regression targets of the PASE workers, computed from the batch audio in torch.

A labeller is a stateless callable ``labeller(audio (B, 1, S)) -> (B, dim, T)`` that runs on the
audio's device (no data-loader work, no caching). Frame targets use a hop of 160 samples and
the aligned framing of :mod:`cpc.audio_features`, so ``T = S // 160``: exactly the frame
count of the PASE and CPC encoders on windows that are multiples of 160 samples. The waveform
labeller returns the first ``160 * (S // 160)`` samples.

Each frame labeller optionally appends ``deltas`` orders of HTK regression deltas (width 2), and
takes its analysis window ``win_length`` / FFT size ``n_fft`` as settings, which is how the
"_long" workers of PASE+ are made (see :mod:`.regressors`).

Labellers are registered by name in ``LABELLERS`` (``@LABELLERS.register("mfcc")``); a regressor
names its labeller there (``register_regressor("mfcc_long", labeller="mfcc", ...)``), as PASE's
recipe names a worker's labeller with ``{worker}_labeller``. A labeller class has an attribute
``dim`` and keyword settings with defaults (the worker's settings), and receives
``sample_rate`` if its ``__init__`` takes one.
"""
from __future__ import annotations

import torch

from cpc import audio_features as af
from cpc.registry import Registry
from cpc.utils.constants import FRAME_SIZE, SAMPLE_RATE

LABELLERS: Registry[type] = Registry("labeller")


def _check_spectral(n_fft: int, win_length: int, deltas: int) -> None:
    if not FRAME_SIZE <= win_length <= n_fft:
        raise ValueError(f"need {FRAME_SIZE} <= win_length <= n_fft; got win_length={win_length}, n_fft={n_fft}")
    if deltas not in (0, 1, 2):
        raise ValueError(f"deltas must be 0, 1 or 2; got {deltas}")


@LABELLERS.register("waveform")
class WaveformLabeller:
    """The waveform itself, cut to whole frames: ``(B, 1, S) -> (B, 1, 160 * (S // 160))``."""

    def __init__(self):
        self.dim = 1

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        return audio[..., :FRAME_SIZE * (audio.shape[-1] // FRAME_SIZE)]


@LABELLERS.register("lps")
class LPSLabeller:
    """Log power spectrum ``log(|STFT|^2 + 1e-6)``: ``n_fft // 2 + 1`` bins (+ deltas)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = 512, win_length: int = 400, deltas: int = 0):
        _check_spectral(n_fft, win_length, deltas)
        self.n_fft, self.win_length, self.deltas = n_fft, win_length, deltas
        self.dim = (n_fft // 2 + 1) * (deltas + 1)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        lps = af.log_power_spectrum(audio[:, 0], self.n_fft, FRAME_SIZE, self.win_length)
        return af.with_deltas(lps, self.deltas)


@LABELLERS.register("fbank")
class FbankLabeller:
    """Log mel filterbank energies (HTK mel, natural log): ``n_mels`` (+ deltas)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_mels: int = 40, n_fft: int = 512, win_length: int = 400,
                 deltas: int = 0):
        _check_spectral(n_fft, win_length, deltas)
        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.n_fft, self.win_length, self.deltas = n_fft, win_length, deltas
        self.dim = n_mels * (deltas + 1)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        fbank = af.log_mel_fbank(audio[:, 0], self.sample_rate, n_mels=self.n_mels, n_fft=self.n_fft,
                                 hop_length=FRAME_SIZE, win_length=self.win_length)
        return af.with_deltas(fbank, self.deltas)


@LABELLERS.register("mfcc")
class MFCCLabeller:
    """MFCCs (orthonormal DCT of the log mel fbank): ``n_mfcc`` (+ deltas)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_mfcc: int = 20, n_mels: int = 40, n_fft: int = 512,
                 win_length: int = 400, deltas: int = 0):
        _check_spectral(n_fft, win_length, deltas)
        if not 1 <= n_mfcc <= n_mels:
            raise ValueError(f"need 1 <= n_mfcc <= n_mels; got n_mfcc={n_mfcc}, n_mels={n_mels}")
        self.sample_rate, self.n_mfcc, self.n_mels = sample_rate, n_mfcc, n_mels
        self.n_fft, self.win_length, self.deltas = n_fft, win_length, deltas
        self.dim = n_mfcc * (deltas + 1)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        coefficients = af.mfcc(audio[:, 0], self.sample_rate, n_mfcc=self.n_mfcc, n_mels=self.n_mels,
                               n_fft=self.n_fft, hop_length=FRAME_SIZE, win_length=self.win_length)
        return af.with_deltas(coefficients, self.deltas)


@LABELLERS.register("prosody")
class ProsodyLabeller:
    """PASE's prosody: log F0 (interpolated over unvoiced frames), voicing flag, RMS energy and
    zero-crossing rate over ``win_length`` samples (see :func:`~cpc.audio_features.prosody_features`):
    4 values (+ deltas)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, win_length: int = 320, f0_min: float = 60.0,
                 f0_max: float = 300.0, voicing_threshold: float = 0.6, deltas: int = 0):
        _check_spectral(win_length, win_length, deltas)
        if not 0 < f0_min < f0_max <= sample_rate / 4:
            raise ValueError(f"need 0 < f0_min < f0_max <= sample_rate / 4; got {f0_min}, {f0_max}")
        self.sample_rate, self.win_length = sample_rate, win_length
        self.f0_min, self.f0_max, self.voicing_threshold = f0_min, f0_max, voicing_threshold
        self.deltas = deltas
        self.dim = 4 * (deltas + 1)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        prosody = af.prosody_features(audio[:, 0], self.sample_rate, hop_length=FRAME_SIZE,
                                      win_length=self.win_length, f0_min=self.f0_min, f0_max=self.f0_max,
                                      voicing_threshold=self.voicing_threshold)
        return af.with_deltas(prosody, self.deltas)
