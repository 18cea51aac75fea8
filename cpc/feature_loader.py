"""Load trained CPC models from checkpoints and turn audio files into feature sequences.

Checkpoint layout (ours and CPC_audio's): a directory holding ``checkpoint_<epoch>.pt``
(``torch.save`` of a dict whose ``"gEncoder"`` entry is the ``CPCModel`` state dict, beside
``"cpcCriterion"``, ``"optimizer"``, ... and, in ours, ``"model_args"``: the options that
rebuild the model), ``checkpoint_args.json`` (the training flags, CPC_audio names) and
optionally ``checkpoint_logs.json``. Checkpoints are always read with
``weights_only=True``: tensors and plain containers only, never pickled code.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from .data.audio import read_audio
from .model import CPCModel, build_model
from .options import complete_with_defaults
from .utils import checkpoint as ckpt
from .utils.errors import CheckpointError, DataError


def loadArgs(args_json: str | os.PathLike | dict) -> argparse.Namespace:
    """Namespace from a ``checkpoint_args.json`` path or an already-parsed dict, completed with
    the parser's defaults for the options it lacks (CPC_audio's files and our older ones).
    A file that is not a JSON object is a :class:`CheckpointError` naming it."""
    if isinstance(args_json, dict):
        return complete_with_defaults(args_json)
    try:
        saved = ckpt.read_json(args_json)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{args_json} is not valid JSON ({exc}): restore the "
                              f"{ckpt.ARGS_FILE} its training run wrote") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{args_json} holds a JSON {type(saved).__name__}, not the object "
                              f"of training flags that train.py writes")
    return complete_with_defaults(saved)


def _args_beside(checkpoint: str | os.PathLike) -> argparse.Namespace:
    """Training args of a checkpoint: the ``checkpoint_args.json`` of its directory."""
    directory = Path(checkpoint).parent
    if not (directory / ckpt.ARGS_FILE).is_file():
        raise CheckpointError(f"{directory} lacks {ckpt.ARGS_FILE}, which gives the architecture "
                              f"of {Path(checkpoint).name}: copy it from the training run's "
                              f"directory")
    return loadArgs(directory / ckpt.ARGS_FILE)


def getCheckpointData(pathDir: str | os.PathLike) -> tuple[str, dict, argparse.Namespace] | None:
    """Newest ``checkpoint_<N>.pt`` of a directory (largest N), its logs and its training args.

    Returns None when the directory does not exist or holds no checkpoint; logs are ``{}`` when
    ``checkpoint_logs.json`` is absent. A missing ``checkpoint_args.json`` is a
    :class:`CheckpointError`.
    """
    checkpoints = ckpt.list_checkpoints(pathDir)
    if not checkpoints:
        return None
    logs_path = os.path.join(pathDir, ckpt.LOGS_FILE)
    logs = ckpt.read_json(logs_path) if os.path.isfile(logs_path) else {}
    return str(checkpoints[-1][1].resolve()), logs, _args_beside(checkpoints[-1][1])


def resolve_checkpoint(path: str | os.PathLike) -> str:
    """Absolute path of a checkpoint file, or of the newest checkpoint of a run directory; a
    :class:`CheckpointError` naming ``path`` when it does not exist or holds no checkpoint."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if os.path.isdir(path):
        checkpoints = ckpt.list_checkpoints(path)
        if not checkpoints:
            others = sorted(p.name for p in Path(path).glob("*.pt"))
            hint = f" (it holds {', '.join(others[:3])}: give one of these files)" if others \
                else ""
            raise CheckpointError(f"{path} holds no checkpoint_<N>.pt{hint}")
        return str(checkpoints[-1][1].resolve())
    return os.path.abspath(path)


def _architecture_source(checkpoint: str, args: argparse.Namespace) -> list[str] | None:
    """CPC_audio semantics: a run started with ``--load`` from *another* directory (e.g. a
    fine-tuning) takes its architecture from that checkpoint; resumed runs (same directory)
    do not. Unlike CPC_audio, ``load`` paths that do not exist here (runs copied from another
    machine) are ignored and the run's own args are used."""
    load = args.load
    if not load or not all(os.path.exists(path) for path in load):
        return None
    if len(load) > 1 or os.path.dirname(os.path.abspath(load[0])) != os.path.dirname(checkpoint):
        return list(load)
    return None


