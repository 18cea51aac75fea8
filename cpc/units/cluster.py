r"""k-means centroids of a model's frame features: CPC_audio's ``clustering_script.py``.

    python -m cpc.units.cluster CHECKPOINT OUT/clustering.pt --pathDB DB --recursionLevel 1 \
        --nClusters 50 --MAX_ITER 100 --level_gru 2 --save --load --batchSizeGPU 200 \
        --max_size_loaded 40000000 --n_process_loader 2
    python -m cpc.units.cluster - OUT/mfcc.pt --pathDB DB --features mfcc -k 50

The features of every file are computed once (the model runs on chunks of --sizeWindow
samples) into a cache file beside the output, removed at the end; k-means
(:mod:`cpc.units.kmeans`) then streams them, --batchSizeGPU x --sizeWindow / 160 frames per
mini-batch. Writes OUT/clustering.pt (CPC_audio's keys, see :mod:`cpc.units.clusters`),
OUT/clustering_args.json and OUT/training_logs.txt (one line per iteration); with --save also
checkpoint_last.pt and the last --save-last checkpoint_<iter>.pt, which --load resumes from.
CPC_audio's --DPMean, --DPLambda, --train_mode, --dimReduction, --centroidLimits,
--getDistanceEstimation and --nullspace are refused, each with what to use instead.
"""
from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/units/cluster.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.units.options import cluster_parser
from cpc.utils.cli import answer_help, exit_without_teardown
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(cluster_parser(__doc__), sys.argv[1:])

import argparse

import numpy as np
import torch

from cpc.data.listing import drop_bad_audio, findAllSeqs
from cpc.data.splits import filterSeqs
from cpc.units.clusters import args_path, clustering_content, load_clustering, save_clustering
from cpc.units.features import build_feature_maker, cache_features, model_weights
from cpc.units.kmeans import ArrayFrames, KMeansConfig, KMeansState, fit
from cpc.utils import checkpoint as ckpt
from cpc.utils.constants import FRAME_SIZE
from cpc.utils.errors import ConfigError, CPCError
from cpc.utils.files import exclusive_lock

DEBUG_FILES = 1000
LAST = "checkpoint_last.pt"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = cluster_parser(__doc__)
    args = parser.parse_args(argv)
    if args.nGroups != 1:
        parser.error(f"-g/--nGroups {args.nGroups} is not supported: grouped (product) k-means "
                     f"is not implemented; cluster the whole vectors with -g 1")
    for flag, value, low in (("-k/--nClusters", args.nClusters, 1), ("-n/--MAX_ITER", args.MAX_ITER, 1),
                             ("--batchSizeGPU", args.batchSizeGPU, 1),
                             ("--sizeWindow", args.sizeWindow, FRAME_SIZE),
                             ("--max_size_loaded", args.max_size_loaded, 1),
                             ("--n_process_loader", args.n_process_loader, 1),
                             ("--save-last", args.save_last, 1)):
        if value < low:
            parser.error(f"{flag} must be at least {low}, got {value}")
    if args.perIterSize == 0 or args.perIterSize < -1:
        parser.error(f"--perIterSize is -1 (all mini-batches) or positive, got {args.perIterSize}")
    if not args.pathOutput.endswith(".pt"):
        parser.error(f"pathOutput {args.pathOutput} must end in .pt (its flags go to <name>_args.json)")
    args.pathOutput = os.path.abspath(args.pathOutput)
    args.pathDB = os.path.abspath(args.pathDB)
    if args.pathCheckpoint != "-":
        args.pathCheckpoint = os.path.abspath(args.pathCheckpoint)
    return args


