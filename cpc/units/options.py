"""Command lines of the unit tools: CPC_audio's arguments, plus ours. Torch-free (instant --help).

CPC_audio flags for features this code does not have are accepted by the parser only to
refuse them with one line naming what to use instead (:class:`Refused`).
"""
from __future__ import annotations

import argparse

from cpc.utils.cli import DocstringHelpFormatter, add_bad_audio_flag

FEATURE_SOURCES = ("checkpoint", "random_init", "mfcc")
DEVICES = ("auto", "cpu", "cuda")
INITS = ("k-means++", "random")
ONEHOT_FORMATS = ("txt", "npy")


class Refused(argparse.Action):
    """A CPC_audio flag this code refuses: using it is a usage error giving ``reason``."""

    def __init__(self, option_strings: list[str], dest: str, reason: str, nargs: int | str = 0,
                 **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, help=argparse.SUPPRESS, **kwargs)
        self.reason = reason

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is not supported: {self.reason}")


def _strict_bool(text: str) -> bool:
    """CPC_audio's ``--strict`` is ``type=bool`` (any word is True); here the word is read."""
    lowered = text.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description, formatter_class=DocstringHelpFormatter)


def _refuse(parser: argparse.ArgumentParser, flags: list[str], reason: str, nargs: int | str = 0
            ) -> None:
    parser.add_argument(*flags, action=Refused, reason=reason, nargs=nargs)


def cluster_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.units.cluster`` (CPC_audio's ``clustering_script.py``)."""
    parser = _parser(description)
    parser.add_argument("pathCheckpoint",
                        help="checkpoint_<N>.pt or a run directory ('-' with --features mfcc)")
    parser.add_argument("pathOutput", help="output clustering checkpoint (.pt)")
    parser.add_argument("--pathDB", required=True, help="directory searched for audio files")
    parser.add_argument("-k", "--nClusters", type=int, default=50, help="number of clusters")
    parser.add_argument("-n", "--MAX_ITER", type=int, default=100, help="most Lloyd iterations")
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="stop when no centroid moves more than this (CPC_audio's EPSILON)")
    parser.add_argument("--recursionLevel", type=int, default=2,
                        help="directory levels of the speaker in pathDB (listing only)")
    parser.add_argument("--extension", default=".flac", help="audio file extension")
    parser.add_argument("--seqList", default=None, help="file of stems to use; without it, every file")
    add_bad_audio_flag(parser)
    parser.add_argument("--sizeWindow", type=int, default=10240,
                        help="samples per model run: files are cut into chunks of this size")
    parser.add_argument("--debug", action="store_true", help="use 1000 randomly chosen files")
    parser.add_argument("--encoder_layer", action="store_true",
                        help="cluster the encoder output instead of the context")
    parser.add_argument("--level_gru", type=int, default=None,
                        help="cluster the output of context-network layer K (1-based)")
    parser.add_argument("--batchSizeGPU", type=int, default=50,
                        help="windows of --sizeWindow samples per k-means mini-batch")
    parser.add_argument("--perIterSize", type=int, default=-1,
                        help="mini-batches per Lloyd iteration, cycling through the data "
                             "(-1: all of them, exact Lloyd)")
    parser.add_argument("--save", action="store_true",
                        help="save checkpoint_last.pt and checkpoint_<iter>.pt beside the output "
                             "after each iteration")
    parser.add_argument("--load", action="store_true",
                        help="resume from checkpoint_last.pt beside the output if there is one")
    parser.add_argument("--save-last", type=int, default=5, dest="save_last",
                        help="checkpoint_<iter>.pt files kept with --save")
    parser.add_argument("--n_process_loader", type=int, default=8,
                        help="at most this many CPU threads (never more than torch would use)")
    parser.add_argument("--max_size_loaded", type=int, default=4000000000,
                        help="bytes of features held in memory at once; the rest stays in a "
                             "cache file beside the output")
    parser.add_argument("--norm_vec_len", action="store_true",
                        help="scale features and centroids to unit length (cosine k-means)")
    parser.add_argument("--features", choices=FEATURE_SOURCES, default="checkpoint",
                        help="what is clustered: the checkpoint's features, those of its "
                             "architecture untrained (seeded by --seed), or MFCCs")
    parser.add_argument("--mfcc_dim", type=int, default=13, help="coefficients of --features mfcc")
    parser.add_argument("--init", choices=INITS, default="k-means++",
                        help="initial centroids, picked from a sample of frames")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initialisation, of --debug and of random_init weights")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when available, else CPU")
    parser.add_argument("-g", "--nGroups", type=int, default=1,
                        help="groups of dimensions clustered separately; only 1 is implemented")
    _refuse(parser, ["--DPMean"], "DP-means is not implemented; set the number of clusters with -k")
    _refuse(parser, ["-l", "--DPLambda"], "DP-means is not implemented; set the number of "
            "clusters with -k", nargs=1)
    _refuse(parser, ["--train_mode"], "clustering never trains the CPC model; fine-tune it with "
            "cpc/train.py, then cluster its checkpoint")
    _refuse(parser, ["--dimReduction"], "dimensionality reduction is not implemented; pick a "
            "smaller layer with --level_gru or --encoder_layer", nargs=1)
    _refuse(parser, ["--centroidLimits"], "it goes with --dimReduction, which is not implemented",
            nargs=2)
    _refuse(parser, ["--getDistanceEstimation"], "not implemented; the inertia of each iteration "
            "is printed and written to training_logs.txt")
    _refuse(parser, ["--nullspace"], "our checkpoints hold no nullspace projection; cluster "
            "--level_gru or --encoder_layer features instead")
    return parser


