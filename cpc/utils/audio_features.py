"""Pure-torch audio features: power / log-power spectra, mel filterbanks, log-mel fbanks and MFCCs.

Every function is pure (no state, no caching) and differentiable, works on any device and on
inputs of shape ``(..., S)`` (filter matrices are built in float64 on the CPU, then moved), and returns features as ``(..., n_features, T)`` (the layout of
``torch.stft``, the encoders' ``(B, C, T)``).

Framing convention ("aligned frames"), shared by every function here: a signal of ``S`` samples
gives exactly ``T = S // hop_length`` frames, frame ``t`` being centred on the middle of the hop
block ``[t * hop, (t + 1) * hop)``. This is obtained by zero-padding ``(n_fft - hop) / 2`` samples
on each side and running ``torch.stft(center=False)``. With ``hop_length=160`` the frames line up
one-to-one with the CPC encoder's 160x-downsampled frames, which is what frame-level labels
(phones, PASE targets) need.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def aligned_frame_padding(n_fft: int, hop_length: int) -> tuple[int, int]:
    """(left, right) zero padding giving ``S // hop_length`` frames centred on their hop blocks."""
    if n_fft < hop_length:
        raise ValueError(f"n_fft ({n_fft}) must be >= hop_length ({hop_length})")
    total = n_fft - hop_length
    return total // 2, total - total // 2


def power_spectrogram(waveform: torch.Tensor, n_fft: int = 400, hop_length: int = 160,
                      win_length: int | None = None) -> torch.Tensor:
    """|STFT|^2 with a periodic Hann window: ``(..., S) -> (..., n_fft // 2 + 1, S // hop_length)``.

    ``win_length`` (default ``n_fft``) may be shorter than ``n_fft``; the window is then centred
    in the FFT frame and zero-padded, as ``torch.stft`` does.
    """
    win_length = n_fft if win_length is None else win_length
    batch_shape, n_samples = waveform.shape[:-1], waveform.shape[-1]
    n_frames = n_samples // hop_length
    n_freqs = n_fft // 2 + 1
    if n_frames == 0:
        return waveform.new_zeros(*batch_shape, n_freqs, 0)
    left, right = aligned_frame_padding(n_fft, hop_length)
    flat = F.pad(waveform.reshape(-1, n_samples), (left, right))
    window = torch.hann_window(win_length, dtype=waveform.dtype, device=waveform.device)
    spec = torch.stft(flat, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                      window=window, center=False, return_complex=True)
    power = spec.real.square() + spec.imag.square()
    return power[..., :n_frames].reshape(*batch_shape, n_freqs, n_frames)


def hz_to_mel(freq: torch.Tensor) -> torch.Tensor:
    """HTK mel scale: 2595 * log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + freq / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters as a ``(n_mels, n_fft // 2 + 1)`` matrix (one filter per row).

    Filter ``m`` rises linearly (in Hz) from centre ``m - 1`` to its peak 1 at centre ``m`` and
    falls to 0 at centre ``m + 1``, the ``n_mels + 2`` centres being equally spaced in mel between
    ``f_min`` and ``f_max`` (default Nyquist). No area normalisation, so adjacent filters sum to 1
    between the first and the last peak. Filters narrower than an FFT bin may be all zero.
    """
    f_max = sample_rate / 2.0 if f_max is None else f_max
    bin_freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    mel_range = hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64))
    edges = mel_to_hz(torch.linspace(float(mel_range[0]), float(mel_range[1]), n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_freqs - lower) / (centre - lower)
    falling = (upper - bin_freqs) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(device=device, dtype=dtype)


def dct_matrix(n_out: int, n_in: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
    """First ``n_out`` rows of the orthonormal DCT-II of size ``n_in`` (scipy ``dct(norm="ortho")``)."""
    if n_out > n_in:
        raise ValueError(f"cannot take {n_out} DCT coefficients of a {n_in}-point input")
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    n = torch.arange(n_in, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    basis[0] *= 1.0 / math.sqrt(2.0)
    return basis.to(device=device, dtype=dtype)


def log_power_spectrum(waveform: torch.Tensor, n_fft: int = 400, hop_length: int = 160,
                       win_length: int | None = None, eps: float = 1e-6) -> torch.Tensor:
    """``log(|STFT|^2 + eps)``: ``(..., S) -> (..., n_fft // 2 + 1, S // hop_length)``."""
    return torch.log(power_spectrogram(waveform, n_fft, hop_length, win_length) + eps)


def log_mel_fbank(waveform: torch.Tensor, sample_rate: int = 16000, n_mels: int = 40,
                  n_fft: int = 400, hop_length: int = 160, win_length: int | None = None,
                  f_min: float = 0.0, f_max: float | None = None, eps: float = 1e-6) -> torch.Tensor:
    """``log(mel_filterbank @ power + eps)``: ``(..., S) -> (..., n_mels, S // hop_length)``."""
    power = power_spectrogram(waveform, n_fft, hop_length, win_length)
    mel = mel_filterbank(n_mels, n_fft, sample_rate, f_min, f_max,
                         dtype=power.dtype, device=power.device)
    return torch.log(torch.matmul(mel, power) + eps)


def mfcc(waveform: torch.Tensor, sample_rate: int = 16000, n_mfcc: int = 13, n_mels: int = 40,
         n_fft: int = 400, hop_length: int = 160, win_length: int | None = None,
         f_min: float = 0.0, f_max: float | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Orthonormal DCT-II of the log-mel fbank, first ``n_mfcc`` coefficients.

    ``(..., S) -> (..., n_mfcc, S // hop_length)``; natural log, no liftering, no energy term.
    """
    log_mel = log_mel_fbank(waveform, sample_rate, n_mels, n_fft, hop_length, win_length,
                            f_min, f_max, eps)
    dct = dct_matrix(n_mfcc, n_mels, dtype=log_mel.dtype, device=log_mel.device)
    return torch.matmul(dct, log_mel)
