"""PASE workers: labellers against numpy / scipy, target statistics, registry, pairs, a short training."""
import math

import numpy as np
import pytest
import scipy.fft
import scipy.signal
import torch

from cpc.criterion.workers import (WorkerBatchError, WorkerOutput, available_workers, build_workers,
                                   check_sampling, estimate_target_stats, total_worker_loss)
from cpc.criterion.workers.classifiers import other_speaker_rows
from cpc.criterion.workers.labellers import (FbankLabeller, LPSLabeller, MFCCLabeller, ProsodyLabeller,
                                             WaveformLabeller)
from cpc.criterion.workers.regressors import WaveformDecoder
from cpc.pase_encoder import PASEEncoder
from cpc import audio_features as af
from cpc.utils.errors import ConfigError

SR = 16000
HOP = 160


def tone(n_samples: int, freqs=(440.0,), amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(n_samples) / SR
    return sum(amplitude * np.sin(2 * np.pi * f * t) for f in freqs)


def as_audio(*signals: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(signals)[:, None, :])


def numpy_frames(signal: np.ndarray, frame: int) -> np.ndarray:
    """Independent framing: zero-pad (frame - hop) / 2 on the left, one frame per hop block."""
    left = (frame - HOP) // 2
    padded = np.pad(signal, (left, frame - HOP - left))
    return np.stack([padded[t * HOP:t * HOP + frame] for t in range(len(signal) // HOP)])


def numpy_spectra(signal: np.ndarray, n_fft: int, win: int, n_mels: int, n_mfcc: int):
    """LPS, log-mel fbank and MFCC with numpy / scipy: periodic Hann, HTK mel, orthonormal DCT."""
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2:(n_fft - win) // 2 + win] = scipy.signal.get_window("hann", win)
    power = np.abs(np.fft.rfft(numpy_frames(signal, n_fft) * window, n=n_fft)) ** 2
    mel, hz = (lambda f: 2595 * np.log10(1 + f / 700)), (lambda m: 700 * (10 ** (m / 2595) - 1))
    edges = hz(np.linspace(mel(0), mel(SR / 2), n_mels + 2))
    freqs = np.linspace(0, SR / 2, n_fft // 2 + 1)
    bank = np.stack([np.clip(np.minimum((freqs - lo) / (ce - lo), (hi - freqs) / (hi - ce)), 0, None)
                     for lo, ce, hi in zip(edges[:-2], edges[1:-1], edges[2:])])
    log_mel = np.log(power @ bank.T + 1e-6)
    mfcc = scipy.fft.dct(log_mel, type=2, norm="ortho", axis=1)[:, :n_mfcc]
    return np.log(power + 1e-6).T, log_mel.T, mfcc.T


def numpy_deltas(features: np.ndarray, width: int = 2) -> np.ndarray:
    """HTK regression formula, edge frames replicated, one frame at a time."""
    n_frames = features.shape[-1]
    out = np.zeros_like(features)
    for t in range(n_frames):
        for n in range(1, width + 1):
            out[:, t] += n * (features[:, min(t + n, n_frames - 1)] - features[:, max(t - n, 0)])
    return out / (2 * sum(n * n for n in range(1, width + 1)))


# --------------------------------------------------------------------------- labellers

@pytest.mark.parametrize("n_fft,win", [(512, 400), (4096, 3200)])
def test_spectral_labellers_match_numpy(n_fft, win):
    signal = tone(4000, (300.0, 1250.0))
    lps, fbank, mfcc = numpy_spectra(signal, n_fft, win, n_mels=40, n_mfcc=13)
    audio = as_audio(signal)
    np.testing.assert_allclose(LPSLabeller(n_fft=n_fft, win_length=win)(audio)[0].numpy(), lps, atol=1e-6)
    np.testing.assert_allclose(FbankLabeller(n_mels=40, n_fft=n_fft, win_length=win)(audio)[0].numpy(),
                               fbank, atol=1e-6)
    with_deltas = MFCCLabeller(n_mfcc=13, n_fft=n_fft, win_length=win, deltas=2)(audio)[0].numpy()
    first = numpy_deltas(mfcc)
    np.testing.assert_allclose(with_deltas, np.concatenate([mfcc, first, numpy_deltas(first)]), atol=1e-6)


def test_deltas_match_the_htk_formula():
    features = np.random.default_rng(0).normal(size=(2, 3, 9))
    ours = af.with_deltas(torch.from_numpy(features), order=1).numpy()
    for row, out in zip(features, ours):
        np.testing.assert_allclose(out, np.concatenate([row, numpy_deltas(row)]), atol=1e-12)


def test_prosody_of_a_sine_matches_its_f0_energy_and_zero_crossings():
    freq, win = 200.0, 320
    signal = tone(8000, (freq,), amplitude=0.5)
    log_f0, voiced, energy, zcr = ProsodyLabeller(win_length=win)(as_audio(signal))[0].numpy()
    frames = numpy_frames(signal, win)
    interior = slice(3, -3)  # frames whose analysis span is inside the signal
    np.testing.assert_allclose(log_f0[interior], math.log(freq), atol=2e-3)
    assert np.all(voiced[interior] == 1)
    np.testing.assert_allclose(energy, np.sqrt(np.mean(frames ** 2, axis=1)), rtol=1e-10)
    np.testing.assert_allclose(energy[interior], 0.5 / math.sqrt(2), rtol=0.02)
    np.testing.assert_allclose(zcr, np.mean(np.diff(frames >= 0, axis=1), axis=1), atol=1e-12)
    np.testing.assert_allclose(zcr[interior], 2 * freq / SR, atol=1.5 / win)


@pytest.mark.parametrize("freq", [95.0, 137.5, 251.0])
def test_f0_of_sines_across_the_range(freq):
    f0, peak = af.nccf_pitch(torch.from_numpy(tone(6400, (freq,))))
    np.testing.assert_allclose(f0[3:-3].numpy(), freq, rtol=1e-3)
    assert peak[3:-3].min() > 0.99


def test_unvoiced_frames_are_flagged_and_log_f0_interpolated():
    rng = np.random.default_rng(1)
    signal = np.concatenate([np.zeros(1600), tone(3200, (150.0,)), 0.2 * rng.normal(size=3200),
                             tone(3200, (250.0,)), np.zeros(1600)])
    log_f0, voiced, _, _ = ProsodyLabeller()(as_audio(signal))[0].numpy()
    assert voiced[:8].sum() == 0 and voiced[-8:].sum() == 0  # silence
    assert voiced[13:28].all() and voiced[53:68].all()
    assert voiced[45:50].mean() < 0.5  # white noise
    is_voiced = voiced.astype(bool)
    expected = np.interp(np.arange(len(log_f0)), np.flatnonzero(is_voiced), log_f0[is_voiced])
    np.testing.assert_allclose(log_f0, expected, atol=1e-6)
    assert log_f0[0] == pytest.approx(math.log(150.0), abs=0.01)
    assert log_f0[-1] == pytest.approx(math.log(250.0), abs=0.01)


def test_silence_gets_log_f0_min_and_no_voicing():
    prosody = ProsodyLabeller(f0_min=70.0)(torch.zeros(2, 1, 1600))
    assert torch.all(prosody[:, 1] == 0) and torch.allclose(prosody[:, 0], torch.tensor(math.log(70.0)))


def test_interpolation_is_numpy_interp():
    rng = np.random.default_rng(2)
    values, voiced = rng.normal(size=(4, 30)), rng.random((4, 30)) < 0.3
    voiced[0] = False
    ours = af.interpolate_unvoiced(torch.from_numpy(values), torch.from_numpy(voiced), fill=-1.0).numpy()
    assert np.all(ours[0] == -1.0)
    for row in range(1, 4):
        where = np.flatnonzero(voiced[row])
        np.testing.assert_allclose(ours[row], np.interp(np.arange(30), where, values[row, where]), atol=1e-12)


@pytest.mark.parametrize("n_samples", [3200, 3359])
def test_every_worker_target_is_frame_aligned(n_samples):
    workers = build_workers({"regressor": [n for n in available_workers("regressor") if n != "waveform"]}, 8)
    for worker in workers.values():
        assert worker.target(torch.randn(2, 1, n_samples)).shape == (2, worker.labeller.dim, n_samples // HOP)
    assert WaveformLabeller()(torch.randn(2, 1, n_samples)).shape == (2, 1, 160 * (n_samples // HOP))


@pytest.mark.parametrize("strides", [(4, 4, 10), (10, 8, 2)])
def test_waveform_decoder_gives_160_samples_per_frame(strides):
    decoder = WaveformDecoder(6, channels=(4, 4, 4), kernel_sizes=(30, 25, 12), strides=strides, hidden_size=4)
    assert decoder(torch.randn(2, 7, 6)).shape == (2, 1, 7 * 160)


# --------------------------------------------------------------------------- statistics

def test_target_stats_are_global_over_all_frames():
    workers = build_workers({"regressor": {"prosody": {}, "mfcc": {"n_mfcc": 5}}}, 8)
    # loud and quiet utterances of different lengths: per-utterance energies barely vary
    batches = [as_audio(tone(3200, (180.0,), 0.02)), as_audio(tone(4800, (220.0,), 0.9), tone(4800, (120.0,), 0.5)),
               as_audio(tone(1600, (300.0,), 0.05))]
    estimate_target_stats(workers, iter(batches), max_batches=10)
    for worker in workers.values():
        dim = worker.labeller.dim
        frames = np.concatenate([worker.labeller(b).double().numpy().transpose(0, 2, 1).reshape(-1, dim)
                                 for b in batches])
        np.testing.assert_allclose(worker.target_mean.numpy(), frames.mean(axis=0), rtol=1e-5, atol=1e-6)
        std = frames.std(axis=0)
        np.testing.assert_allclose(worker.target_std.numpy(), np.where(std < 1e-6, 1.0, std), rtol=1e-5, atol=1e-6)
        assert int(worker.stats_frames) == len(frames)
        assert {"target_mean", "target_std", "stats_frames"} <= set(worker.state_dict())
    energy = workers["prosody"]
    per_utterance = [energy.labeller(b)[:, 2].double().std(dim=1) for b in batches]  # PASE's estimate
    std_of_stds = float(torch.cat(per_utterance).std())
    assert std_of_stds < 0.2 * float(energy.target_std[2])
    voicing_is_constant = energy.target_std[1] == 1.0  # every frame voiced: std floored to 1
    assert bool(voicing_is_constant)


def test_stats_stop_after_max_batches_and_skip_the_waveform():
    workers = build_workers({"regressor": ["waveform", "lps"]}, 8)
    batches = (torch.randn(2, 1, 1600) * scale for scale in (1.0, 100.0))
    estimate_target_stats(workers, batches, max_batches=1)
    assert int(workers["lps"].stats_frames) == 20 and int(workers["waveform"].stats_frames) == 0
    assert torch.all(workers["waveform"].target_std == 1)


# --------------------------------------------------------------------------- registry and losses

def test_registry_rejects_unknown_names_listing_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown regressor 'pitch'.*fbank.*waveform"):
        build_workers({"regressor": {"pitch": {}}}, 8)
    with pytest.raises(ConfigError, match=r"unknown regressor 'lim' \(it is a classifier\)"):
        build_workers({"regressor": ["lim"]}, 8)
    with pytest.raises(ConfigError, match=r"unknown section\(s\) regresor"):
        build_workers({"regresor": ["lps"]}, 8)
    with pytest.raises(ConfigError, match=r"mfcc: unknown setting\(s\) n_cep; valid: .*n_mfcc"):
        build_workers({"regressor": {"mfcc": {"n_cep": 13}}}, 8)
    with pytest.raises(ConfigError, match=r"regressor.lps: need 160 <= win_length <= n_fft"):
        build_workers({"regressor": {"lps": {"win_length": 1024}}}, 8)
    with pytest.raises(ConfigError, match=r"regressor.waveform: loss must be one of"):
        build_workers({"regressor": {"waveform": {"loss": "huber"}}}, 8)


def test_settings_reach_labellers_heads_and_weights():
    workers = build_workers({"regressor": {"mfcc": {"n_mfcc": 13, "deltas": 2, "hidden_size": 7, "weight": 0.5}},
                             "classifier": ["lim", "gim", "spc"]}, 8)
    assert list(workers) == ["mfcc", "lim", "gim", "spc"]
    mfcc = workers["mfcc"]
    assert mfcc.labeller.dim == 39 and mfcc.head.mlp[0].out_features == 7 and mfcc.weight == 0.5
    assert build_workers({"regressor": ["lps_long"]}, 8)["lps_long"].labeller.dim == 2049
    outputs = [WorkerOutput(torch.tensor(2.0), "mfcc"), WorkerOutput(torch.tensor(3.0), "lim")]
    assert float(total_worker_loss(outputs, workers)) == pytest.approx(0.5 * 2 + 3)


def test_negatives_come_from_other_speakers():
    speaker = torch.tensor([3, 3, 5, 7, 5])
    for _ in range(20):
        others = other_speaker_rows(speaker)
        assert torch.all(speaker[others] != speaker)


def test_single_speaker_batches_are_refused_with_the_fix():
    workers = build_workers({"classifier": ["lim", "spc"]}, 4)
    with pytest.raises(WorkerBatchError, match="--samplingType uniform"):
        workers["lim"](torch.randn(3, 10, 4), torch.zeros(3, 1, 1600), torch.tensor([1, 1, 1]))
    with pytest.raises(ConfigError, match="lim.*--samplingType uniform"):
        check_sampling(workers, "samespeaker")
    check_sampling(workers, "uniform")
    with pytest.raises(ConfigError, match="at least 42 frames") as error:
        workers["spc"](torch.randn(2, 41, 4), torch.zeros(2, 1, 6560), torch.tensor([1, 2]))
    assert not isinstance(error.value, WorkerBatchError)  # a setting to fix, not a batch to skip


# --------------------------------------------------------------------------- short training

def glides(n_samples: int, start: float, stop: float, harmonics: tuple[float, ...]) -> np.ndarray:
    """A harmonic tone whose F0 rises from ``start`` to ``stop`` Hz: time runs one way."""
    f0 = np.linspace(start, stop, n_samples)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    return sum(weight * np.sin((k + 1) * phase) for k, weight in enumerate(harmonics)) * 0.3


def test_short_training_lowers_every_worker_loss():
    torch.manual_seed(0)
    n = 3200  # 20 frames, enough for SPC with 2 x (2 + 4)
    audio = as_audio(glides(n, 110, 170, (1.0, 0.5, 0.2)), glides(n, 120, 180, (1.0, 0.4, 0.3)),
                     glides(n, 210, 290, (0.3, 1.0, 0.1)), glides(n, 200, 300, (0.4, 1.0, 0.2))).float()
    speaker = torch.tensor([0, 0, 1, 1])
    config = {"regressor": {"waveform": {"channels": [16, 16, 16], "hidden_size": 16}, "lps": {},
                            "lps_long": {"n_fft": 1024, "win_length": 1024}, "fbank": {"deltas": 1},
                            "mfcc": {"deltas": 2}, "mfcc_long": {}, "prosody": {"deltas": 1}},
              "classifier": {"lim": {"hidden_size": 32}, "gim": {"hidden_size": 32},
                             "spc": {"hidden_size": 32, "context_frames": 2, "gap_frames": 4}}}
    encoder = PASEEncoder(16, qrnn=True, skip=True, sinc_filters=8, channels=(8, 8, 16, 16, 16, 16, 16))
    workers = build_workers(config, 16)
    estimate_target_stats(workers, [audio], max_batches=1)
    parameters = list(encoder.parameters()) + list(workers.parameters())
    optimizer = torch.optim.Adam(parameters, lr=3e-3)

    def losses(seed: int | None = None) -> dict[str, torch.Tensor]:
        if seed is not None:
            torch.manual_seed(seed)
        encoded = encoder(audio).transpose(1, 2)
        return {name: worker(encoded, audio, speaker).loss for name, worker in workers.items()}

    def averaged() -> dict[str, float]:
        with torch.no_grad():
            draws = [losses(seed) for seed in range(3)]
        return {name: sum(float(d[name]) for d in draws) / len(draws) for name in workers}

    before = averaged()
    for _ in range(40):
        step = losses()
        optimizer.zero_grad()
        total_worker_loss([WorkerOutput(loss, name) for name, loss in step.items()], workers).backward()
        optimizer.step()
    after = averaged()
    worse = {name: (before[name], after[name]) for name in workers if not after[name] < 0.9 * before[name]}
    assert not worse, worse
