"""PASE encoder (Pascual et al., 2019; PASE+, Ravanelli et al., 2020): ``(B, 1, S) -> (B, D, S // 160)``.

A SincNet front end (64 learnable band-pass filters of 251 taps, stride 1) and seven strided
convolution blocks (kernels 20, 11, 11, 11, 11, 11, 11; strides 10, 2, 1, 2, 1, 2, 2; channels
64, 128, 128, 256, 256, 512, 512), each followed by BatchNorm and PReLU, downsample by 160, like
the CPC encoder. Then, as configured:

- plain: a 1x1 projection to ``D`` channels;
- ``qrnn``: a QRNN over the conv output, before the projection (PASE+); it is unidirectional
  (PASE's is bidirectional), so that no encoded frame sees more of the future than the conv
  stack's receptive field and the CPC criterion stays meaningful on it;
- ``skip``: 1x1 projections (no bias) of the outputs of the SincNet block and of the first six
  conv blocks, average-pooled to the output frame rate and summed into the output (PASE+'s
  dense skips).

The output is normalised by a BatchNorm without affine parameters (PASE's ``norm_out``).

Framing: every block is zero-padded with ``kernel - stride`` samples, which maps ``L`` inputs to
exactly ``L // stride`` outputs; the floors compose, so ``S`` samples give exactly ``S // 160``
frames for any ``S``. The padding is split evenly, and where ``kernel - stride`` is odd the
extra sample goes to the side that keeps the receptive field of frame ``t`` (2370 samples)
centred on samples ``[160 t, 160 (t + 1))``: within 5 samples (:func:`centred_paddings`), so
frame ``t`` lines up with the frame-``t`` targets of the workers and with phone labels.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pase_encoder_options import PaseEncoderOptions
from .qrnn import QRNN
from .audio_features import hz_to_mel, mel_to_hz
from .utils.constants import SAMPLE_RATE

SINC_FILTERS = 64
SINC_KERNEL = 251
CONV_KERNELS = (20, 11, 11, 11, 11, 11, 11)
CONV_STRIDES = (10, 2, 1, 2, 1, 2, 2)
CONV_CHANNELS = (64, 128, 128, 256, 256, 512, 512)
DOWNSAMPLING = math.prod(CONV_STRIDES)  # FRAME_SIZE, as every encoder of cpc.model


def same_frames_padding(kernel_size: int, stride: int, extra_left: bool = False) -> tuple[int, int]:
    """(left, right) zero padding mapping ``L`` samples to exactly ``L // stride`` outputs: ``kernel -
    stride`` in all, the odd sample (if any) on the right, or on the left with ``extra_left``."""
    total = kernel_size - stride
    left = (total + 1) // 2 if extra_left else total // 2
    return left, total - left


def centred_paddings(kernels: tuple[int, ...], strides: tuple[int, ...]) -> list[tuple[int, int]]:
    """Paddings of a stack of strided blocks that keep each output's receptive field centred on its
    ``prod(strides)`` input samples as closely as integer paddings allow.

    An odd ``kernel - stride`` shifts the field by half an input step of that block, i.e. by
    ``prod(strides before it) / 2`` samples, right or left as the odd sample goes. Choosing the
    sides from the coarsest block down, each against the shift accumulated so far, leaves a
    shift of at most half the finest such step.
    """
    sides = [False] * len(kernels)
    shift = 0.0
    for i in reversed(range(len(kernels))):
        if (kernels[i] - strides[i]) % 2:
            step = math.prod(strides[:i]) / 2
            sides[i] = shift > 0  # odd sample on the left moves the field left
            shift += -step if sides[i] else step
    return [same_frames_padding(k, s, left) for k, s, left in zip(kernels, strides, sides)]


class SincConv(nn.Module):
    """SincNet's band-pass filter bank (Ravanelli & Bengio, 2018): ``(B, 1, S) -> (B, C, S)``.

    Filter ``i`` is the difference of two windowed sinc low-pass filters, a band-pass between
    ``low_i = min_low_hz + |low_hz_i|`` and ``high_i = clamp(low_i + min_band_hz + |band_hz_i|,
    min_low_hz, sample_rate / 2)``, Hamming-windowed and scaled, as SincNet, so that its centre
    tap is 1 (the BatchNorm that follows sets the output scale). Only ``low_hz_`` and
    ``band_hz_`` are learned; they start mel-spaced between 30 Hz and ``sample_rate / 2 -
    (min_low_hz + min_band_hz)``. Zero padding keeps ``S`` samples.
    """

    def __init__(self, out_channels: int = SINC_FILTERS, kernel_size: int = SINC_KERNEL,
                 sample_rate: int = SAMPLE_RATE, min_low_hz: float = 50.0, min_band_hz: float = 50.0):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"SincConv needs an odd kernel size (a symmetric filter); got {kernel_size}")
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.sample_rate = sample_rate
        self.min_low_hz = min_low_hz
        self.min_band_hz = min_band_hz
        top = sample_rate / 2 - (min_low_hz + min_band_hz)
        mels = torch.linspace(float(hz_to_mel(torch.tensor(30.0))), float(hz_to_mel(torch.tensor(top))),
                              out_channels + 1, dtype=torch.float64)
        edges = mel_to_hz(mels)
        self.low_hz_ = nn.Parameter(edges[:-1].float().unsqueeze(1))
        self.band_hz_ = nn.Parameter(edges.diff().float().unsqueeze(1))
        times = (torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2) / sample_rate
        self.register_buffer("times", times.float().unsqueeze(0), persistent=False)
        self.register_buffer("window", torch.hamming_window(kernel_size, periodic=False).unsqueeze(0),
                             persistent=False)

    def band_edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current (low, high) cut-off frequencies in Hz, each ``(C, 1)``."""
        low = self.min_low_hz + self.low_hz_.abs()
        high = torch.clamp(low + self.min_band_hz + self.band_hz_.abs(), self.min_low_hz,
                           self.sample_rate / 2)
        return low, high

    def filters(self) -> torch.Tensor:
        """The ``(C, 1, kernel_size)`` impulse responses."""
        low, high = self.band_edges()
        centre = self.times == 0
        safe_times = torch.where(centre, torch.ones_like(self.times), self.times)
        # sin(2 pi f t) / (pi t) is the ideal low-pass of cut-off f; its value at t = 0 is 2 f.
        band_pass = (torch.sin(2 * math.pi * high * safe_times)
                     - torch.sin(2 * math.pi * low * safe_times)) / (math.pi * safe_times)
        band_pass = torch.where(centre, 2 * (high - low), band_pass)
        return (band_pass / (2 * (high - low)) * self.window).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(F.pad(x, same_frames_padding(self.kernel_size, 1)), self.filters())


