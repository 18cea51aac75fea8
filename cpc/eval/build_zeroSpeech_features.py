r"""Export a model's features, one file per utterance, for ZeroSpeech 2021 or ABX.

    python cpc/eval/build_zeroSpeech_features.py pathDB pathOut CHECKPOINT \
        --file_extension .wav --format txt [--gru_level K | --get_encoded]

Every audio file found recursively under pathDB gives ``pathOut/<stem>.<format>``: a flat
directory, which is ZeroSpeech 2021's layout when pathDB is one subset (e.g.
``phonetic/dev-clean`` -> ``submission/phonetic/dev-clean``). Two files with the same stem are an
error. Formats, all ``T x D`` at one frame per 10 ms:

* ``npy``: float32 array (the default; what ``ABX.py from_pre_computed`` reads first);
* ``npz``: CPC_audio's archive with ``features``, ``time`` (frame centres, s) and ``totTime``;
* ``txt``: one frame per line, space-separated floats (ZeroSpeech 2021 submissions);
* ``fea``: ZeroSpeech 2017's text format (CPC_audio's default): ``txt`` with each line starting
  with the frame's centre time in seconds.

CPC_audio's ``--extension``, ``--getEncoded`` and ``--maxSizeSeq`` are accepted as the options
they name; ``--train_mode`` runs the model in training mode; ``--addCriterion`` is refused: these
checkpoints hold no supervised phone classifier (probe one with ``linear_separability``).

Files are written under a temporary name and renamed, so an interrupted export never leaves
a partial file; rerunning skips the files already there (``--overwrite`` recomputes them: use it
after changing any flag). Nothing else is written to pathOut, which ZeroSpeech's validator
would reject.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/eval/build_zeroSpeech_features.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.eval.options import FORMATS, READABLE, features_parser
from cpc.utils.cli import answer_help, exit_without_teardown
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(features_parser(__doc__), sys.argv[1:])

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from cpc.audio_check import screen_by_stem
from cpc.utils.files import check_output_dir, exclusive_lock
from cpc.feature_loader import buildFeature, loadModel
from cpc.hub import layer_feature_maker
from cpc.utils.errors import CPCError, DataError
from cpc.utils.constants import FRAME_SECONDS
from cpc.utils.files import atomic_write


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def list_files_by_stem(root: str | Path, extension: str) -> dict[str, Path]:
    """``{stem: path}`` of every file under root (recursively) ending in extension, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} does not exist or is not a directory")
    found: dict[str, Path] = {}
    for directory, subdirs, names in os.walk(root, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]  # hidden: as the listing
        for name in names:
            if name.endswith(extension) and not name.startswith("."):
                path = Path(directory) / name
                stem = name[:-len(extension)] if extension else path.stem
                if stem in found:
                    raise DataError(f"two files under {root} have the stem {stem!r}: "
                                    f"{found[stem]} and {path}")
                found[stem] = path
    if not found:
        raise DataError(f"no file ending in {extension!r} under {root}")
    return dict(sorted(found.items()))


def frame_times(n_frames: int) -> np.ndarray:
    """Centre time (s) of each frame."""
    return (np.arange(n_frames) + 0.5) * FRAME_SECONDS


def write_features(path: str | Path, features: np.ndarray, fmt: str) -> None:
    """Write ``T x D`` features in one of :data:`FORMATS` (temp file + rename)."""
    features = np.asarray(features, dtype=np.float32)
    path = Path(path)
    if fmt == "npy":
        atomic_write(path, lambda handle: np.save(handle, features), durable=False)
    elif fmt == "npz":
        n_frames = features.shape[0]
        time = frame_times(n_frames)
        total = np.array([n_frames * FRAME_SECONDS], dtype=np.float32)
        atomic_write(path, lambda handle: np.savez(handle, features=features, time=time,
                                                    totTime=total), "wb")
    elif fmt == "txt":
        atomic_write(path, lambda handle: np.savetxt(handle, features, fmt="%.9g"), "w", durable=False)
    elif fmt == "fea":
        rows = np.column_stack([frame_times(features.shape[0]), features])
        atomic_write(path, lambda handle: np.savetxt(handle, rows, fmt="%.9g"), "w", durable=False)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")