def list_files(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """``(stem, path)`` of the audio files to cluster (--seqList, --debug, --bad_audio
    applied)."""
    seqs, _ = findAllSeqs(args.pathDB, extension=args.extension, speaker_level=args.recursionLevel)
    if args.seqList is not None:
        seqs = filterSeqs(args.seqList, seqs)
    if args.debug:
        seqs = list(seqs)
        random.Random(args.seed).shuffle(seqs)
        seqs = seqs[:DEBUG_FILES]
    seqs, = drop_bad_audio(args.pathDB, (seqs,), args.bad_audio)
    return [(seq.stem, Path(args.pathDB) / seq.path) for seq in seqs]


def check_output(args: argparse.Namespace) -> None:
    """CPC_audio's rule: without --load, neither the output nor a checkpoint_last.pt may exist."""
    if args.load:
        return
    if os.path.exists(args.pathOutput):
        raise ConfigError(f"the output file {args.pathOutput} already exists: remove it, or "
                          f"give --load to resume")
    last = Path(args.pathOutput).parent / LAST
    if last.exists():
        raise ConfigError(f"{last} exists (an interrupted clustering): give --load to resume "
                          f"it, or remove it")


def resume_state(args: argparse.Namespace) -> KMeansState | None:
    """The state of checkpoint_last.pt beside the output with --load (ours or CPC_audio's)."""
    last = Path(args.pathOutput).parent / LAST
    if not (args.load and last.is_file()):
        return None
    saved = load_clustering(last, with_args=False)
    if "kmeans_state" in saved.content:
        return KMeansState.from_dict(saved.content["kmeans_state"])
    return KMeansState(saved.centroids, iteration=int(saved.content.get("iteration", 0)),
                       last_diff=float(saved.content.get("lastDiff", float("inf"))))


def make_saver(args: argparse.Namespace, extra: dict):
    """``on_iteration`` callback: a line in training_logs.txt and, with --save, checkpoints."""
    out_dir = Path(args.pathOutput).parent
    started = [time.perf_counter()]

    def on_iteration(state: KMeansState) -> None:
        now = time.perf_counter()
        line = (f"ITER {state.iteration} done in {now - started[0]:.2f} seconds. nItems: "
                f"{int(state.counts.sum())}. Inertia: {state.inertia[-1]:.6g}. "
                f"Difference with last checkpoint: {state.last_diff}")
        started[0] = now
        with open(out_dir / "training_logs.txt", "a") as handle:
            handle.write(line + "\n")
        if args.save:
            content = clustering_content(state.centroids, encoder_layer=args.encoder_layer,
                                         iteration=state.iteration, lastDiff=state.last_diff,
                                         kmeans_state=state.to_dict(), **extra)
            save_clustering(out_dir / LAST, content)
            save_clustering(out_dir / f"checkpoint_{state.iteration}.pt", content)
            (out_dir / f"checkpoint_{state.iteration - args.save_last}.pt").unlink(missing_ok=True)

    return on_iteration


def run(args: argparse.Namespace) -> KMeansState:
    """Compute the features, fit k-means, write the clustering checkpoint and its args."""
    from cpc.utils.devices import select_device

    check_output(args)
    device = select_device(args.device)
    files = list_files(args)
    torch.set_num_threads(min(args.n_process_loader, torch.get_num_threads()))
    maker = build_feature_maker(args.features, args.pathCheckpoint, encoder_layer=args.encoder_layer,
                                level_gru=args.level_gru, mfcc_dim=args.mfcc_dim, seed=args.seed)
    extra = {"feature_weights": model_weights(maker)} if args.features == "random_init" else {}
    out_dir = Path(args.pathOutput).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt.write_json(args_path(args.pathOutput), vars(args))
    cache_dir = Path(tempfile.mkdtemp(prefix=".features_", dir=out_dir))
    try:
        cache = cache_features(maker, files, cache_dir / "features.f32", chunk_samples=args.sizeWindow,
                               buffer_bytes=args.max_size_loaded, device=device)
        print(f"{len(files)} files, {cache.n_frames} frames of dimension {cache.dim}")
        if cache.n_frames < args.nClusters:
            raise ConfigError(f"-k/--nClusters {args.nClusters} is more than the {cache.n_frames} "
                              f"frames of the selected files of {args.pathDB}")
        frames = cache.frames()
        if cache.n_frames * cache.dim * 4 <= args.max_size_loaded:
            frames = np.array(frames)  # fits: read it once
        frames_per_window = args.sizeWindow // FRAME_SIZE
        config = KMeansConfig(args.nClusters, max_iter=args.MAX_ITER, tol=args.tol, seed=args.seed,
                              init=args.init, normalize=args.norm_vec_len,
                              batch_size=args.batchSizeGPU * frames_per_window,
                              block_frames=max(1, args.max_size_loaded // (4 * cache.dim)),
                              batches_per_iter=None if args.perIterSize < 0 else args.perIterSize,
                              device=device)
        start = time.perf_counter()
        state = fit(ArrayFrames(frames), config, resume_state(args), make_saver(args, extra))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    inertia = f"{state.inertia[-1]:.6g}" if state.inertia else "not measured (resumed at the end)"
    print(f"Ran clustering in {time.perf_counter() - start:.2f} seconds: {state.iteration} "
          f"iterations, last move {state.last_diff:.3g}, inertia {inertia}, "
          f"{state.reseeded} empty clusters reseeded")
    content = clustering_content(state.centroids, encoder_layer=args.encoder_layer,
                                 kmeans_state=state.to_dict(), **extra)
    save_clustering(args.pathOutput, content)
    ckpt.write_json(args_path(args.pathOutput), vars(args))
    return state


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:  # the outputs' directory: checkpoints, training_logs.txt and the feature cache too
        with exclusive_lock(Path(args.pathOutput).parent, "clustering"):
            run(args)
    except (CPCError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"clustering written to {args.pathOutput}")
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
