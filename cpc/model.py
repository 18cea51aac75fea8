"""CPC model: an encoder (waveform -> frames) and a context network (frames -> contexts).

Encoders, context networks ("ARs") and the encoder's norm layers are chosen by name from the
registries ``ENCODERS`` (``--encoder_type``), ``ARS`` (``--arMode``) and ``NORM_LAYERS``
(``--normMode``) of :mod:`cpc.registries`, which refer to the builders below, so that a new one
is one class (and builder) plus one line there. A builder receives its options
(:mod:`cpc.model_options`: the model's, or its own dataclass named at registration)::

    def build_qrnn_ar(options: ModelOptions, *, dim_input: int, frames: int) -> ContextNetwork:
        return QRNNAR(dim_input, options.hiddenGar, options.nLevelsGRU, reverse=options.reverse)

    ARS.add("QRNN", "cpc.model:build_qrnn_ar")  # in cpc/registries.py

``build_model`` reads CPC_audio's flag names from a complete Namespace (parsed, or
an old ``checkpoint_args.json`` completed by :func:`cpc.options.complete_with_defaults`), so a
CPC_audio run builds the same architecture, and state-dict key names match CPC_audio's for the
CPC encoder and the recurrent ARs.
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from .architecture import model_args
from .audio_features import mfcc
from .model_options import ModelOptions, TransformerContextOptions
from .qrnn import QRNN
from .registries import ARS, ENCODERS, NORM_LAYERS
from .transformers import CausalTransformer
from cpc.utils.constants import FRAME_SIZE, SAMPLE_RATE


# --------------------------------------------------------------------------- encoders

class ChannelNorm(nn.Module):
    """CPC_audio's "layerNorm": normalise each frame over its channels (dim 1 of ``(B, C, T)``).

    ``(x - mean_C) / sqrt(var_C + eps)`` with the unbiased variance (torch's default, as in
    CPC_audio), then a per-channel affine map with weight/bias of shape ``(1, C, 1)``.

    Computed by ``F.layer_norm`` over the channels, whose fused kernel takes half the time of
    the mean/var/rsqrt expression (forward+backward, 2 CPU cores; a CPC step 7% less). Layer
    norm divides by the biased deviation; with ``s = sqrt((C - 1) / C)``,
    ``(x - m) / sqrt(var_unbiased + eps) = s * (x - m) / sqrt(var_biased + s^2 eps)``, so the
    scale ``s`` joins the weight and ``eps`` becomes ``s^2 eps``: the same function.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(1, num_features, 1))
            self.bias = nn.Parameter(torch.zeros(1, num_features, 1))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        shrink = math.sqrt((channels - 1) / channels)
        if self.weight is None:
            weight, bias = x.new_full((channels,), shrink), None
        else:
            weight, bias = self.weight.view(-1) * shrink, self.bias.view(-1)
        normalised = F.layer_norm(x.transpose(1, 2), (channels,), weight, bias, self.eps * shrink**2)
        return normalised.transpose(1, 2)


def instance_norm(dim: int) -> nn.Module:
    """``--normMode instanceNorm``: per-channel normalisation over time, with an affine map."""
    return nn.InstanceNorm1d(dim, affine=True)