class ConvBlock(nn.Module):
    """Strided Conv1d (``L -> L // stride`` with ``padding``, see :func:`same_frames_padding`),
    BatchNorm, PReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: tuple[int, int]):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride)
        self.norm = nn.BatchNorm1d(out_channels)
        self.activation = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(F.pad(x, self.padding))))


class SincBlock(nn.Module):
    """SincConv followed by BatchNorm and PReLU (PASE's first block)."""

    def __init__(self, out_channels: int, kernel_size: int, sample_rate: int):
        super().__init__()
        self.sinc = SincConv(out_channels, kernel_size, sample_rate)
        self.norm = nn.BatchNorm1d(out_channels)
        self.activation = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.sinc(x)))


def pool_frames(x: torch.Tensor, factor: int, n_frames: int) -> torch.Tensor:
    """Average ``(B, C, L)`` over consecutive groups of ``factor`` steps: ``(B, C, n_frames)``."""
    if factor == 1:
        return x[..., :n_frames]
    return x[..., :n_frames * factor].unflatten(-1, (n_frames, factor)).mean(dim=-1)


class PASEEncoder(nn.Module):
    """SincNet + conv blocks (+ QRNN) (+ skips) -> 1x1 projection -> BatchNorm (see module doc).

    ``channels`` / ``sinc_filters`` default to PASE's; smaller values make test-sized models.
    """

    DOWNSAMPLING = DOWNSAMPLING

    def __init__(self, dim_output: int = 256, qrnn: bool = False, qrnn_layers: int = 1,
                 skip: bool = False, sinc_filters: int = SINC_FILTERS,
                 channels: tuple[int, ...] = CONV_CHANNELS, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        if len(channels) != len(CONV_KERNELS):
            raise ValueError(f"PASE has {len(CONV_KERNELS)} conv blocks; got {len(channels)} channel sizes")
        self.dim_output = dim_output
        self.sinc_block = SincBlock(sinc_filters, SINC_KERNEL, sample_rate)
        inputs = (sinc_filters, *channels[:-1])
        paddings = centred_paddings(CONV_KERNELS, CONV_STRIDES)
        self.blocks = nn.ModuleList(ConvBlock(*sizes) for sizes
                                    in zip(inputs, channels, CONV_KERNELS, CONV_STRIDES, paddings))
        self.qrnn = QRNN(channels[-1], channels[-1], num_layers=qrnn_layers, window=2,
                         batch_first=True) if qrnn else None
        self.projection = nn.Conv1d(channels[-1], dim_output, 1)
        if skip:
            # skip i taps the input of conv block i (the SincNet output for i = 0), whose frame
            # rate is 160 / (product of the strides before block i) times the output rate.
            self.skip_factors = [DOWNSAMPLING // math.prod(CONV_STRIDES[:i]) for i in range(len(channels))]
            self.skips = nn.ModuleList(nn.Conv1d(n_in, dim_output, 1, bias=False) for n_in in inputs)
        else:
            self.skips = None
        self.norm_out = nn.BatchNorm1d(dim_output, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_frames = x.shape[-1] // DOWNSAMPLING
        h = self.sinc_block(x)
        taps = []
        for block in self.blocks:
            taps.append(h)
            h = block(h)
        if self.qrnn is not None:
            h = self.qrnn(h.transpose(1, 2))[0].transpose(1, 2)
        y = self.projection(h)
        if self.skips is not None:
            # pooling before the (bias-free, 1x1) projection gives the same sum, far cheaper
            for skip, factor, tap in zip(self.skips, self.skip_factors, taps):
                y = y + skip(pool_frames(tap, factor, n_frames))
        return self.norm_out(y)


def build_pase_encoder(options: PaseEncoderOptions) -> PASEEncoder:
    """``--encoder_type pase`` from ``hiddenEncoder``, ``pase_qrnn``, ``pase_qrnn_layers``, ``pase_skip``."""
    return PASEEncoder(options.hiddenEncoder, qrnn=options.pase_qrnn,
                       qrnn_layers=options.pase_qrnn_layers, skip=options.pase_skip)
