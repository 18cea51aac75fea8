"""Pure-torch audio features against numpy / scipy references."""
import numpy as np
import pytest
import scipy.fft
import scipy.signal
import torch

from cpc import audio_features as af

SR = 16000


def sine(n_samples: int, freq: float, dtype=torch.float64) -> torch.Tensor:
    t = torch.arange(n_samples, dtype=dtype) / SR
    return 0.5 * torch.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("n_samples", [160, 161, 1599, 1600, 3333])
@pytest.mark.parametrize("n_fft,hop,win", [(400, 160, None), (512, 160, 400), (321, 160, None), (160, 160, None)])
def test_frame_count_is_samples_over_hop(n_samples, n_fft, hop, win):
    power = af.power_spectrogram(torch.randn(2, 3, n_samples), n_fft=n_fft, hop_length=hop, win_length=win)
    assert power.shape == (2, 3, n_fft // 2 + 1, n_samples // hop)


def test_short_input_gives_zero_frames():
    assert af.mfcc(torch.randn(100), n_mfcc=5).shape == (5, 0)


def test_frames_are_centred_on_their_hop_block():
    signal = torch.zeros(1600, dtype=torch.float64)
    signal[5 * 160 + 80] = 1.0  # an impulse in the middle of hop block 5
    energy = af.power_spectrogram(signal, n_fft=400, hop_length=160).sum(dim=0)
    assert int(energy.argmax()) == 5


def test_mel_filterbank_rows_are_triangles_that_tile():
    n_mels, n_fft = 40, 512
    mel = af.mel_filterbank(n_mels, n_fft, SR, dtype=torch.float64)
    assert mel.shape == (n_mels, n_fft // 2 + 1)
    assert mel.min() >= 0 and mel.max() <= 1
    peaks = mel.argmax(dim=1)
    assert torch.all(peaks[1:] > peaks[:-1])
    for row, peak in zip(mel, peaks):
        support = torch.nonzero(row).flatten()
        assert torch.all(support[1:] - support[:-1] == 1)  # one contiguous bump
        rising, falling = row[support[0]:peak + 1], row[peak:support[-1] + 1]
        assert torch.all(rising[1:] >= rising[:-1]) and torch.all(falling[1:] <= falling[:-1])
    between = mel[:, peaks[0] + 1:peaks[-1]].sum(dim=0)  # bins strictly between the first and last centres
    assert torch.allclose(between, torch.ones_like(between))


def test_dct_matrix_matches_scipy_ortho_dct():
    expected = scipy.fft.dct(np.eye(20), type=2, norm="ortho", axis=0)[:7]
    np.testing.assert_allclose(af.dct_matrix(7, 20, dtype=torch.float64).numpy(), expected, atol=1e-12)


def numpy_mfcc(signal: np.ndarray, n_mfcc: int, n_mels: int, n_fft: int, win: int, hop: int, eps: float) -> np.ndarray:
    """Independent reference: framing, periodic Hann, rfft, HTK mel triangles, log, scipy DCT."""
    left = (n_fft - hop) // 2
    padded = np.pad(signal, (left, n_fft - hop - left))
    n_frames = len(signal) // hop
    window = np.zeros(n_fft)
    offset = (n_fft - win) // 2
    window[offset:offset + win] = scipy.signal.get_window("hann", win)
    frames = np.stack([padded[t * hop:t * hop + n_fft] * window for t in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, n=n_fft)) ** 2  # (T, F)
    mel = lambda f: 2595 * np.log10(1 + f / 700)
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)
    edges = hz(np.linspace(mel(0), mel(SR / 2), n_mels + 2))
    freqs = np.linspace(0, SR / 2, n_fft // 2 + 1)
    bank = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, ce, hi = edges[m:m + 3]
        bank[m] = np.clip(np.minimum((freqs - lo) / (ce - lo), (hi - freqs) / (hi - ce)), 0, None)
    log_mel = np.log(power @ bank.T + eps)
    return scipy.fft.dct(log_mel, type=2, norm="ortho", axis=1)[:, :n_mfcc].T


@pytest.mark.parametrize("n_fft,win", [(400, 400), (512, 400)])
def test_mfcc_of_sine_matches_numpy_scipy_reference(n_fft, win):
    signal = sine(4000, 440.0)
    ours = af.mfcc(signal, SR, n_mfcc=13, n_mels=40, n_fft=n_fft, hop_length=160, win_length=win)
    expected = numpy_mfcc(signal.numpy(), 13, 40, n_fft, win, 160, 1e-6)
    assert ours.shape == (13, 25)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-7, atol=1e-7)


def test_float32_mfcc_close_to_float64():
    signal = sine(3200, 1000.0)
    ours32 = af.mfcc(signal.float(), n_mfcc=20, n_mels=64)
    ours64 = af.mfcc(signal, n_mfcc=20, n_mels=64)
    assert ours32.dtype == torch.float32
    assert torch.allclose(ours32.double(), ours64, atol=1e-3, rtol=1e-3)


def test_log_power_spectrum_peaks_at_the_sine_frequency():
    n_fft = 400
    spectrum = af.log_power_spectrum(sine(3200, 2000.0), n_fft=n_fft)
    assert spectrum.shape == (n_fft // 2 + 1, 20)
    expected_bin = round(2000.0 * n_fft / SR)
    assert torch.all(spectrum[:, 2:-2].argmax(dim=0) == expected_bin)


def test_log_mel_fbank_shape_and_energy_location():
    fbank = af.log_mel_fbank(sine(3200, 300.0).expand(2, -1), SR, n_mels=30)
    assert fbank.shape == (2, 30, 20)
    assert int(fbank[0, :, 10].argmax()) < 10  # a low tone lights up low mel bands


def test_features_are_differentiable():
    signal = sine(1600, 500.0).requires_grad_()
    af.mfcc(signal).sum().backward()
    assert signal.grad is not None and torch.isfinite(signal.grad).all()