class CPCEncoder(nn.Module):
    """CPC_audio's strided convolutional encoder: ``(B, 1, S) -> (B, dim, (S + 1) // 160)``.

    Five Conv1d (kernels 10, 8, 4, 4, 4; strides 5, 4, 2, 2, 2; paddings 3, 2, 1, 1, 1), each
    followed by a norm layer and a ReLU. The norm layers are named ``batchNorm{i}`` whatever the
    norm mode, as in CPC_audio, so its checkpoints load. Note the frame count is
    ``(S + 1) // 160``: it equals ``S // 160`` except when ``S % 160 == 159``.
    """

    DOWNSAMPLING = FRAME_SIZE

    def __init__(self, dim: int = 256, norm_mode: str = "layerNorm"):
        super().__init__()
        norm = NORM_LAYERS.get(norm_mode)
        self.dim_output = dim
        self.conv0 = nn.Conv1d(1, dim, 10, stride=5, padding=3)
        self.batchNorm0 = norm(dim)
        self.conv1 = nn.Conv1d(dim, dim, 8, stride=4, padding=2)
        self.batchNorm1 = norm(dim)
        self.conv2 = nn.Conv1d(dim, dim, 4, stride=2, padding=1)
        self.batchNorm2 = norm(dim)
        self.conv3 = nn.Conv1d(dim, dim, 4, stride=2, padding=1)
        self.batchNorm3 = norm(dim)
        self.conv4 = nn.Conv1d(dim, dim, 4, stride=2, padding=1)
        self.batchNorm4 = norm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(5):
            x = F.relu(getattr(self, f"batchNorm{i}")(getattr(self, f"conv{i}")(x)))
        return x