class ConcatenatedModel(nn.Module):
    """Several CPC models run on the same audio, features concatenated along the last dimension."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        factors = {model.downsampling for model in models}
        if len(factors) != 1:
            raise ValueError(f"cannot concatenate models with downsampling factors {sorted(factors)}")
        self.models = nn.ModuleList(models)
        self.downsampling = factors.pop()
        self.dim_context = sum(model.dim_context for model in models)
        self.dim_encoded = sum(model.dim_encoded for model in models)

    def forward(self, batchData: torch.Tensor, label=None):
        outputs = [model(batchData, label) for model in self.models]
        length = min(c.shape[1] for c, _, _ in outputs)  # frame counts of different encoders may differ by one
        return (torch.cat([c[:, :length] for c, _, _ in outputs], dim=2),
                torch.cat([z[:, :length] for _, z, _ in outputs], dim=2), label)


def _load_one(path: str, loadStateDict: bool) -> CPCModel | ConcatenatedModel:
    """The model of one checkpoint: built from the ``model_args`` it holds, so that a file
    copied alone loads, else (older checkpoints, CPC_audio's) from the run's args beside it."""
    checkpoint = resolve_checkpoint(path)
    state = ckpt.load_checkpoint(checkpoint)
    if "model_args" in state:
        model = build_model(complete_with_defaults(state["model_args"]))
    else:
        args = _args_beside(checkpoint)
        source = _architecture_source(checkpoint, args)
        model = loadModel(source, loadStateDict=False)[0] if source else build_model(args)
    if loadStateDict:
        ckpt.load_model_weights(model, state)
    return model


def loadModel(pathCheckpoints: list[str], loadStateDict: bool = True,
              device: torch.device | str | None = None) -> tuple[nn.Module, int, int]:
    """Build (and fill) the model(s) of checkpoint files or run directories.

    Each path is a ``checkpoint_<N>.pt`` (its ``checkpoint_args.json`` beside it) or a directory
    (its newest checkpoint). Returns ``(model, hiddenGar, hiddenEncoder)``: a ``CPCModel`` for
    one path, a :class:`ConcatenatedModel` for several, with the context / encoded feature
    dimensions actually built (summed over concatenated models). The state dict is loaded
    strictly: an architecture mismatch is an error, not a silently half-loaded model.
    """
    if not pathCheckpoints:
        raise ValueError("loadModel needs at least one checkpoint path")
    models = [_load_one(path, loadStateDict) for path in pathCheckpoints]
    model = models[0] if len(models) == 1 else ConcatenatedModel(models)
    if device is not None:
        model = model.to(device)
    return model, model.dim_context, model.dim_encoded


class FeatureModule(nn.Module):
    """Feature extractor view of a CPC model: ``(B, 1, S) -> (B, T, D)``.

    Returns the contexts ``c`` (or the encoded frames ``z`` when ``get_encoded``), flattened to
    ``(B * T, D)`` when ``collapse``.
    """

    def __init__(self, featureMaker: nn.Module, *, get_encoded: bool, collapse: bool = False):
        super().__init__()
        self.featureMaker = featureMaker
        self.get_encoded = get_encoded
        self.collapse = collapse

    def getDownsamplingFactor(self) -> int:
        """Waveform samples per feature frame (160)."""
        return self.featureMaker.downsampling

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        context, encoded, _ = self.featureMaker(batch, None)
        features = encoded if self.get_encoded else context
        return features.reshape(-1, features.shape[-1]) if self.collapse else features


def seqNormalization(features: torch.Tensor) -> torch.Tensor:
    """Per-feature normalisation over time of ``(B, T, D)``: zero mean, unit (unbiased) variance."""
    mean = features.mean(dim=1, keepdim=True)
    var = features.var(dim=1, keepdim=True)
    return (features - mean) / torch.sqrt(var + 1e-08)


def _module_device(module: nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def min_input_samples(model: nn.Module) -> int:
    """Fewest waveform samples from which ``model`` (a ``CPCModel`` or
    :class:`ConcatenatedModel`) makes one frame, measured on silence in eval mode: 159 for the
    CPC encoder, 160 for MFCC and PASE, more where a norm over time needs several frames."""
    device = _module_device(model)
    was_training = model.training
    model.eval()

    def makes_a_frame(n_samples: int) -> bool:
        try:
            with torch.no_grad():
                return model(torch.zeros(1, 1, n_samples, device=device))[0].shape[1] > 0
        except (RuntimeError, ValueError):  # convolution longer than the input, norm of 1 frame
            return False

    try:
        high = model.downsampling
        while not makes_a_frame(high):
            if high > 64 * model.downsampling:
                raise ValueError(f"the model makes no frame from {high} samples")
            high *= 2
        low = 0  # makes_a_frame(low) is False, makes_a_frame(high) True
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if makes_a_frame(middle) else (middle, high)
        return high
    finally:
        model.train(was_training)


def buildFeature(featureMaker: FeatureModule, seqPath: str | os.PathLike, *, strict: bool = False,
                 maxSizeSeq: int = 64000, seqNorm: bool = False) -> torch.Tensor:
    """Features of one audio file, ``(1, T, D)`` on the CPU, computed under ``torch.no_grad``.

    As CPC_audio, the file is cut into consecutive chunks of ``maxSizeSeq`` samples, each run
    separately (with ``seqNorm``, each chunk's features are normalised separately) and the
    outputs concatenated. Non-strict: the last chunk is simply shorter. Strict: every run sees
    exactly ``maxSizeSeq`` samples; the remainder is covered by running the file's last
    ``maxSizeSeq`` samples and keeping their last ``remainder // 160`` frames (the whole file at
    once when it is shorter than ``maxSizeSeq``). A file shorter than one frame is a
    :class:`DataError`. The model's train/eval mode is left as is: call ``.eval()`` first.
    """
    sequence = torch.from_numpy(read_audio(seqPath))
    device = _module_device(featureMaker)
    n_samples = sequence.shape[0]
    frame = featureMaker.getDownsamplingFactor()
    if n_samples < frame:
        raise DataError(f"{seqPath} holds {n_samples} samples, fewer than one {frame}-sample "
                        f"frame: remove it from the data or pad it")

    def run(samples: torch.Tensor) -> torch.Tensor:
        features = featureMaker(samples.view(1, 1, -1).to(device))
        return (seqNormalization(features) if seqNorm else features).cpu()

    chunks = []
    with torch.no_grad():
        start = 0
        while start < n_samples and not (strict and start + maxSizeSeq > n_samples):
            if n_samples - start >= frame:  # a tail shorter than one frame holds no frame
                chunks.append(run(sequence[start:start + maxSizeSeq]))
            start += maxSizeSeq
        if strict and start < n_samples:
            n_frames = (n_samples - start) // frame
            if n_frames > 0:
                chunks.append(run(sequence[-maxSizeSeq:])[:, -n_frames:])
    return torch.cat(chunks, dim=1)
