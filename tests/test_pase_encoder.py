"""PASE encoder: SincNet filters, exact S // 160 framing in every configuration, CPC on top."""
import argparse

import numpy as np
import pytest
import torch

from cpc.criterion.registry import build_criterion
from cpc.model import ENCODERS, build_model
from cpc.options import complete_with_defaults
from cpc.pase_encoder import DOWNSAMPLING, PASEEncoder, SincConv, same_frames_padding

SMALL = dict(sinc_filters=8, channels=(8, 8, 8, 16, 16, 16, 16))


def pase_args(**overrides) -> argparse.Namespace:
    values = dict(encoder_type="pase", hiddenEncoder=12, pase_qrnn=False, pase_skip=False, pase_qrnn_layers=1,
                  arMode="GRU", hiddenGar=10, nLevelsGRU=1, nPredicts=3, negativeSamplingExt=4,
                  rnnMode="linear", sizeWindow=3200)
    values.update(overrides)
    return complete_with_defaults(values)


def test_registered_and_downsamples_by_160():
    assert "pase" in ENCODERS and DOWNSAMPLING == 160 and PASEEncoder.DOWNSAMPLING == 160


@pytest.mark.parametrize("kernel,stride,extra_left", [(251, 1, False), (20, 10, False), (11, 2, False),
                                                     (11, 2, True), (11, 1, True)])
def test_block_padding_gives_length_over_stride(kernel, stride, extra_left):
    left, right = same_frames_padding(kernel, stride, extra_left)
    assert left - right == (1 if extra_left and (kernel - stride) % 2 else -((kernel - stride) % 2))
    conv = torch.nn.Conv1d(1, 1, kernel, stride=stride)
    for length in (stride * 7, stride * 7 + stride - 1, 300):
        out = conv(torch.nn.functional.pad(torch.zeros(1, 1, length), (left, right)))
        assert out.shape[-1] == length // stride


@pytest.mark.parametrize("qrnn,skip", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("n_samples", [1600, 3359])
def test_every_configuration_gives_s_over_160_frames(qrnn, skip, n_samples):
    encoder = PASEEncoder(12, qrnn=qrnn, qrnn_layers=2, skip=skip, **SMALL)
    out = encoder(torch.randn(2, 1, n_samples))
    assert out.shape == (2, 12, n_samples // 160) and encoder.dim_output == 12
    assert (encoder.qrnn is not None) == qrnn and (encoder.skips is not None) == skip


def test_receptive_field_of_frame_t_is_centred_on_its_160_samples():
    encoder = PASEEncoder(4, sinc_filters=4, channels=(4,) * 7).eval()  # eval: no batch-statistics coupling
    audio = torch.randn(1, 1, 160 * 40, requires_grad=True)
    for frame in (10, 25):
        audio.grad = None
        encoder(audio)[0, :, frame].sum().backward()
        support = torch.nonzero(audio.grad[0, 0]).flatten()
        centre = (support.min() + support.max()).item() / 2
        assert abs(centre - (160 * frame + 79.5)) <= 5 and support.max() - support.min() + 1 == 2370


def test_default_sizes_are_pases():
    encoder = PASEEncoder(100)
    assert encoder.sinc_block.sinc.out_channels == 64 and encoder.sinc_block.sinc.kernel_size == 251
    assert [b.conv.out_channels for b in encoder.blocks] == [64, 128, 128, 256, 256, 512, 512]
    assert [b.conv.kernel_size[0] for b in encoder.blocks] == [20, 11, 11, 11, 11, 11, 11]
    assert [b.conv.stride[0] for b in encoder.blocks] == [10, 2, 1, 2, 1, 2, 2]


def test_sinc_filters_start_mel_spaced_and_pass_their_band():
    sinc = SincConv(16, 251, 16000)
    low, high = (edge.detach().squeeze(1) for edge in sinc.band_edges())
    widths = (high - low).numpy()
    assert np.all(np.diff(low.numpy()) > 0) and np.all(np.diff(widths) > 0)  # mel: wider bands higher up
    assert float(high.max()) <= 8000
    filters = sinc.filters().detach().squeeze(1).numpy()
    np.testing.assert_allclose(filters, filters[:, ::-1], atol=1e-6)  # linear phase
    np.testing.assert_allclose(filters[:, 125], 1.0, rtol=1e-6)  # SincNet's scaling: centre tap 1
    freqs = np.fft.rfftfreq(4096, 1 / 16000)
    response = np.abs(np.fft.rfft(filters, 4096))
    for i in range(16):
        peak = freqs[response[i].argmax()]
        assert low[i] - 60 <= peak <= high[i] + 60
        outside = (freqs < low[i].item() - 300) | (freqs > high[i].item() + 300)
        assert response[i][outside].max() < 0.1 * response[i].max()  # a band-pass


def test_sinc_cutoffs_are_learned():
    sinc = SincConv(8, 101, 16000)
    sinc(torch.randn(2, 1, 800)).square().mean().backward()
    assert sinc.low_hz_.grad.abs().sum() > 0 and sinc.band_hz_.grad.abs().sum() > 0
    assert sorted(name for name, _ in sinc.named_parameters()) == ["band_hz_", "low_hz_"]


def test_skip_projections_receive_gradients():
    encoder = PASEEncoder(12, skip=True, **SMALL)
    encoder(torch.randn(2, 1, 1600)).square().sum().backward()
    assert all(skip.weight.grad.abs().sum() > 0 for skip in encoder.skips)


@pytest.mark.parametrize("qrnn,skip", [(False, False), (True, True)])
def test_cpc_criterion_trains_on_the_pase_encoder(qrnn, skip):
    torch.manual_seed(0)
    args = pase_args(pase_qrnn=qrnn, pase_skip=skip)
    model = build_model(args)
    criterion = build_criterion("cpc", args, dim_context=model.dim_context, dim_encoded=model.dim_encoded)
    context, encoded, _ = model(torch.randn(3, 1, 3200))
    assert encoded.shape == (3, 20, 12) and context.shape == (3, 20, 10)
    out = criterion(context, encoded)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.gEncoder.sinc_block.sinc.low_hz_.grad.abs().sum() > 0