class MFCCEncoder(nn.Module):
    """Fixed MFCC front end: ``(B, 1, S) -> (B, dim, S // 160)``, ``dim`` coefficients per frame.

    25 ms Hann window (400 samples) in a 512-point FFT, hop 160, "aligned" zero-padded framing
    (see :mod:`cpc.audio_features`): frame ``t`` is centred on samples
    ``[160 t, 160 (t + 1))``. ``max(128, dim)`` HTK mel filters as in CPC_audio, natural log.
    No parameters.
    """

    DOWNSAMPLING = FRAME_SIZE

    def __init__(self, dim: int, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        self.dim_output = dim
        self.sample_rate = sample_rate
        self.n_mels = max(128, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mfcc(x.squeeze(1), sample_rate=self.sample_rate, n_mfcc=self.dim_output,
                    n_mels=self.n_mels, n_fft=512, hop_length=FRAME_SIZE, win_length=400)


class LFBEncoder(nn.Module):
    """CPC_audio's learnable filterbank (``--encoder_type lfb``): ``(B, 1, S) -> (B, dim, T)``.

    A 400-sample Conv1d (stride 1, no padding) gives ``2 dim`` channels, read as ``dim``
    (real, imaginary) pairs ``(2k, 2k + 1)``; each pair's energy is smoothed by a 400-sample
    Hann window with hop 160 and padding 350, then compressed by ``log(1 + |x|)`` and, with
    ``normalize``, normalised per channel over time (instance norm without affine map). So
    ``T = (S - 99) // 160 + 1``, which is ``S // 160`` for ``S`` a multiple of 160 (and
    ``S >= 400``). State-dict keys ``conv.weight, conv.bias, han`` are CPC_audio's
    (``LFBEnconder``), so its checkpoints load strictly.
    """

    DOWNSAMPLING = FRAME_SIZE
    WIDTH = 400  # samples of the filters and of the smoothing window (25 ms)
    PADDING = 350  # of the smoothing, as CPC_audio

    def __init__(self, dim: int, normalize: bool = True):
        super().__init__()
        self.dim_output = dim
        self.normalize = normalize
        self.conv = nn.Conv1d(1, 2 * dim, self.WIDTH)
        self.register_buffer("han", torch.hann_window(self.WIDTH).view(1, 1, self.WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        filtered = self.conv(x)
        energy = filtered[:, 0::2] ** 2 + filtered[:, 1::2] ** 2
        batch, dim, length = energy.shape
        smoothed = F.conv1d(energy.reshape(batch * dim, 1, length), self.han, stride=FRAME_SIZE,
                            padding=self.PADDING).view(batch, dim, -1)
        compressed = torch.log1p(smoothed.abs())
        return F.instance_norm(compressed) if self.normalize else compressed


# --------------------------------------------------------------------------- context networks

class ContextNetwork(nn.Module):
    """Base of the ARs: ``(B, T, dim_input) -> (B, T, dim_output)``, optionally time-reversed.

    With ``reverse`` (CPC_audio's ``--cpc_mode reverse``) the sequence is flipped before and
    after the network, so outputs stay in the input's time order. Subclasses implement
    ``_run(x, all_layers)`` returning the list of layer outputs (only the last one unless
    ``all_layers``).
    """

    def __init__(self, dim_output: int, reverse: bool = False):
        super().__init__()
        self.dim_output = dim_output
        self.reverse = reverse

    def _run(self, x: torch.Tensor, all_layers: bool) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, return_all_layers: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Last layer's output, or every layer's output (list) when ``return_all_layers``."""
        if self.reverse:
            x = torch.flip(x, [1])
        outputs = self._run(x, return_all_layers)
        if self.reverse:
            outputs = [torch.flip(out, [1]) for out in outputs]
        return outputs if return_all_layers else outputs[-1]


RNN_TYPES: dict[str, type[nn.RNNBase]] = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}


class CPCAR(ContextNetwork):
    """Recurrent context network (LSTM / GRU / RNN); the torch module is ``baseNet`` as in CPC_audio.

    CPC_audio's ``keepHidden`` (state carried across batches for sequential sampling) is not
    kept: every batch starts from a zero state.
    """

    def __init__(self, dim_input: int, dim_output: int, n_layers: int = 1, mode: str = "LSTM",
                 reverse: bool = False):
        super().__init__(dim_output, reverse)
        self.mode = mode
        self.baseNet = RNN_TYPES[mode](dim_input, dim_output, num_layers=n_layers, batch_first=True)

    def _layer_parameters(self, layer: int) -> dict[str, torch.Tensor]:
        suffix = f"_l{layer}"
        return {name[:-len(suffix)] + "_l0": param for name, param in self.baseNet.named_parameters()
                if name.endswith(suffix)}

    def _run(self, x: torch.Tensor, all_layers: bool) -> list[torch.Tensor]:
        if not all_layers or self.baseNet.num_layers == 1:
            return [self.baseNet(x)[0]]
        # Run the stack one layer at a time with baseNet's own weights (a weightless template).
        outputs = []
        for layer in range(self.baseNet.num_layers):
            template = RNN_TYPES[self.mode](x.shape[-1], self.dim_output, batch_first=True, device="meta")
            x = functional_call(template, self._layer_parameters(layer), (x,))[0]
            outputs.append(x)
        return outputs


class TransformerAR(ContextNetwork):
    """Causal transformer context network; keeps the input dimension (CPC_audio forces hiddenGar
    = hiddenEncoder for this mode)."""

    def __init__(self, dim: int, n_layers: int = 1, abspos: bool = False, max_rel_distance: int = 128,
                 reverse: bool = False):
        super().__init__(dim, reverse)
        self.transformer = CausalTransformer(dim, n_layers, abspos=abspos, max_rel_distance=max_rel_distance)

    def _run(self, x: torch.Tensor, all_layers: bool) -> list[torch.Tensor]:
        return self.transformer(x, return_all_layers=True)


class NoAR(ContextNetwork):
    """Identity context network (``--arMode no_ar``): contexts are the encoded frames."""

    def _run(self, x: torch.Tensor, all_layers: bool) -> list[torch.Tensor]:
        return [x]


class QRNNAR(ContextNetwork):
    """QRNN context network (``--arMode QRNN``): ``nLevelsGRU`` layers of ``hiddenGar`` units.

    Window 2 (the gates see frames ``t-1`` and ``t``), output gate, no zoneout or dropout; every
    batch starts from a zero state, as for :class:`CPCAR`.
    """

    def __init__(self, dim_input: int, dim_output: int, n_layers: int = 1, reverse: bool = False):
        super().__init__(dim_output, reverse)
        self.baseNet = QRNN(dim_input, dim_output, num_layers=n_layers, window=2, batch_first=True)

    def _run(self, x: torch.Tensor, all_layers: bool) -> list[torch.Tensor]:
        outputs, _ = self.baseNet.forward_all_layers(x)
        return outputs if all_layers else outputs[-1:]


# --------------------------------------------------------------------------- builders (cpc/registries.py)
# Each receives its options (cpc.model_options): the model's, or its own where it declares them.

def build_cpc_encoder(options: ModelOptions) -> nn.Module:
    return CPCEncoder(options.hiddenEncoder, options.normMode)


def build_mfcc_encoder(options: ModelOptions) -> nn.Module:
    return MFCCEncoder(options.hiddenEncoder)


def build_lfb_encoder(options: ModelOptions) -> nn.Module:
    return LFBEncoder(options.hiddenEncoder)


def build_recurrent_ar(options: ModelOptions, *, dim_input: int, frames: int) -> ContextNetwork:
    """``--arMode LSTM``, ``GRU`` or ``RNN``."""
    return CPCAR(dim_input, options.hiddenGar, options.nLevelsGRU, mode=options.arMode,
                 reverse=options.reverse)


def build_transformer_ar(options: TransformerContextOptions, *, dim_input: int,
                         frames: int) -> ContextNetwork:
    return TransformerAR(dim_input, options.nLevelsGRU, abspos=options.abspos,
                         max_rel_distance=frames, reverse=options.reverse)


def build_no_ar(options: ModelOptions, *, dim_input: int, frames: int) -> ContextNetwork:
    return NoAR(dim_input)


def build_qrnn_ar(options: ModelOptions, *, dim_input: int, frames: int) -> ContextNetwork:
    return QRNNAR(dim_input, options.hiddenGar, options.nLevelsGRU, reverse=options.reverse)


# --------------------------------------------------------------------------- model

class CPCModel(nn.Module):
    """Encoder + context network: ``(B, 1, S) -> (cFeature (B, T, Dc), encodedData (B, T, De), label)``.

    ``model_args``: the options it was built from (:func:`cpc.architecture.model_args`), saved in
    each checkpoint so that the checkpoint alone rebuilds it (empty when built by hand).
    """

    def __init__(self, encoder: nn.Module, ar: ContextNetwork, model_args: dict | None = None):
        super().__init__()
        self.gEncoder = encoder
        self.gAR = ar
        self.model_args = dict(model_args or {})

    @property
    def downsampling(self) -> int:
        """Waveform samples per output frame."""
        return self.gEncoder.DOWNSAMPLING

    @property
    def dim_context(self) -> int:
        """Feature dimension of ``cFeature``."""
        return self.gAR.dim_output

    @property
    def dim_encoded(self) -> int:
        """Feature dimension of ``encodedData``."""
        return self.gEncoder.dim_output

    def forward(self, batchData: torch.Tensor, label=None):
        encodedData = self.gEncoder(batchData).permute(0, 2, 1)
        cFeature = self.gAR(encodedData)
        return cFeature, encodedData, label


def build_model(args: argparse.Namespace) -> CPCModel:
    """Build a :class:`CPCModel` from CPC_audio-named flags of a complete Namespace.

    Reads the options of :class:`~cpc.model_options.ModelOptions` (``encoder_type,
    hiddenEncoder, normMode, arMode, hiddenGar, nLevelsGRU, cpc_mode``), those of the chosen
    encoder and context network (e.g. ``pase_*``, ``abspos``) and ``sizeWindow``. Feature sizes are
    ``model.dim_context`` (== hiddenEncoder for ``transformer`` and ``no_ar``, as CPC_audio
    forces) and ``model.dim_encoded``.
    """
    encoder = ENCODERS.build(args.encoder_type, args)
    ar = ARS.build(args.arMode, args, dim_input=encoder.dim_output,
                   frames=args.sizeWindow // FRAME_SIZE)
    return CPCModel(encoder, ar, model_args(args))