def read_features(path: str | Path) -> np.ndarray:
    """``T x D`` float32 features of a ``.npy``, ``.npz`` (``features``), ``.txt`` or ``.pt`` file;
    NaN or infinite values are a :class:`DataError`."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            data = np.load(path)
        elif path.suffix == ".npz":
            with np.load(path) as archive:
                if "features" not in archive:
                    raise DataError(f"{path} holds no 'features' array (keys: {list(archive.keys())})")
                data = archive["features"]
        elif path.suffix == ".txt":
            data = np.loadtxt(path, ndmin=2, dtype=np.float32)
        elif path.suffix == ".fea":
            data = np.loadtxt(path, ndmin=2, dtype=np.float32)[:, 1:]  # without the times
        elif path.suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
            data = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        else:
            raise DataError(f"{path}: unknown feature format; expected one of {READABLE}")
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"cannot read features from {path}: {exc}") from None
    if data.ndim != 2:
        raise DataError(f"{path} holds an array of shape {tuple(data.shape)}; expected frames x dims")
    data = data.astype(np.float32, copy=False)
    bad_frames = int((~np.isfinite(data)).any(axis=1).sum())
    if bad_frames:
        raise DataError(f"{path} holds NaN or infinite values in {bad_frames} of {len(data)} "
                        f"frames: recompute these features")
    return data


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

def build_feature_maker(checkpoint: str, *, get_encoded: bool = False, gru_level: int | None = None,
                        device: torch.device | str = "cpu") -> nn.Module:
    """Eval-mode feature maker of a checkpoint: the context (default), the encoder output
    (``get_encoded``) or context-network layer ``gru_level`` (1-based)."""
    model = loadModel([checkpoint], device=device)[0]
    return layer_feature_maker(model, get_encoded=get_encoded, level=gru_level, level_flag="--gru_level",
                               encoded_flag="--get_encoded")


def export_features(feature_maker: nn.Module, files: dict[str, Path], out_dir: str | Path,
                    fmt: str = "npy", strict: bool = False, max_size_seq: int = 64000,
                    seq_norm: bool = False, overwrite: bool = False) -> tuple[int, int]:
    """Write the features of every file; returns (written, skipped because already there).
    ``out_dir`` is locked meanwhile: a second export into it stops instead of mixing models."""
    out_dir = Path(out_dir)
    written = skipped = 0
    with exclusive_lock(out_dir, "feature export"):
        for stem, path in tqdm(files.items(), desc="features", unit="file", file=sys.stderr):
            target = out_dir / f"{stem}.{fmt}"
            if target.exists() and not overwrite:
                skipped += 1
                continue
            features = buildFeature(feature_maker, path, strict=strict, maxSizeSeq=max_size_seq,
                                    seqNorm=seq_norm)
            write_features(target, features[0].numpy(), fmt)
            written += 1
    return written, skipped


def parse_args(argv: list[str]) -> argparse.Namespace:
    return features_parser(__doc__).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from cpc.utils.memory import keep_freed_memory
    from cpc.utils.devices import select_device

    args = parse_args(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    try:
        if args.addCriterion:
            raise CPCError("--addCriterion: these checkpoints hold no supervised phone "
                           "classifier; export the features and apply a phone probe trained "
                           "by cpc/eval/linear_separability.py (OUT/probes/phone/best_probe.pt)")
        check_output_dir(args.pathOut, "pathOut")
        device = select_device(args.device)
        files = screen_by_stem(list_files_by_stem(args.pathDB, args.file_extension),
                               args.bad_audio)
        feature_maker = build_feature_maker(args.checkpoint, get_encoded=args.get_encoded,
                                            gru_level=args.gru_level, device=device)
        feature_maker.train(args.train_mode)
        written, skipped = export_features(feature_maker, files, args.pathOut, args.format,
                                           strict=args.strict or args.seqNorm,
                                           max_size_seq=args.max_size_seq, seq_norm=args.seqNorm,
                                           overwrite=args.overwrite)
    except (CPCError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.pathOut}: {written} files written, {skipped} already there")
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
