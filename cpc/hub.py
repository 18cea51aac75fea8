"""Our checkpoints (and CPC_audio's) as an upstream model for downstream toolkits (s3prl, SUPERB).

    from cpc.hub import CPCUpstream
    upstream = CPCUpstream("runs/demo")            # a run directory or a checkpoint_<N>.pt
    out = upstream([wav_a, wav_b])                 # 1-D float tensors at 16 kHz
    out["hidden_states"]                           # [encoder output, AR layer 1, ..., AR layer N]
    upstream.get_downsample_rates("hidden_states") # 160 samples (10 ms) per frame

The interface is s3prl's: ``forward(list of unpadded wavs)`` returns ``{"hidden_states":
[B x T x D, ...], "last_hidden_state": B x T x D, "hidden_state_<i>": layer i}``, and
``get_downsample_rates(key)``; :func:`cpc_upstream` is the hub entry (``def name(ckpt, ...)``
returning the model).

Input: a non-empty list of 1-D float tensors (mono, 16 kHz, samples in [-1, 1]) of at least
``min_samples`` samples each (measured on the model: the fewest it makes one frame from, 159
for the CPC encoder); other float types (float64) are converted to the model's, and wavs are
moved to its device. Anything else (a 2-D tensor, integer PCM, a shorter wav, NaN) is a
``ValueError`` naming the wav's index.

Frames follow s3prl's count (``S3PRLUpstream``: ``(len - 1) // 160 + 1`` valid frames): wav
``b`` has ``ceil(len_b / 160)`` valid frames, the last one partly made of zero padding when
``len_b`` is not a multiple of 160, and frames ``t >= ceil(len_b / 160)`` are set to zero. The
batch is zero-padded to ``160 * ceil(longest / 160)`` samples, which every encoder turns into
exactly ``ceil(longest / 160)`` frames, and run at once. Causal context networks never see the
padding; the encoder's last one or two valid frames do (its receptive field is 465 samples),
exactly as for any padded s3prl upstream. Models where padding would reach every frame run each
wav alone (padded only to a multiple of 160): a time-reversed context network
(``cpc_mode reverse``) or an encoder normalised over time (``normMode instanceNorm``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from cpc.audio_check import find_non_finite
from cpc.feature_loader import FeatureModule, loadModel, min_input_samples
from cpc.model import CPCModel
from cpc.utils.errors import ConfigError


def model_layers(model: CPCModel, batch: torch.Tensor) -> list[torch.Tensor]:
    """``[encoder output, AR layer 1, ..., AR layer N]`` of ``(B, 1, S)`` audio, each ``(B, T, D)``."""
    encoded = model.gEncoder(batch).permute(0, 2, 1)
    return [encoded, *model.gAR(encoded, return_all_layers=True)]


def count_layers(model: CPCModel) -> int:
    """Number of outputs of :func:`model_layers` (1 + the context network's layers)."""
    device = next(iter(model.parameters()), torch.zeros(0)).device
    with torch.no_grad():
        return len(model_layers(model, torch.zeros(1, 1, 3200, device=device)))


class LayerFeatureModule(nn.Module):
    """Feature maker (for :func:`cpc.feature_loader.buildFeature`) returning one layer:
    0 is the encoder output, ``K >= 1`` the output of context-network layer ``K``."""

    def __init__(self, model: CPCModel, layer: int):
        super().__init__()
        n_layers = count_layers(model) - 1
        if not 0 <= layer <= n_layers:
            raise ValueError(f"layer {layer} does not exist: the context network has {n_layers} "
                             f"layer(s) (1..{n_layers}; 0 is the encoder)")
        self.model = model
        self.layer = layer

    def getDownsamplingFactor(self) -> int:
        """Waveform samples per feature frame."""
        return self.model.downsampling

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return model_layers(self.model, batch)[self.layer]


def layer_feature_maker(model: CPCModel, *, get_encoded: bool, level: int | None,
                        level_flag: str, encoded_flag: str) -> nn.Module:
    """Eval-mode feature maker of ``model``: context-network layer ``level`` (1-based), else
    the encoder output (``get_encoded``) or the context. Bad choices are a
    :class:`ConfigError` naming the command line's flags."""
    if get_encoded and level is not None:
        raise ConfigError(f"{encoded_flag} and {level_flag} exclude each other "
                          f"(the encoder is level 0)")
    if level is None:
        return FeatureModule(model, get_encoded=get_encoded).eval()
    if level < 1:
        raise ConfigError(f"{level_flag} counts context-network layers from 1, got {level}")
    try:
        return LayerFeatureModule(model, level).eval()
    except ValueError as exc:
        raise ConfigError(f"{level_flag}: {exc}") from None


class CPCUpstream(nn.Module):
    """s3prl-style upstream of a CPC checkpoint file or run directory (see the module docstring).

    Built in eval mode; move it with ``.to(device)`` and feed wavs on that device.
    """

    def __init__(self, ckpt: str, **_: object):
        super().__init__()
        self.model: CPCModel = loadModel([str(ckpt)])[0]
        self.padding_safe = not self.model.gAR.reverse and not any(
            isinstance(module, nn.InstanceNorm1d) for module in self.model.gEncoder.modules())
        self.min_samples = min_input_samples(self.model)
        self.eval()

    def get_downsample_rates(self, key: str) -> int:
        """Waveform samples per output frame, the same for every key (160)."""
        return self.model.downsampling

    def _checked(self, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The wavs as the model's float type on its device, after the checks of the module
        docstring."""
        if not isinstance(wavs, (list, tuple)) or not wavs:
            got = "an empty list" if isinstance(wavs, (list, tuple)) else f"a {type(wavs).__name__}"
            raise ValueError(f"CPCUpstream expects a list of 1-D waveform tensors, got {got}")
        reference = next(iter(self.model.parameters()), torch.zeros(0))
        checked = []
        for index, wav in enumerate(wavs):
            if not isinstance(wav, torch.Tensor):
                raise ValueError(f"wav {index} is a {type(wav).__name__}, not a torch.Tensor")
            if wav.dim() != 1:
                raise ValueError(f"wav {index} has shape {tuple(wav.shape)}: expected 1-D mono "
                                 f"waveforms (samples,); squeeze or average the channels")
            if not wav.is_floating_point():
                raise ValueError(f"wav {index} has dtype {wav.dtype}: expected float samples in "
                                 f"[-1, 1] (divide 16-bit PCM by 32768)")
            if len(wav) < self.min_samples:
                raise ValueError(f"wav {index} has {len(wav)} samples: the model needs at least "
                                 f"{self.min_samples} to make one frame")
            checked.append(wav.to(device=reference.device, dtype=reference.dtype))
        finite = torch.stack([torch.isfinite(wav).all() for wav in checked]).cpu()
        if not finite.all():
            index = int((~finite).nonzero()[0])
            found = find_non_finite(checked[index].float().cpu().numpy())
            raise ValueError(f"wav {index} holds {found.describe()}")
        return checked

    def forward(self, wavs: list[torch.Tensor]) -> dict[str, list[torch.Tensor] | torch.Tensor]:
        """Padded features of every layer (see the module docstring for input and padding)."""
        wavs = self._checked(wavs)
        factor = self.model.downsampling
        n_frames = torch.tensor([math.ceil(len(wav) / factor) for wav in wavs])
        if not self.padding_safe:
            alone = [model_layers(self.model, F.pad(wav, (0, -len(wav) % factor)).view(1, 1, -1))
                     for wav in wavs]
            layers = [pad_sequence([out[i][0] for out in alone], batch_first=True)
                      for i in range(len(alone[0]))]
        else:
            batch = pad_sequence(wavs, batch_first=True)
            batch = F.pad(batch, (0, int(n_frames.max()) * factor - batch.shape[1]))
            layers = model_layers(self.model, batch.unsqueeze(1))
        n_frames = n_frames.to(layers[0].device)
        padded = torch.arange(layers[0].shape[1], device=layers[0].device)[None, :] >= n_frames[:, None]
        hidden = [layer.masked_fill(padded[:, :, None], 0.0) for layer in layers]
        layer_keys = {f"hidden_state_{i}": layer for i, layer in enumerate(hidden)}
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1], **layer_keys}


def cpc_upstream(ckpt: str, *args: object, **kwargs: object) -> CPCUpstream:
    """s3prl hub entry: ``cpc_upstream(ckpt)`` with a checkpoint file or run directory."""
    return CPCUpstream(ckpt)
