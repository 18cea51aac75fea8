"""Regression workers: a head predicts a labeller's (z-normalised) target from the encoded frames.

One class, :class:`Regressor`, serves every regressor; a regressor is registered by one line
``register_regressor(name, labeller="...", ...)`` naming its labeller (of
:data:`~.labellers.LABELLERS`), loss and head. Losses
follow PASE: L1 for the waveform, MSE for the others.

- ``waveform``: a decoder of transposed convolutions (PASE+'s: channels 512, 256, 128; kernels
  30; strides 4, 4, 10) back to the 160 samples of each frame, then a 1x1 MLP to one channel;
  the target is the raw waveform (not normalised).
- ``lps``, ``fbank``, ``mfcc``, ``prosody``: an MLP head per frame (PASE's: one hidden layer of
  256 units); settings of the labeller (``n_mfcc``, ``deltas``, ``win_length``...) pass
  through.
- ``*_long``: the same targets over a 200 ms analysis window (3200 samples, FFT 4096), the
  long-context workers of the PASE+ paper (its released configs use 32 to 128 ms windows:
  set ``win_length`` / ``n_fft`` to get those).

Settings of every regressor: its labeller's, its head's, ``weight``, ``loss`` ("l1" / "mse")
and ``normalize`` (z-normalise the target with the statistics of :mod:`.normalization`).
"""
from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cpc.precision import float32_island
from cpc.utils.constants import FRAME_SIZE

from .base import Worker, WorkerOutput, mlp_head
from .labellers import LABELLERS
from .registry import WORKERS, WorkerSpec, keyword_settings

LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss, "mse": F.mse_loss}
LONG_WINDOW = {"win_length": 3200, "n_fft": 4096}  # 200 ms at 16 kHz