def quantize_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.units.quantize`` (CPC_audio's ``scripts/quantize_audio.py``)."""
    parser = _parser(description)
    parser.add_argument("pathClusteringCheckpoint", help="clustering checkpoint (.pt) of "
                        "cpc.units.cluster, its _args.json beside it")
    parser.add_argument("pathDB", help="directory searched recursively for audio files")
    parser.add_argument("pathOutputDir", help="output directory")
    parser.add_argument("--pathSeq", default=None, help="file of stems to quantize; without it, every file")
    add_bad_audio_flag(parser)
    parser.add_argument("--split", default=None,
                        help="quantize part I of N only, written as I-N (1 <= I <= N)")
    parser.add_argument("--file_extension", default="wav", help="audio file extension")
    parser.add_argument("--max_size_seq", type=int, default=10240,
                        help="samples per model run (without --nobatch)")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="accepted for CPC_audio's command lines; chunks run one at a time")
    parser.add_argument("--strict", type=_strict_bool, default=True,
                        help="every model run sees exactly the chunk size (the file's tail is "
                             "covered by its last full chunk)")
    parser.add_argument("--debug", action="store_true", help="quantize the first 20 files only")
    parser.add_argument("--nobatch", action="store_true",
                        help="run the model on chunks of 64000 samples instead of --max_size_seq")
    parser.add_argument("--cpu", action="store_true", help="same as --device cpu")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when available, else CPU")
    parser.add_argument("--resume", action="store_true",
                        help="continue an existing output file, skipping the stems it holds")
    parser.add_argument("--norm_vec_len", action="store_true",
                        help="scale features to unit length (implied when the clustering used it)")
    _refuse(parser, ["--nullspace"], "our checkpoints hold no nullspace projection; cluster "
            "--level_gru or --encoder_layer features instead")
    return parser


def onehot_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.units.onehot`` (CPC_audio's ``scripts/build_1hot_features.py``)."""
    parser = _parser(description)
    parser.add_argument("pathQuantizedUnits", help="quantized_outputs.txt: 'stem<TAB>u1,u2,...' lines")
    parser.add_argument("pathOutputDir", help="output directory, one feature file per stem")
    parser.add_argument("--n_units", type=int, default=50,
                        help="number of units (one-hot size); --dict or --centroids set it")
    parser.add_argument("--dict", default=None,
                        help="vocabulary file, one unit name per line (first field), for "
                             "units that are not integers")
    parser.add_argument("--debug", action="store_true", help="convert the first 20 files only")
    parser.add_argument("--format", choices=ONEHOT_FORMATS, default="txt",
                        help="feature file format (txt: CPC_audio's; npy: much faster to read)")
    parser.add_argument("--centroids", default=None,
                        help="clustering checkpoint: write each unit's centroid instead of its "
                             "one-hot vector")
    return parser


def evaluate_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.units.evaluate``."""
    parser = _parser(description)
    parser.add_argument("quantized", nargs="+",
                        help="quantized_outputs.txt file(s) to compare, one table row each")
    parser.add_argument("--pathPhone", required=True,
                        help="frame phone labels, CPC_audio's converted_aligned_phones.txt")
    parser.add_argument("--phones", default=None,
                        help="phones.txt ('<id> <symbol>' lines) naming the ABX items' phones")
    parser.add_argument("--names", nargs="+", default=None, help="row names; without it, the file paths")
    parser.add_argument("--no_abx", action="store_true", help="skip the ABX columns")
    parser.add_argument("--merge_repeats", action="store_true",
                        help="bitrate of the sequences with repeated units merged")
    parser.add_argument("--out", default=None, help="also write the table as JSON to this file")
    parser.add_argument("--seed", type=int, default=0, help="seed of ABX's group subsampling")
    return parser
