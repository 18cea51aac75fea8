r"""Audio files to discrete units with a clustering checkpoint: CPC_audio's ``quantize_audio.py``.

    python -m cpc.units.quantize OUT/clustering.pt DB OUT/quantized --file_extension flac --nobatch

Writes OUT/quantized/quantized_outputs.txt (``quantized_outputs_split_I-N.txt`` with --split),
one line ``stem<TAB>u1,u2,...`` per audio file, one unit per 10 ms frame (ZeroSpeech 2021's
format), and ``_info_args.json``. The feature maker is rebuilt from the clustering's
``_args.json`` (checkpoint, --level_gru, --encoder_layer, --features). Each line is written
whole and flushed; --resume skips the stems already written and drops a last line that an
interrupted run left without its newline. CPC_audio's --nullspace is refused.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/units/quantize.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.units.options import quantize_parser
from cpc.utils.cli import answer_help, exit_without_teardown
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(quantize_parser(__doc__), sys.argv[1:])

import argparse

import numpy as np
import torch
from tqdm import tqdm

from cpc.audio_check import screen_by_stem
from cpc.data.splits import read_split_list, warn_missing_stems
from cpc.eval.build_zeroSpeech_features import list_files_by_stem
from cpc.feature_loader import buildFeature
from cpc.units.clusters import Clustering, load_clustering
from cpc.units.features import build_feature_maker
from cpc.units.kmeans import assign, normalise_rows
from cpc.utils import checkpoint as ckpt
from cpc.utils.errors import CheckpointError, ConfigError, CPCError, DataError
from cpc.utils.files import exclusive_lock

DEBUG_FILES = 20
NOBATCH_CHUNK = 64000  # CPC_audio's buildFeature default, used by --nobatch


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = quantize_parser(__doc__)
    args = parser.parse_args(argv)
    if args.split is not None:
        parts = args.split.split("-")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or \
                not 1 <= int(parts[0]) <= int(parts[1]):
            parser.error(f"--split must be I-N with 1 <= I <= N (e.g. 1-20), got {args.split!r}")
    if args.max_size_seq < 160:
        parser.error(f"--max_size_seq must be at least one 160-sample frame, got {args.max_size_seq}")
    if args.cpu:
        args.device = "cpu"
    return args


def output_name(split: str | None) -> str:
    """CPC_audio's output file name."""
    return "quantized_outputs.txt" if split is None else f"quantized_outputs_split_{split}.txt"


def split_part(stems: list[str], split: str) -> list[str]:
    """Part I of N (CPC_audio's cut: equal parts, the last one takes the remainder)."""
    index, count = (int(p) for p in split.split("-"))
    size = len(stems) // count
    return stems[size * (index - 1): len(stems) if index == count else size * index]


def written_stems(path: Path) -> set[str]:
    """Stems of the complete lines of an output file; a last line without its newline (an
    interrupted write) is cut off the file."""
    content = path.read_bytes()
    complete = content[:content.rfind(b"\n") + 1]
    if len(complete) < len(content):
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    return {line.split("\t", 1)[0] for line in complete.decode().splitlines() if line.strip()}


def units_of(features: torch.Tensor, centroids: torch.Tensor, normalize: bool) -> np.ndarray:
    """Nearest-centroid index of each frame of ``T x D`` features."""
    if features.shape[1] != centroids.shape[1]:
        raise ConfigError(f"features of dimension {features.shape[1]} but centroids of dimension "
                          f"{centroids.shape[1]}: the clustering was made with other features")
    features = features.to(centroids.device)
    if normalize:
        features, centroids = normalise_rows(features), normalise_rows(centroids)
    return assign(features, centroids)[0].cpu().numpy()


def format_line(stem: str, units: np.ndarray) -> str:
    return f"{stem}\t{','.join(str(int(u)) for u in units)}\n"


def feature_maker_of(clustering: Clustering, path: str) -> torch.nn.Module:
    """The clustering's feature maker, from its args (CPC_audio's relative-path rule)."""
    args = clustering.args
    source = args.get("features", "checkpoint")
    checkpoint = args.get("pathCheckpoint")
    if source != "mfcc":
        if not checkpoint:
            raise CheckpointError(f"the args of {path} name no pathCheckpoint")
        if not os.path.isabs(checkpoint):
            checkpoint = os.path.join(os.path.dirname(os.path.abspath(path)), checkpoint)
        if not os.path.exists(checkpoint):
            raise CheckpointError(f"CPC checkpoint {checkpoint} (pathCheckpoint of {path}) "
                                  f"does not exist")
    return build_feature_maker(source, checkpoint, encoder_layer=bool(args.get("encoder_layer")),
                               level_gru=args.get("level_gru"), mfcc_dim=args.get("mfcc_dim", 13),
                               seed=args.get("seed", 0), state_dict=clustering.content.get("feature_weights"))


def run(args: argparse.Namespace) -> int:
    """Quantize the selected files; returns the number of files written."""
    from cpc.utils.devices import select_device

    extension = args.file_extension if args.file_extension.startswith(".") else f".{args.file_extension}"
    files = list_files_by_stem(args.pathDB, extension)
    stems = list(files)
    if args.pathSeq:
        wanted = read_split_list(args.pathSeq)
        warn_missing_stems(wanted, set(stems), args.pathSeq)
        listed = set(wanted)
        stems = [s for s in stems if s in listed]
    if args.split:
        stems = split_part(stems, args.split)
    if args.debug:
        stems = stems[:DEBUG_FILES]
    out_dir = Path(args.pathOutputDir)
    output = out_dir / output_name(args.split)
    if output.exists():
        if not args.resume:
            raise ConfigError(f"output file {output} already exists: give --resume to continue it")
        done = written_stems(output)
        stems = [s for s in stems if s not in done]
        print(f"{output}: {len(done)} files already quantized, {len(stems)} left")
    if not stems and not output.exists():
        raise DataError(f"no file to quantize under {args.pathDB} (check --pathSeq / --split)")
    files = screen_by_stem({stem: files[stem] for stem in stems}, args.bad_audio)
    stems = list(files)
    clustering = load_clustering(args.pathClusteringCheckpoint)
    device = select_device(args.device)
    maker = feature_maker_of(clustering, args.pathClusteringCheckpoint).to(device)
    normalize = args.norm_vec_len or bool(clustering.args.get("norm_vec_len"))
    centroids = clustering.centroids.to(device)
    chunk = NOBATCH_CHUNK if args.nobatch else args.max_size_seq
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt.write_json(out_dir / "_info_args.json", vars(args))
    with open(output, "a") as handle:
        for stem in tqdm(stems, desc="quantize", unit="file", file=sys.stderr):
            features = buildFeature(maker, files[stem], strict=args.strict, maxSizeSeq=chunk)[0]
            handle.write(format_line(stem, units_of(features, centroids, normalize)))
            handle.flush()
    return len(stems)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:  # its own output file: the --split parts of one directory run side by side
        with exclusive_lock(args.pathOutputDir, "quantization", output=output_name(args.split)):
            written = run(args)
    except (CPCError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{written} files quantized into {Path(args.pathOutputDir) / output_name(args.split)}")
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