class Regressor(Worker):
    """``head(encoded (B, T, D)) -> (B, dim, time)`` regressed onto ``labeller(audio)``.

    With ``normalize`` the target is ``(labeller(audio) - target_mean) / target_std``, buffers
    filled by :func:`~.normalization.estimate_target_stats` (identity until then;
    ``stats_frames`` counts the frames they come from, 0 meaning not estimated).
    """

    kind = "regressor"

    def __init__(self, name: str, labeller, head: nn.Module, loss: str = "mse", normalize: bool = True,
                 weight: float = 1.0):
        super().__init__(name, weight)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}")
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be true or false; got {normalize!r}")
        self.labeller = labeller
        self.head = head
        self.loss_name = loss
        self.normalize = normalize
        self.register_buffer("target_mean", torch.zeros(labeller.dim))
        self.register_buffer("target_std", torch.ones(labeller.dim))
        self.register_buffer("stats_frames", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def target(self, audio: torch.Tensor) -> torch.Tensor:
        """The (normalised) target ``(B, dim, time)`` of ``audio (B, 1, S)``, in float32."""
        island, (audio,) = float32_island(audio)
        with island:
            target = self.labeller(audio)
            if self.normalize:
                target = (target - self.target_mean[:, None]) / self.target_std[:, None]
        return target

    def forward(self, encoded: torch.Tensor, audio: torch.Tensor, speaker: torch.Tensor) -> WorkerOutput:
        target = self.target(audio)
        prediction = self.head(encoded)
        if prediction.shape != target.shape:
            raise ValueError(f"worker {self.name}: prediction {tuple(prediction.shape)} vs target "
                             f"{tuple(target.shape)}: the encoder must give S // {FRAME_SIZE} frames for "
                             f"{audio.shape[-1]} samples")
        island, (prediction, target) = float32_island(prediction, target)
        with island:
            return WorkerOutput(LOSSES[self.loss_name](prediction, target), self.name)


class FrameHead(nn.Module):
    """MLP on each frame: ``(B, T, D) -> (B, dim, T)``."""

    def __init__(self, dim_in: int, dim_out: int, hidden_size: int = 256, hidden_layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.mlp = mlp_head(dim_in, dim_out, hidden_size=hidden_size, hidden_layers=hidden_layers,
                            dropout=dropout)

    def forward(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.mlp(encoded).transpose(1, 2)


def transposed_padding(kernel_size: int, stride: int) -> tuple[int, int]:
    """(padding, output_padding) for which ConvTranspose1d maps ``L`` steps to exactly ``L * stride``."""
    padding = math.ceil((kernel_size - stride) / 2)
    return padding, 2 * padding - (kernel_size - stride)


class WaveformDecoder(nn.Module):
    """Transposed convolutions (+ BatchNorm, PReLU) upsampling by ``prod(strides)`` = 160, then a
    per-sample MLP: ``(B, T, D) -> (B, 1, 160 T)``."""

    def __init__(self, dim_in: int, dim_out: int = 1, channels: tuple[int, ...] = (512, 256, 128),
                 kernel_sizes: tuple[int, ...] = (30, 30, 30), strides: tuple[int, ...] = (4, 4, 10),
                 hidden_size: int = 64):
        super().__init__()
        if not len(channels) == len(kernel_sizes) == len(strides):
            raise ValueError("channels, kernel_sizes and strides must have the same length")
        if math.prod(strides) != FRAME_SIZE:
            raise ValueError(f"the decoder strides must multiply to {FRAME_SIZE}; got {list(strides)}")
        if any(kernel < stride for kernel, stride in zip(kernel_sizes, strides)):
            raise ValueError(f"each kernel size must be at least its stride; got {list(kernel_sizes)}, "
                             f"{list(strides)}")
        layers: list[nn.Module] = []
        width = dim_in
        for n_out, kernel, stride in zip(channels, kernel_sizes, strides):
            padding, output_padding = transposed_padding(kernel, stride)
            layers += [nn.ConvTranspose1d(width, n_out, kernel, stride, padding, output_padding),
                       nn.BatchNorm1d(n_out), nn.PReLU(n_out)]
            width = n_out
        layers += [nn.Conv1d(width, hidden_size, 1), nn.PReLU(hidden_size), nn.Conv1d(hidden_size, dim_out, 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.layers(encoded.transpose(1, 2))


def register_regressor(name: str, labeller: str, loss: str = "mse", head: type[nn.Module] = FrameHead,
                       normalize: bool = True, **labeller_defaults) -> None:
    """Register a :class:`Regressor` of the labeller registered as ``labeller``, with ``head``;
    ``labeller_defaults`` override the labeller's defaults (e.g. a long window). Its settings are
    the labeller's, the head's, ``weight``, ``loss`` and ``normalize``."""
    labeller_class = LABELLERS.get(labeller)
    labeller_keys = keyword_settings(labeller_class.__init__, ("sample_rate",))
    head_keys = keyword_settings(head.__init__, ("dim_in", "dim_out"))
    takes_rate = "sample_rate" in inspect.signature(labeller_class.__init__).parameters

    def build(worker_name: str, settings: dict, dim_encoded: int, sample_rate: int) -> Regressor:
        labeller_settings = {**labeller_defaults, **{k: v for k, v in settings.items() if k in labeller_keys}}
        if takes_rate:
            labeller_settings["sample_rate"] = sample_rate
        target = labeller_class(**labeller_settings)
        head_module = head(dim_encoded, target.dim, **{k: v for k, v in settings.items() if k in head_keys})
        return Regressor(worker_name, target, head_module, loss=settings.get("loss", loss),
                         normalize=settings.get("normalize", normalize), weight=settings.get("weight", 1.0))

    WORKERS.add(name, WorkerSpec("regressor", build, labeller_keys + head_keys + ("weight", "loss", "normalize")))


register_regressor("waveform", labeller="waveform", loss="l1", head=WaveformDecoder, normalize=False)
register_regressor("lps", labeller="lps")
register_regressor("lps_long", labeller="lps", **LONG_WINDOW)
register_regressor("fbank", labeller="fbank")
register_regressor("fbank_long", labeller="fbank", **LONG_WINDOW)
register_regressor("mfcc", labeller="mfcc")
register_regressor("mfcc_long", labeller="mfcc", **LONG_WINDOW)
register_regressor("prosody", labeller="prosody")
register_regressor("prosody_long", labeller="prosody", win_length=LONG_WINDOW["win_length"])
