"""Pure-torch audio features: power / log-power spectra, mel filterbanks, log-mel fbanks, MFCCs,
prosody (F0 and voicing, RMS energy, zero-crossing rate) and regression deltas.

Every function is pure (no state, no caching) and differentiable (except the prosody ones, which
make training targets), works on any device and on
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

from cpc.utils.constants import FRAME_SIZE, SAMPLE_RATE


def aligned_frame_padding(n_fft: int, hop_length: int) -> tuple[int, int]:
    """(left, right) zero padding giving ``S // hop_length`` frames centred on their hop blocks."""
    if n_fft < hop_length:
        raise ValueError(f"n_fft ({n_fft}) must be >= hop_length ({hop_length})")
    total = n_fft - hop_length
    return total // 2, total - total // 2


def power_spectrogram(waveform: torch.Tensor, n_fft: int = 400, hop_length: int = FRAME_SIZE,
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


def log_power_spectrum(waveform: torch.Tensor, n_fft: int = 400, hop_length: int = FRAME_SIZE,
                       win_length: int | None = None, eps: float = 1e-6) -> torch.Tensor:
    """``log(|STFT|^2 + eps)``: ``(..., S) -> (..., n_fft // 2 + 1, S // hop_length)``."""
    return torch.log(power_spectrogram(waveform, n_fft, hop_length, win_length) + eps)


def log_mel_fbank(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, *, n_mels: int = 40,
                  n_fft: int = 400, hop_length: int = FRAME_SIZE, win_length: int | None = None,
                  f_min: float = 0.0, f_max: float | None = None, eps: float = 1e-6) -> torch.Tensor:
    """``log(mel_filterbank @ power + eps)``: ``(..., S) -> (..., n_mels, S // hop_length)``."""
    power = power_spectrogram(waveform, n_fft, hop_length, win_length)
    mel = mel_filterbank(n_mels, n_fft, sample_rate, f_min=f_min, f_max=f_max,
                         dtype=power.dtype, device=power.device)
    return torch.log(torch.matmul(mel, power) + eps)


def mfcc(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, *, n_mfcc: int = 13, n_mels: int = 40,
         n_fft: int = 400, hop_length: int = FRAME_SIZE, win_length: int | None = None,
         f_min: float = 0.0, f_max: float | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Orthonormal DCT-II of the log-mel fbank, first ``n_mfcc`` coefficients.

    ``(..., S) -> (..., n_mfcc, S // hop_length)``; natural log, no liftering, no energy term.
    """
    log_mel = log_mel_fbank(waveform, sample_rate, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length,
                            win_length=win_length, f_min=f_min, f_max=f_max, eps=eps)
    dct = dct_matrix(n_mfcc, n_mels, dtype=log_mel.dtype, device=log_mel.device)
    return torch.matmul(dct, log_mel)


# --------------------------------------------------------------------------- frame-level prosody

def frame_signal(waveform: torch.Tensor, frame_length: int, hop_length: int = FRAME_SIZE) -> torch.Tensor:
    """Aligned frames ``(..., S) -> (..., S // hop_length, frame_length)`` (zero-padded edges).

    Frame ``t`` is centred on hop block ``[t * hop, (t + 1) * hop)``, as the spectra above.
    """
    batch_shape, n_samples = waveform.shape[:-1], waveform.shape[-1]
    n_frames = n_samples // hop_length
    if n_frames == 0:
        return waveform.new_zeros(*batch_shape, 0, frame_length)
    left, right = aligned_frame_padding(frame_length, hop_length)
    padded = F.pad(waveform.reshape(-1, n_samples), (left, right))
    frames = padded.unfold(-1, frame_length, hop_length)[:, :n_frames]
    return frames.reshape(*batch_shape, n_frames, frame_length)


def rms_energy(waveform: torch.Tensor, win_length: int = 320, hop_length: int = FRAME_SIZE) -> torch.Tensor:
    """Root mean square of each aligned frame: ``(..., S) -> (..., S // hop_length)``."""
    return frame_signal(waveform, win_length, hop_length).square().mean(dim=-1).sqrt()


def zero_crossing_rate(waveform: torch.Tensor, win_length: int = 320, hop_length: int = FRAME_SIZE
                       ) -> torch.Tensor:
    """Fraction of adjacent sample pairs of each frame whose signs differ (0 counts as positive).

    ``(..., S) -> (..., S // hop_length)``; a sine of frequency f gives about ``2 f / sample_rate``.
    """
    positive = frame_signal(waveform, win_length, hop_length) >= 0
    return (positive[..., 1:] != positive[..., :-1]).to(waveform.dtype).mean(dim=-1)


def nccf_pitch(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, *, hop_length: int = FRAME_SIZE,
               win_length: int = 320, f0_min: float = 60.0, f0_max: float = 300.0,
               lag_weight: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """F0 (Hz) and peak normalised cross-correlation of each aligned frame, ``(..., S // hop)`` each.

    The normalised cross-correlation (RAPT's NCCF) between the frame's first ``win_length``
    samples and the same span ``lag`` samples later is 1 at the period of a periodic signal,
    whatever the lag, and near 0 for noise. The lag maximising ``nccf * (1 - lag_weight * lag /
    lag_max)`` in ``[sr / f0_max, sr / f0_min]`` is taken (the small weight prefers the period
    over its multiples), refined by a parabola through its neighbours. Silent frames get a peak
    of 0. Non-differentiable use only (targets).
    """
    lag_min = max(2, int(math.floor(sample_rate / f0_max)))
    lag_max = int(math.ceil(sample_rate / f0_min))
    frames = frame_signal(waveform, win_length + lag_max + 1, hop_length)
    n_fft = 1 << (frames.shape[-1] - 1).bit_length()
    spectrum = torch.fft.rfft(frames, n_fft)
    anchor = torch.fft.rfft(frames[..., :win_length], n_fft)
    corr = torch.fft.irfft(anchor.conj() * spectrum, n_fft)[..., :lag_max + 2]
    energy = F.pad(frames.square().cumsum(dim=-1), (1, 0))
    lags = torch.arange(lag_max + 2, device=waveform.device)
    lagged_energy = energy[..., lags + win_length] - energy[..., lags]
    denominator = (energy[..., win_length:win_length + 1] * lagged_energy).clamp_min(0).sqrt()
    tiny = torch.finfo(frames.dtype).tiny ** 0.5
    nccf = torch.where(denominator > tiny, corr / denominator.clamp_min(tiny), torch.zeros_like(corr))

    searched = lags[lag_min:lag_max + 1]
    weighted = nccf[..., lag_min:lag_max + 1] * (1 - lag_weight * searched.to(nccf.dtype) / lag_max)
    best = weighted.argmax(dim=-1, keepdim=True) + lag_min
    before, peak, after = (nccf.gather(-1, best + shift).squeeze(-1) for shift in (-1, 0, 1))
    curvature = before - 2 * peak + after
    offset = torch.where(curvature < 0, 0.5 * (before - after) / curvature.clamp_max(-tiny),
                         torch.zeros_like(peak)).clamp(-0.5, 0.5)
    f0 = sample_rate / (best.squeeze(-1).to(nccf.dtype) + offset)
    return f0, peak


def interpolate_unvoiced(values: torch.Tensor, voiced: torch.Tensor, fill: float) -> torch.Tensor:
    """Replace unvoiced entries of ``values (..., T)`` by linear interpolation between voiced ones.

    Runs before the first / after the last voiced frame take its value (``numpy.interp``'s
    behaviour); rows without any voiced frame are set to ``fill``.
    """
    n_frames = values.shape[-1]
    index = torch.arange(n_frames, device=values.device).expand_as(values)
    previous = torch.where(voiced, index, -1).cummax(dim=-1).values
    from_end = torch.where(voiced.flip(-1), index, -1).cummax(dim=-1).values.flip(-1)
    following = torch.where(from_end >= 0, n_frames - 1 - from_end, -1)
    value_before = values.gather(-1, previous.clamp_min(0))
    value_after = values.gather(-1, following.clamp_min(0))
    span = (following - previous).clamp_min(1).to(values.dtype)
    between = value_before + (index - previous).to(values.dtype) / span * (value_after - value_before)
    out = torch.where(previous < 0, value_after, torch.where(following < 0, value_before, between))
    return torch.where((previous < 0) & (following < 0), torch.full_like(values, fill), out)


def prosody_features(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, *, hop_length: int = FRAME_SIZE,
                     win_length: int = 320, f0_min: float = 60.0, f0_max: float = 300.0,
                     voicing_threshold: float = 0.6, silence_rms: float = 1e-4) -> torch.Tensor:
    """PASE's prosody targets ``(..., S) -> (..., 4, S // hop_length)``: log F0, voicing, energy, ZCR.

    A frame is voiced when its NCCF peak reaches ``voicing_threshold`` and its RMS
    ``silence_rms``; log F0 is interpolated over unvoiced frames (``log(f0_min)`` when a row has
    none), as PASE does after SWIPE. Energy is the frame RMS, ZCR the zero-crossing rate, both
    over ``win_length`` samples.
    """
    f0, peak = nccf_pitch(waveform, sample_rate, hop_length=hop_length, win_length=win_length,
                          f0_min=f0_min, f0_max=f0_max)
    energy = rms_energy(waveform, win_length, hop_length)
    voiced = (peak >= voicing_threshold) & (energy >= silence_rms)
    log_f0 = interpolate_unvoiced(torch.log(f0), voiced, math.log(f0_min))
    zcr = zero_crossing_rate(waveform, win_length, hop_length)
    return torch.stack([log_f0, voiced.to(waveform.dtype), energy, zcr], dim=-2)


# --------------------------------------------------------------------------- dynamic features

def deltas(features: torch.Tensor, width: int = 2) -> torch.Tensor:
    """HTK regression deltas along time: ``d_t = sum_n n (c_{t+n} - c_{t-n}) / (2 sum_n n^2)``.

    ``(..., C, T) -> (..., C, T)``, ``n = 1..width``, edge frames replicated.
    """
    if features.shape[-1] == 0:
        return features.clone()
    batch_shape, n_frames = features.shape[:-1], features.shape[-1]
    padded = F.pad(features.reshape(1, -1, n_frames), (width, width), mode="replicate")[0]
    out = sum(n * (padded[:, width + n:width + n + n_frames] - padded[:, width - n:width - n + n_frames])
              for n in range(1, width + 1))
    return (out / (2 * sum(n * n for n in range(1, width + 1)))).reshape(*batch_shape, n_frames)


def with_deltas(features: torch.Tensor, order: int, width: int = 2) -> torch.Tensor:
    """``features (..., C, T)`` followed by its first ``order`` deltas: ``(..., (order + 1) C, T)``."""
    stack = [features]
    for _ in range(order):
        stack.append(deltas(stack[-1], width))
    return torch.cat(stack, dim=-2)
