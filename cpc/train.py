"""Train a CPC model on a LibriSpeech-format corpus.

    python cpc/train.py --pathDB DB --pathTrain train.txt --pathVal val.txt \
        --pathCheckpoint OUT --file_extension .flac

Rerunning the same command continues from the newest checkpoint in OUT. Option names follow
facebookresearch/CPC_audio and its CPC-CTC fork, so existing command lines keep working.
This file defines and groups the options and wires the parts; the math lives in model.py and
criterion/, the data in dataset.py, the file formats in utils/checkpoint.py.
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/train.py`: import the package, not siblings
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np
import torch
from tqdm import tqdm

from cpc.criterion import build_criterion
from cpc.criterion.workers import build_workers, check_sampling, estimate_target_stats
from cpc.collapse_guard import ON_COLLAPSE, CollapseGuard, CollapseRule, TrainingCollapsed
from cpc.dataset import (SAMPLING_TYPES, AudioBatchData, CorpusData, build_capture_dataset,
                         build_datasets)
from cpc.eval.linear_separability import ProbeConfig, format_metrics, run_probes
from cpc.criterion.cpc import HEADS
from cpc.health import SATURATING_CONTEXTS, HealthMonitor, describe as describe_health
from cpc.model import ARS, ENCODERS, NORM_LAYERS, build_model
from cpc.objectives import CriterionObjective, TrainStep, WorkerObjective
from cpc.utils import checkpoint as ckpt
from cpc.utils.errors import CPCError, ConfigError
from cpc.stats import STATS, StatsCollector, parse_stats_spec
from cpc.utils.capture import CAPTURE_KINDS, requested_kinds, run_capture
from cpc.utils.config import load_config, pase_lr_factor
from cpc.utils.optim import Updater, build_optimizer
from cpc.utils.distributed import (DistInfo, any_rank, barrier, broadcast_int, init_distributed,
                                   shutdown_distributed, sum_over_ranks)
from cpc.utils.signals import StopRequest

# The recipe's stabilisers (CPC_audio has neither: --clip_grad_norm 0 --warmup_steps 0).
DEFAULT_CLIP_GRAD_NORM = 1.0
DEFAULT_WARMUP_STEPS = 200

# Option groups whose values define the network: a resumed run takes them from the saved args,
# and an explicit command-line value that contradicts the saved one is an error.
ARCHITECTURE_GROUPS = ("Architecture", "CPC criterion", "CPC-CTC")


# --------------------------------------------------------------------------------------------
# Options, one function per group
# --------------------------------------------------------------------------------------------

def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Dataset")
    group.add_argument("--pathDB", type=str, default=None,
                       help="Root of the corpus: <pathDB>/<speaker>/.../<file><ext>.")
    group.add_argument("--file_extension", type=str, default=".flac",
                       help="Extension of the audio files (default .flac).")
    group.add_argument("--pathTrain", type=str, default=None,
                       help="File listing the training stems, one per line (default: all).")
    group.add_argument("--pathVal", type=str, default=None,
                       help="File listing the validation stems (default: a seeded 1%% of train).")
    group.add_argument("--path_phone_data", type=str, default=None,
                       help="Phone labels, CPC_audio format: '<stem> id id ...' per 10 ms frame.")
    group.add_argument("--sizeWindow", type=int, default=20480,
                       help="Samples per training window (multiple of 160).")
    group.add_argument("--n_process_loader", type=int, default=8,
                       help="Threads reading audio files.")
    group.add_argument("--max_size_loaded", type=int, default=4_000_000_000,
                       help="Samples held per pack; the next pack loads in the background.")
    group.add_argument("--ignore_cache", action="store_true",
                       help="Re-read every file header instead of the cached listing.")


def add_architecture_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Architecture")
    group.add_argument("--encoder_type", type=str, default="cpc", choices=sorted(ENCODERS),
                       help="Encoder of the waveform (cpc: 5 strided convolutions).")
    group.add_argument("--hiddenEncoder", type=int, default=256,
                       help="Channels of the encoder (its output dimension).")
    group.add_argument("--normMode", type=str, default="layerNorm",
                       choices=sorted(NORM_LAYERS),
                       help="Normalisation after each encoder convolution.")
    group.add_argument("--arMode", type=str, default="LSTM", choices=sorted(ARS),
                       help="Context network.")
    group.add_argument("--hiddenGar", type=int, default=256,
                       help="Output dimension of the context network.")
    group.add_argument("--nLevelsGRU", type=int, default=1,
                       help="Layers of the context network.")
    group.add_argument("--abspos", action="store_true",
                       help="Absolute (sinusoidal) positions in the transformer context network.")
    group.add_argument("--cpc_mode", type=str, default=None, choices=[None, "reverse"],
                       help="reverse: predict the past instead of the future.")
    group.add_argument("--pase_qrnn", action="store_true",
                       help="PASE encoder: a QRNN over the convolutions (PASE's second setup).")
    group.add_argument("--pase_qrnn_layers", type=int, default=1,
                       help="PASE encoder: layers of that QRNN.")
    group.add_argument("--pase_skip", action="store_true",
                       help="PASE encoder: skip connections from the intermediate blocks (PASE+).")


def add_cpc_criterion_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("CPC criterion")
    group.add_argument("--nPredicts", type=int, default=12,
                       help="Future steps predicted from each context frame.")
    group.add_argument("--negativeSamplingExt", type=int, default=128,
                       help="Negatives per anchor, shared by all predicted steps.")
    group.add_argument("--rnnMode", type=str, default="transformer", choices=sorted(HEADS),
                       help="Prediction heads.")
    group.add_argument("--dropout", action="store_true",
                       help="Dropout on the contexts before the prediction heads.")
    group.add_argument("--limitNegsInBatch", type=int, default=0,
                       help="Draw an anchor's negatives only from its group of this many "
                            "consecutive batch items (0: the whole batch).")


def add_cpcctc_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "CPC-CTC", "Aligned CPC (Chorowski et al., Interspeech 2021): the --nPredicts ordered "
        "predictions of c_t are aligned monotonically to the next --CPCCTCNumMatched encoded "
        "frames, summing over all alignments.")
    group.add_argument("--CPCCTC", action="store_true",
                       help="Use the CPC-CTC criterion instead of CPC.")
    group.add_argument("--CPCCTCNumMatched", type=int, default=16,
                       help="Future frames M matched by the predictions (M >= nPredicts).")
    group.add_argument("--CPCCTCSkipBeg", type=int, default=0,
                       help="Zero-cost rows before the matched frames: leading predictions may "
                            "be skipped. With skips the loss can be negative.")
    group.add_argument("--CPCCTCSkipEnd", type=int, default=0,
                       help="Zero-cost rows after the matched frames: trailing predictions may "
                            "be skipped. With skips the loss can be negative.")
    group.add_argument("--CPCCTCSelfLoop", action="store_true",
                       help="Prepend z_t as an extra first prediction ('nothing new yet').")
    group.add_argument("--CPCCTCLearnBlank", action="store_true",
                       help="Prepend a learned blank vector as an extra first prediction.")
    group.add_argument("--CPCCTCNoNegsMatchWin", action="store_true",
                       help="Never draw negatives from frames t .. t+M of the anchor's window.")
    group.add_argument("--CPCCTCMasq", type=str, default="",
                       help="Rules forbidding (window frame, prediction) cells; see "
                            "cpc/criterion/cpc_ctc.py for the syntax.")
    group.add_argument("--CPCCTCLossTemp", type=float, default=1.0,
                       help="Divide the cell log-scores by T and multiply the loss by T.")
    group.add_argument("--CPCCTCNormalizeEncs", action="store_true",
                       help="Layer-normalise the encoded frames (over features) before scoring.")
    group.add_argument("--CPCCTCNormalizePreds", action="store_true",
                       help="Layer-normalise the predictions (over features) before scoring.")


def add_linsep_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Linear separability", "Speaker and phone probes trained on frozen features, "
        "periodically during training or once on a checkpoint.")
    group.add_argument("--supervised_classif_metric", action="store_true",
                       help="Run the probes every --linsep_classif_each_epochs epochs.")
    group.add_argument("--speaker_sep", action="store_true",
                       help="Speaker probes (last context frame, and mean-pooled).")
    group.add_argument("--only_classif_metric", action="store_true",
                       help="Run the probes once on the checkpoint of --pathCheckpoint (or "
                            "--load) and exit; nothing in the run directory is modified.")
    group.add_argument("--linsep_classif_each_epochs", type=int, default=10,
                       help="Probe after every this many CPC epochs (never before training).")
    group.add_argument("--linsep_logs_dir", type=str, default=None,
                       help="Probe logs: <dir>/<cpc_epoch>/<probe>/ (default during training: "
                            "<pathCheckpoint>/linsep_logs).")
    group.add_argument("--linsep_checkpoint_dir", type=str, default=None,
                       help="Best probe states: <dir>/<cpc_epoch>/<probe>/best_probe.pt.")
    group.add_argument("--linsep_task_logging_step", type=int, default=1,
                       help="Write a probe log every this many probe epochs.")
    group.add_argument("--linsep_n_epoch", type=int, default=10, help="Epochs of each probe.")
    group.add_argument("--linsepBatchSizeGPU", type=int, default=32,
                       help="Windows per probe batch.")
    group.add_argument("--linsep_lr", type=float, default=1e-3)
    group.add_argument("--linsep_beta1", type=float, default=0.9)
    group.add_argument("--linsep_beta2", type=float, default=0.999)
    group.add_argument("--linsep_epsilon", type=float, default=1e-8)
    group.add_argument("--linsep_net_layers", type=int, default=1,
                       help="1: linear probe; more: MLP whose hidden width is the class count.")
    group.add_argument("--phone_get_encoded", action="store_true",
                       help="Phone probe on the encoder output z instead of the contexts c.")
    group.add_argument("--CTCphones", action="store_true",
                       help="Phone probe trained with CTC on the window's phone sequence; "
                            "reports the phone error rate.")
    group.add_argument("--linsep_feature_budget_gb", type=float, default=4.0,
                       help="Memory for the frozen frame features of the phone probe; beyond "
                            "it a regular subset of the windows is probed.")


def add_capture_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Capture and stats", "Representations, predictions and alignments of a fixed capture "
        "dataset, saved every --captureEachEpochs epochs (or once with --onlyCapture) under "
        "<pathCaptureSave>/<epoch>/<what>/<what>_batch<first>-<last>.pt.")
    group.add_argument("--pathCaptureDS", type=str, default=None,
                       help="File listing the stems of the capture dataset.")
    group.add_argument("--captureDSfreq", type=float, default=None,
                       help="Capture only this percentage of those files (fixed subset).")
    group.add_argument("--captureDStotNr", type=int, default=None,
                       help="Capture only this many of those files (fixed subset).")
    group.add_argument("--captureEachEpochs", type=int, default=0,
                       help="Capture (and compute --captureSetStats) every this many epochs.")
    group.add_argument("--pathCaptureSave", type=str, default=None,
                       help="Root directory of the captures.")
    group.add_argument("--onlyCapture", action="store_true",
                       help="Capture once with the checkpoint of --pathCheckpoint and exit; the "
                            "saved args rebuild the model and the run directory is untouched.")
    for kind, (flag, shape) in CAPTURE_KINDS.items():
        group.add_argument(f"--{flag}", action="store_true", help=f"Capture {kind}: {shape}.")
    group.add_argument("--captureEverything", action="store_true",
                       help="Capture every kind that exists in this run.")
    group.add_argument("--captureSetStats", type=str, default="",
                       help="Stats of the capture dataset, 'name:arg,arg_name2:arg,...', e.g. "
                            "reprDiff:cosine,ctx_repr,0.05,plots (available: "
                            f"{', '.join(sorted(STATS))}).")


def add_pase_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "PASE", "A YAML file supplies defaults for any flag (the command line wins) and the PASE "
        "recipe: workers_config (regressors and classifiers on the encoder output, each with its "
        "own Adam), chunk_size, encoder_lr_start, worker_lr_start, lr_update_interval, "
        "decay_factor, ckpt_save_interval, num_ckpts_keep. See configs/pase.yaml.")
    group.add_argument("--config", type=str, default=None, help="YAML settings file.")
    group.add_argument("--pase_stats_batches", type=int, default=50,
                       help="Training batches used to estimate the regression targets' mean and "
                            "std before training.")


def add_training_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Training")
    group.add_argument("--nEpoch", type=int, default=200, help="Epochs to train in all.")
    group.add_argument("--batchSizeGPU", type=int, default=8,
                       help="Windows per batch (per process).")
    group.add_argument("--samplingType", type=str, default="samespeaker",
                       choices=list(SAMPLING_TYPES),
                       help="How windows are grouped into batches.")
    group.add_argument("--learningRate", type=float, default=2e-4)
    group.add_argument("--beta1", type=float, default=0.9)
    group.add_argument("--beta2", type=float, default=0.999)
    group.add_argument("--epsilon", type=float, default=1e-8)
    group.add_argument("--schedulerStep", type=int, default=-1,
                       help="Halve the learning rate every this many epochs (-1: never).")
    group.add_argument("--schedulerRamp", type=int, default=None,
                       help="Ramp the learning rate up linearly over this many epochs.")
    group.add_argument("--clip_grad_norm", type=float, default=DEFAULT_CLIP_GRAD_NORM,
                       help="Scale the gradients so that their global L2 norm is at most this "
                            "(0: no clipping, as CPC_audio).")
    group.add_argument("--warmup_steps", type=int, default=DEFAULT_WARMUP_STEPS,
                       help="Ramp the learning rate up linearly over the first this many "
                            "optimiser steps (0: none, as CPC_audio); on top of "
                            "--schedulerRamp / --schedulerStep.")
    group.add_argument("--random_seed", type=int, default=None,
                       help="Seed of every random generator (default: drawn and saved).")
    group.add_argument("--allow_nan_steps", type=int, default=0,
                       help="Skip up to this many training batches whose loss is not finite "
                            "(default: stop at the first, naming the step and the last good "
                            "checkpoint).")
    group.add_argument("--deterministic", action="store_true",
                       help="Deterministic kernels only: bit-exact reruns and resumption, "
                            "somewhat slower.")
    group.add_argument("--debug", action="store_true",
                       help="Quick check of a command line: at most 1000 training and 100 "
                            "validation files.")


def add_health_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Training health", "Every --logging_step steps and at every epoch end: cosine of random "
        "pairs of encoded / context frames, dead encoder units, saturated context units, "
        "gradient norm per part and the positive-minus-negative score margin, into "
        "checkpoint_logs.json and TensorBoard (health/...). A collapse (encoded frames of "
        "different windows nearly parallel and the loss back at chance, on --collapse_patience "
        "consecutive checks) is acted on per --on_collapse.")
    group.add_argument("--on_collapse", type=str, default="rollback", choices=ON_COLLAPSE,
                       help="rollback: restore the last healthy state kept in memory, multiply "
                            "the learning rate by --rollback_lr_factor, draw a new data order "
                            "and go on; stop: checkpoint and end the run; warn: print and go "
                            "on.")
    group.add_argument("--collapse_cosine", type=float, default=CollapseRule.cosine,
                       help="Mean cosine of encoded frames of different windows from which a "
                            "check counts as collapsed (with the loss at chance).")
    group.add_argument("--collapse_patience", type=int, default=CollapseRule.patience,
                       help="Consecutive collapsed checks that declare a collapse.")
    group.add_argument("--rollback_lr_factor", type=float, default=0.5,
                       help="Learning-rate multiplier applied at each rollback.")
    group.add_argument("--max_rollbacks", type=int, default=5,
                       help="Rollbacks allowed in a run; a further collapse stops it.")


def add_save_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Save")
    group.add_argument("--pathCheckpoint", type=str, default=None,
                       help="Run directory: checkpoints, args, logs and TensorBoard files.")
    group.add_argument("--save_step", type=int, default=5,
                       help="Write a checkpoint every this many epochs (and after the last).")
    group.add_argument("--keep_checkpoints", type=int, default=0,
                       help="Keep only the newest this many checkpoints (0: keep all).")
    group.add_argument("--logging_step", type=int, default=100,
                       help="Write running training scalars to TensorBoard and check the "
                            "training's health every this many steps (0: health at epoch "
                            "ends only).")


def add_load_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Load")
    group.add_argument("--load", type=str, nargs="*", default=None,
                       help="Checkpoint(s) whose model weights initialise a new run.")
    group.add_argument("--loadCriterion", action="store_true",
                       help="With --load, also initialise the criterion from the checkpoint.")
    group.add_argument("--restart", action="store_true",
                       help="Start from epoch 0 even if --pathCheckpoint holds checkpoints "
                            "(they are deleted).")


def add_device_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Device")
    group.add_argument("--device", type=str, default="auto", choices=["auto", "cpu", "cuda"],
                       help="auto: CUDA when available, else CPU.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a CPC model on a LibriSpeech-format corpus.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for add in (add_dataset_args, add_architecture_args, add_cpc_criterion_args,
                add_cpcctc_args, add_pase_args, add_linsep_args, add_capture_args,
                add_training_args, add_health_args, add_save_args, add_load_args,
                add_device_args):
        add(parser)
    return parser


def group_dests(parser: argparse.ArgumentParser, titles: tuple[str, ...]) -> set[str]:
    """Destinations of the options of the named argument groups."""
    return {action.dest for group in parser._action_groups if group.title in titles
            for action in group._group_actions}


def explicit_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the options actually given in ``argv`` (not filled from defaults)."""
    shadow = copy.deepcopy(parser)
    for action in shadow._actions:
        action.default = argparse.SUPPRESS
    return set(vars(shadow.parse_args(argv)))


def reconcile_with_saved(args: argparse.Namespace, saved: dict, explicit: set[str],
                         architecture: set[str], run_dir: str) -> None:
    """Take the architecture of a saved run; refuse explicit flags that contradict it."""
    for dest in sorted(architecture):
        if dest not in saved:
            continue
        if dest in explicit and getattr(args, dest) != saved[dest]:
            raise ConfigError(f"--{dest} {getattr(args, dest)} contradicts the run in {run_dir}, "
                              f"trained with --{dest} {saved[dest]}; use another "
                              f"--pathCheckpoint or --restart")
        setattr(args, dest, saved[dest])


def check_args(args: argparse.Namespace) -> None:
    if args.pathDB is None:
        raise ConfigError("--pathDB is required: the root directory of the corpus")
    if args.nPredicts < 1 or args.negativeSamplingExt < 1:
        raise ConfigError("--nPredicts and --negativeSamplingExt must be positive")
    frames = args.sizeWindow // 160
    if args.nPredicts >= frames and not args.pase_settings:  # PASE workers predict nothing
        raise ConfigError(f"--nPredicts {args.nPredicts} must be smaller than the "
                          f"{frames} frames of a --sizeWindow {args.sizeWindow} window")
    if args.only_classif_metric:
        args.supervised_classif_metric = True
        if not args.load and not (args.pathCheckpoint
                                  and ckpt.list_checkpoints(args.pathCheckpoint)):
            raise ConfigError("--only_classif_metric needs a trained model: a --pathCheckpoint "
                              "holding checkpoints, or --load CHECKPOINT")
    if args.CTCphones and not args.path_phone_data:
        raise ConfigError("--CTCphones needs phone labels: add --path_phone_data FILE")
    if args.supervised_classif_metric and not (args.speaker_sep or args.path_phone_data):
        raise ConfigError("--supervised_classif_metric needs --speaker_sep and/or "
                          "--path_phone_data (what to probe)")
    parse_stats_spec(args.captureSetStats)  # refuses bad stat specs before any work
    capturing = bool(capture_kinds(args)) or bool(args.captureSetStats)
    if args.onlyCapture and not (args.pathCheckpoint and ckpt.list_checkpoints(args.pathCheckpoint)):
        raise ConfigError("--onlyCapture needs a trained model: a --pathCheckpoint holding "
                          "checkpoints")
    if (capturing or args.onlyCapture) and not (args.pathCaptureDS and args.pathCaptureSave):
        raise ConfigError("capturing needs --pathCaptureDS (the files) and --pathCaptureSave "
                          "(where to write)")
    if args.onlyCapture and not capturing:
        raise ConfigError("--onlyCapture: nothing to capture; add capture flags "
                          "(e.g. --captureEverything) or --captureSetStats")
    if capturing and not args.onlyCapture and args.captureEachEpochs < 1:
        raise ConfigError("capture flags need --captureEachEpochs N (or --onlyCapture)")
    if args.linsep_classif_each_epochs < 1:
        raise ConfigError("--linsep_classif_each_epochs must be at least 1")
    if args.load and args.pathCheckpoint and ckpt.list_checkpoints(args.pathCheckpoint) \
            and not args.restart and not args.only_classif_metric:
        raise ConfigError(f"--load initialises a new run but {args.pathCheckpoint} already "
                          f"holds checkpoints: add --restart or choose another --pathCheckpoint")


def check_writable(path: str, flag: str) -> None:
    """Create an output directory now, and prove it writable, rather than fail after hours."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path} is not a writable directory ({exc.strerror})") from None


def check_output_dirs(args: argparse.Namespace) -> None:
    """Every directory the run will write to (the run directory only when it is written)."""
    writes_run_dir = not (args.only_classif_metric or args.onlyCapture)
    for flag, path in (("--pathCheckpoint", args.pathCheckpoint if writes_run_dir else None),
                       ("--pathCaptureSave", args.pathCaptureSave),
                       ("--linsep_logs_dir", args.linsep_logs_dir),
                       ("--linsep_checkpoint_dir", args.linsep_checkpoint_dir)):
        if path:
            check_writable(path, flag)


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# Random state (saved in checkpoints for exact resumption)
# --------------------------------------------------------------------------------------------

def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally forbid nondeterministic kernels."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(data: CorpusData) -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                       *np_state[2:]),
             "train_data": data.train.rng.getstate(), "val_data": data.val.rng.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, data: CorpusData) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    data.train.rng.setstate(state["train_data"])
    data.val.rng.setstate(state["val_data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# One pass over a loader
# --------------------------------------------------------------------------------------------

@dataclass
class EpochStats:
    """Per-step losses and accuracies averaged over the windows of an epoch."""

    loss: float = float("nan")  # the criterion's own loss (CPC: sum over steps; CPC-CTC: mean cost)
    step_losses: list[float] = field(default_factory=list)
    step_accuracies: list[float] = field(default_factory=list)
    n_windows: int = 0
    seconds: float = 0.0
    batches_done: int = 0  # batches taken from the loader, counting skipped ones
    interrupted: bool = False  # stopped by a signal before the end of the epoch

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.step_accuracies)) if self.step_accuracies else float("nan")

    def describe(self) -> str:
        accuracy = "" if np.isnan(self.accuracy) else f" acc {self.accuracy:.3f}"
        return f"loss {self.loss:.4f}{accuracy}"


class NonFiniteLoss(CPCError):
    """The loss became NaN or infinite more often than --allow_nan_steps allows."""


@dataclass
class NanBudget:
    """How many training batches with a non-finite loss may be skipped (--allow_nan_steps)."""

    allowed: int
    used: int = 0

    def charge(self, where: str) -> None:
        self.used += 1
        if self.used > self.allowed:
            raise NonFiniteLoss(f"non-finite loss at {where} (--allow_nan_steps {self.allowed})")
        print(f"warning: non-finite loss at {where}: batch skipped ({self.used} of "
              f"--allow_nan_steps {self.allowed})", file=sys.stderr, flush=True)


def run_epoch(step_module: torch.nn.Module, loader, device: torch.device,
              updater: Updater | None = None, desc: str = "",
              on_step=None, should_stop=None, nan_budget: NanBudget | None = None,
              info: DistInfo = DistInfo()) -> EpochStats:
    """Train (with an updater) or evaluate (without) over one epoch of ``loader``.

    Per-step losses and accuracies are averaged over the windows where they are defined (a
    PASE worker that could not use a batch reports NaN for it), over all ranks when
    distributed. Training stops after the current step when ``should_stop()``; a batch with a
    non-finite loss is charged to ``nan_budget`` (which raises when exhausted) and skipped.
    ``on_step(out, grad_norms)`` follows every training step (``grad_norms`` None in evaluation).
    """
    training = updater is not None
    step_module.train(training)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    n_windows = batches_done = 0
    interrupted = False
    start = time.time()
    bar = tqdm(loader, total=len(loader), desc=desc, leave=False, dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, disable=not info.is_main)

    def accumulate(name: str, values: torch.Tensor, size: int) -> None:
        values = values.detach().double().cpu().reshape(-1)
        defined = ~torch.isnan(values)
        sums[name] = sums.get(name, 0) + torch.where(defined, values, 0.0) * size
        counts[name] = counts.get(name, 0) + defined.double() * size

    with torch.set_grad_enabled(training):
        for step, batch in enumerate(bar):
            batch = batch.to(device)
            out = step_module(batch)
            batches_done += 1
            if training and not torch.isfinite(out.loss):  # one device sync per step
                (nan_budget or NanBudget(0)).charge(f"{desc}, batch {step}")
                continue
            grad_norms = None
            if training:
                updater.zero_grad()
                out.loss.backward()
                grad_norms = updater.step()
            size = len(batch)
            accumulate("loss", out.loss, size)
            accumulate("steps", out.step_losses, size)
            accumulate("accs", out.step_accuracies, size)
            n_windows += size
            if step % 10 == 0:  # .item() synchronises the device: not at every step
                bar.set_postfix(loss=f"{out.loss.item():.3f}", refresh=False)
            if on_step is not None:
                on_step(out, grad_norms)
            if should_stop is not None and should_stop():
                interrupted = True
                break
    n_windows = int(sum_over_ranks(torch.tensor(n_windows), info))
    sums = {name: sum_over_ranks(value, info) for name, value in sums.items()}
    counts = {name: sum_over_ranks(value, info) for name, value in counts.items()}
    if n_windows == 0:
        return EpochStats(seconds=time.time() - start, batches_done=batches_done,
                          interrupted=interrupted)
    mean = {name: (sums[name] / counts[name]).tolist() for name in sums}
    return EpochStats(mean["loss"][0], mean["steps"], mean["accs"], n_windows,
                      time.time() - start, batches_done, interrupted)


# --------------------------------------------------------------------------------------------
# Run directory
# --------------------------------------------------------------------------------------------

def empty_logs() -> dict:
    return {"epoch": [], "loss_train": [], "loss_val": [], "locLoss_train": [],
            "locAcc_train": [], "locLoss_val": [], "locAcc_val": []}


def append_logs(logs: dict, epoch: int, train: EpochStats, val: EpochStats,
                worker_names: list[str] | None = None) -> None:
    """One epoch's entries; with PASE workers, also ``worker_<name>_train`` / ``_val``."""
    for i, name in enumerate(worker_names or []):
        for part, stats in (("train", train), ("val", val)):  # NaN for an empty pass
            value = stats.step_losses[i] if i < len(stats.step_losses) else float("nan")
            logs.setdefault(f"worker_{name}_{part}", []).append(value)
    logs["epoch"].append(epoch)
    logs["loss_train"].append(train.loss)
    logs.setdefault("train_seconds", []).append(train.seconds)
    logs["loss_val"].append(val.loss)
    logs["locLoss_train"].append(train.step_losses)
    logs["locAcc_train"].append(train.step_accuracies)
    logs["locLoss_val"].append(val.step_losses)
    logs["locAcc_val"].append(val.step_accuracies)


def record_health(logs: dict, health: dict[str, float] | None) -> None:
    """The epoch-end health figures, one ``health_<name>`` entry per epoch (after
    :func:`append_logs`; NaN for the earlier epochs of a run begun without them)."""
    for key, value in (health or {}).items():
        logs.setdefault(f"health_{key}", [float("nan")] * (len(logs["epoch"]) - 1)).append(value)


# Log entries that are dicts carrying their own "epoch" (several per epoch, or none)
EPOCH_TAGGED_LOG_KEYS = ("health_steps", "collapse_events")


def truncate_logs(logs: dict, last_epoch: int) -> dict:
    """Logs of the epochs up to ``last_epoch`` (a run resumed from an older checkpoint).

    Per-epoch lists follow ``epoch``; probe results ``linsep_epoch``; stats ``capture_epoch``.
    """
    def kept(index_key: str) -> list[int]:
        return [i for i, e in enumerate(logs.get(index_key, [])) if e <= last_epoch]
    keep = {"epoch": kept("epoch"), "linsep_epoch": kept("linsep_epoch"),
            "capture_epoch": kept("capture_epoch")}
    out = {}
    for key, values in logs.items():
        if key in EPOCH_TAGGED_LOG_KEYS:
            values = [entry for entry in values if entry["epoch"] <= last_epoch]
        elif isinstance(values, list):
            index_key = "linsep_epoch" if key in LINSEP_LOG_KEYS else \
                "capture_epoch" if key in CAPTURE_LOG_KEYS else "epoch"
            values = [values[i] for i in keep[index_key]]
        out[key] = values
    return out


class TensorBoard:
    """Scalars under <pathCheckpoint>/tensorboard; a no-op without a run directory."""

    def __init__(self, run_dir: str | None) -> None:
        self.writer = None
        if run_dir:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def epoch_scalars(prefix: str, stats: EpochStats,
                  worker_names: list[str] | None = None) -> dict[str, float]:
    out = {f"{prefix}/loss": stats.loss}
    if worker_names:
        out.update({f"workers/{name}_{prefix}": loss
                    for name, loss in zip(worker_names, stats.step_losses)})
        return out
    out[f"{prefix}/accuracy"] = stats.accuracy
    for k, (loss, acc) in enumerate(zip(stats.step_losses, stats.step_accuracies)):
        out[f"{prefix}_steps/loss_{k}"] = loss
        out[f"{prefix}_steps/accuracy_{k}"] = acc
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict | None]:
    """Parsed options, reconciled with a saved run; and that run's newest checkpoint state."""
    parser = build_parser()
    config_path = parser.parse_known_args(argv)[0].config
    pase = None
    if config_path:
        defaults, pase = load_config(config_path, parser)
        parser.set_defaults(save_step=pase["ckpt_save_interval"],
                            keep_checkpoints=pase["num_ckpts_keep"], **defaults)
    args = parser.parse_args(argv)
    args.pase_settings = pase if pase and any(pase["workers_config"].values()) else None
    resume = None
    if args.pathCheckpoint and args.restart:
        for _, path in ckpt.list_checkpoints(args.pathCheckpoint):
            path.unlink()
        for name in (ckpt.LOGS_FILE,):
            (Path(args.pathCheckpoint) / name).unlink(missing_ok=True)
    elif args.pathCheckpoint and ckpt.list_checkpoints(args.pathCheckpoint):
        args_file = Path(args.pathCheckpoint) / ckpt.ARGS_FILE
        if not args_file.is_file():
            raise ConfigError(f"{args.pathCheckpoint} holds checkpoints but no {ckpt.ARGS_FILE}")
        saved = ckpt.read_json(args_file)
        reconcile_with_saved(args, saved, explicit_dests(parser, argv),
                             group_dests(parser, ARCHITECTURE_GROUPS), args.pathCheckpoint)
        if saved.get("pase_settings") and args.pase_settings is None:
            args.pase_settings = saved["pase_settings"]  # resumed without repeating --config
        elif args.pase_settings and args.pase_settings != saved.get("pase_settings"):
            raise ConfigError(f"the PASE settings of --config {args.config} differ from those "
                              f"of the run in {args.pathCheckpoint}")
        found = ckpt.load_newest_checkpoint(args.pathCheckpoint)
        if found is None:
            raise ConfigError(f"no checkpoint of {args.pathCheckpoint} can be read")
        resume = found[2]
        if args.random_seed is None:
            args.random_seed = saved.get("random_seed")
    check_args(args)
    check_output_dirs(args)
    if args.random_seed is None:
        args.random_seed = random.randint(0, 2**31 - 1)
    return args, resume


def load_initial_weights(paths: list[str], model: torch.nn.Module,
                         criterion: torch.nn.Module | None = None) -> None:
    """--load: the model (and, when given, criterion) weights of a checkpoint."""
    from cpc.feature_loader import resolve_checkpoint
    state = ckpt.load_checkpoint(resolve_checkpoint(paths[0]))
    model.load_state_dict(state["gEncoder"])
    if criterion is not None:
        criterion.load_state_dict(state["cpcCriterion"])


def load_data(args: argparse.Namespace, verbose: bool = True) -> CorpusData:
    data = build_datasets(args.pathDB, args.file_extension, args.pathTrain, args.pathVal,
                          args.path_phone_data, args.sizeWindow, args.n_process_loader,
                          args.max_size_loaded, args.random_seed, args.ignore_cache,
                          max_files=(1000, 100) if args.debug else None)
    if verbose:
        print(f"train: {data.train.describe()}\nval:   {data.val.describe()}", flush=True)
    return data


# --------------------------------------------------------------------------------------------
# Linear-separability probes
# --------------------------------------------------------------------------------------------

LINSEP_LOG_KEYS = ("linsep_epoch", "speaker_best_val_acc", "speaker_mean_best_val_acc",
                   "phone_best_val_acc", "phone_ctc_best_val_per")


def linsep_probes(args: argparse.Namespace) -> list[str]:
    probes = ["speaker", "speaker_mean"] if args.speaker_sep else []
    if args.path_phone_data:
        probes.append("phone_ctc" if args.CTCphones else "phone")
    return probes


def run_linsep(args: argparse.Namespace, model: torch.nn.Module, data: CorpusData,
               device: torch.device, cpc_epoch: int, log_root: str | None) -> dict[str, float]:
    """Train fresh probes on the frozen model's features of the data already in memory."""
    config = ProbeConfig(args.linsep_n_epoch, args.linsepBatchSizeGPU, args.linsep_lr,
                         args.linsep_beta1, args.linsep_beta2, args.linsep_epsilon,
                         args.linsep_net_layers, args.linsep_task_logging_step,
                         args.linsep_feature_budget_gb, args.random_seed)
    log_dir = Path(log_root) / str(cpc_epoch) if log_root else None
    probe_dir = Path(args.linsep_checkpoint_dir) / str(cpc_epoch) \
        if args.linsep_checkpoint_dir else None
    metrics = run_probes(model, data.train, data.val, linsep_probes(args), len(data.speakers),
                         data.n_phones, config, device, args.batchSizeGPU,
                         args.phone_get_encoded, log_dir, probe_dir)
    print(f"linear separability after epoch {cpc_epoch}: {format_metrics(metrics)}", flush=True)
    return metrics


def record_linsep(logs: dict, cpc_epoch: int, metrics: dict[str, float]) -> None:
    logs.setdefault("linsep_epoch", []).append(cpc_epoch)
    for key in LINSEP_LOG_KEYS[1:]:
        if key in metrics:
            logs.setdefault(key, []).append(metrics[key])


def only_classif_metric(args: argparse.Namespace, resume: dict | None) -> dict[str, float]:
    """--only_classif_metric: probe a trained model once; the run directory is left untouched."""
    device = select_device(args.device)
    data = load_data(args)
    model = build_model(args).to(device)
    if resume is not None:
        model.load_state_dict(resume["gEncoder"])
        epoch = resume["epoch"]
    else:
        load_initial_weights(args.load, model)
        epoch = 0
    try:
        return run_linsep(args, model, data, device, epoch, args.linsep_logs_dir)
    finally:
        data.close()


# --------------------------------------------------------------------------------------------
# Capture and stats
# --------------------------------------------------------------------------------------------

CAPTURE_LOG_KEYS = ("capture_epoch", "capture_stats")


def capture_kinds(args: argparse.Namespace) -> list[str]:
    return requested_kinds(vars(args), args.captureEverything, args.CPCCTC,
                           bool(args.path_phone_data), has_criterion=not args.pase_settings)


def load_capture_data(args: argparse.Namespace) -> tuple[AudioBatchData, list[str]]:
    data, speakers = build_capture_dataset(args.pathDB, args.file_extension, args.pathCaptureDS,
                                 args.path_phone_data, args.sizeWindow, args.captureDSfreq,
                                 args.captureDStotNr, args.n_process_loader)
    print(f"capture: {data.describe()}", flush=True)
    return data, speakers


def capture(args: argparse.Namespace, model: torch.nn.Module,
            criterion: torch.nn.Module | None, data: AudioBatchData, speakers: list[str],
            epoch: int, device: torch.device) -> dict[str, float]:
    """One capture of the capture dataset (and its stats) under <pathCaptureSave>/<epoch>/."""
    stats = parse_stats_spec(args.captureSetStats)
    epoch_dir = Path(args.pathCaptureSave) / str(epoch)
    results = run_capture(model, criterion, data, speakers, capture_kinds(args),
                          StatsCollector(stats) if stats else None, epoch_dir, epoch,
                          args.batchSizeGPU, device)
    print(f"captured epoch {epoch} into {epoch_dir}" +
          (f"; stats: {', '.join(f'{k} {v:.4g}' for k, v in results.items())}"
           if results else ""), flush=True)
    return results


def only_capture(args: argparse.Namespace, resume: dict) -> dict[str, float]:
    """--onlyCapture: capture once with the newest checkpoint; the run directory is untouched."""
    device = select_device(args.device)
    data, speakers = load_capture_data(args)
    training = build_training(args, device, len(speakers), 0)
    training.load(resume, with_optimizers=False)
    try:
        return capture(args, training.model, training.criterion, data, speakers,
                       resume["epoch"], device)
    finally:
        data.close()


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

@dataclass
class Training:
    """Everything a run trains and saves: the model, its objective and their optimisers."""

    model: torch.nn.Module
    objective: CriterionObjective | WorkerObjective
    optimizers: dict[str, torch.optim.Optimizer]  # "model", and "worker_<name>" for PASE
    schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR]

    @property
    def criterion(self) -> torch.nn.Module | None:
        return getattr(self.objective, "criterion", None)

    @property
    def workers(self) -> torch.nn.ModuleDict | None:
        return getattr(self.objective, "workers", None)

    def parameter_parts(self) -> dict[str, list[torch.nn.Parameter]]:
        """The trained parameters by part, for gradient norms and clipping."""
        parts = {"encoder": list(self.model.gEncoder.parameters()),
                 "context": list(self.model.gAR.parameters())}
        if self.criterion is not None:
            parts["criterion"] = list(self.criterion.parameters())
        if self.workers is not None:
            parts["workers"] = list(self.workers.parameters())
        return parts

    def state(self, epoch: int, rng: dict) -> dict:
        """Checkpoint content (CPC_audio's keys, plus the workers and their optimisers)."""
        state = {"gEncoder": self.model.state_dict(), "epoch": epoch, "rng": rng,
                 "optimizer": self.optimizers["model"].state_dict(),
                 "scheduler": self.schedulers["model"].state_dict(),
                 "worker_optimizers": {name: opt.state_dict()
                                       for name, opt in self.optimizers.items() if name != "model"},
                 "worker_schedulers": {name: sched.state_dict()
                                       for name, sched in self.schedulers.items()
                                       if name != "model"}}
        if self.criterion is not None:
            state["cpcCriterion"] = self.criterion.state_dict()
        if self.workers is not None:
            state["workers"] = self.workers.state_dict()
        return state

    def load(self, state: dict, with_optimizers: bool = True) -> None:
        self.model.load_state_dict(state["gEncoder"])
        if self.criterion is not None:
            self.criterion.load_state_dict(state["cpcCriterion"])
        if self.workers is not None:
            self.workers.load_state_dict(state["workers"])
        if with_optimizers:
            self.optimizers["model"].load_state_dict(state["optimizer"])
            self.schedulers["model"].load_state_dict(state["scheduler"])
            for name, opt_state in state.get("worker_optimizers", {}).items():
                self.optimizers[name].load_state_dict(opt_state)
            for name, sched_state in state.get("worker_schedulers", {}).items():
                self.schedulers[name].load_state_dict(sched_state)


def build_training(args: argparse.Namespace, device: torch.device, n_speakers: int,
                   n_phones: int) -> Training:
    """The model and, for CPC / CPC-CTC, one Adam over model and criterion; for PASE workers
    (from --config), one Adam for the encoder and one per worker, on PASE's decay schedule."""
    model = build_model(args).to(device)
    if not args.pase_settings:
        criterion = build_criterion("cpcctc" if args.CPCCTC else "cpc", args,
                                    dim_context=model.dim_context,
                                    dim_encoded=model.dim_encoded, n_speakers=n_speakers,
                                    n_phones=n_phones).to(device)
        optimizer, scheduler = build_optimizer(
            list(model.parameters()) + list(criterion.parameters()), args.learningRate,
            args.beta1, args.beta2, args.epsilon, args.schedulerRamp, args.schedulerStep)
        return Training(model, CriterionObjective(criterion), {"model": optimizer},
                        {"model": scheduler})
    pase = args.pase_settings
    workers = build_workers(pase["workers_config"], model.dim_encoded).to(device)
    check_sampling(workers, args.samplingType)
    groups = {"model": (model.parameters(), pase["encoder_lr_start"])}
    groups.update({f"worker_{name}": (worker.parameters(), pase["worker_lr_start"])
                   for name, worker in workers.items()})
    decay = lambda epoch: pase_lr_factor(epoch, pase["lr_update_interval"],  # noqa: E731
                                         pase["decay_factor"])
    optimizers = {name: torch.optim.Adam(params, lr=lr, betas=(args.beta1, args.beta2),
                                         eps=args.epsilon)
                  for name, (params, lr) in groups.items()}
    schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, decay)
                  for name, opt in optimizers.items()}
    return Training(model, WorkerObjective(workers), optimizers, schedulers)


def stop_run(run_dir: str | None, training: Training, data: CorpusData, epoch: int,
             epoch_start: dict, batches_done: int, signal_name: str | None) -> None:
    """After a stop signal: checkpoint the epoch in progress so that rerunning the command
    replays the epoch's draws, passes over its done batches and continues exactly."""
    if not run_dir:
        print(f"{signal_name}: stopped in epoch {epoch} (no --pathCheckpoint, nothing saved)",
              flush=True)
        return
    state = training.state(epoch, rng_state(data))
    state["interrupted"] = {"batches_done": batches_done, "epoch_start": epoch_start}
    path = ckpt.checkpoint_path(run_dir, epoch)
    ckpt.save_checkpoint(path, state)
    print(f"{signal_name}: stopped in epoch {epoch} after {batches_done} batches; wrote {path}; "
          f"rerun the same command to continue", flush=True)


def train(args: argparse.Namespace, resume: dict | None) -> dict:
    """Train as the options say (one process, or one rank of torchrun); returns the logs."""
    info, device = init_distributed(select_device(args.device))
    try:
        return train_process(args, resume, info, device)
    finally:
        shutdown_distributed()


def train_process(args: argparse.Namespace, resume: dict | None, info: DistInfo,
                  device: torch.device) -> dict:
    """The training of one process. Under torchrun every rank draws the same batches and takes
    its share, DDP averages the gradients, and only rank 0 writes files or runs probes and
    captures (the other ranks wait)."""
    if info.active and args.allow_nan_steps:
        raise ConfigError("--allow_nan_steps cannot skip batches in lockstep across torchrun "
                          "ranks yet; run without it (a non-finite loss then stops the run)")
    args.random_seed = broadcast_int(args.random_seed, info, device)
    seed_everything(args.random_seed, args.deterministic)
    data = load_data(args, verbose=info.is_main)
    training = build_training(args, device, len(data.speakers), data.n_phones)
    model = training.model
    step_module: torch.nn.Module = TrainStep(model, training.objective)
    if info.active:
        step_module = torch.nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=training.workers is not None)

    run_dir = args.pathCheckpoint if info.is_main else None  # rank 0 writes, the others read
    logs, start_epoch = empty_logs(), 0
    interrupted = resume.get("interrupted") if resume is not None else None
    if resume is not None:
        training.load(resume)
        restore_rng_state(resume["rng"], data)
        # a checkpoint written on a signal holds epoch N in progress, otherwise epoch N done
        start_epoch = resume["epoch"] + (0 if interrupted else 1)
        logs_path = Path(args.pathCheckpoint) / ckpt.LOGS_FILE
        if logs_path.is_file():
            logs = truncate_logs(ckpt.read_json(logs_path), start_epoch - 1)
        where = f" (after its batch {interrupted['batches_done']})" if interrupted else ""
        print(f"resuming {args.pathCheckpoint} at epoch {start_epoch}{where}", flush=True)
    elif args.load:
        load_initial_weights(args.load, model, training.criterion if args.loadCriterion else None)
    if training.workers is not None and resume is None:
        print(f"estimating the workers' target statistics on {args.pase_stats_batches} batches",
              flush=True)
        estimate_target_stats(training.workers, data.train.getDataLoader(
            args.batchSizeGPU, args.samplingType, False), args.pase_stats_batches)
    if run_dir:
        ckpt.remove_stale_temp_files(run_dir)
        ckpt.write_json(Path(run_dir) / ckpt.ARGS_FILE, vars(args))
    linsep_logs = args.linsep_logs_dir or (str(Path(run_dir) / "linsep_logs") if run_dir
                                           else None)
    capture_data = load_capture_data(args)[0] if info.is_main and args.captureEachEpochs > 0 and \
        (capture_kinds(args) or args.captureSetStats) else None

    board = TensorBoard(run_dir)
    train_loader = data.train.getDataLoader(args.batchSizeGPU, args.samplingType, True,
                                            rank=info.rank, world_size=info.world_size)
    if interrupted:  # replay the interrupted epoch's draws and pass over its done batches
        data.train.restore_epoch_state(interrupted["epoch_start"])
        train_loader.skip = interrupted["batches_done"]
    # PASE classifiers need several speakers per batch, which sequential windows rarely have
    val_loader = data.val.getDataLoader(args.batchSizeGPU, "uniform" if training.workers
                                        is not None else "sequential", False,
                                        rank=info.rank, world_size=info.world_size)
    global_step = start_epoch * len(train_loader)
    running: list[torch.Tensor] = []
    updater = Updater(training.optimizers, training.schedulers, training.parameter_parts(),
                      args.clip_grad_norm, args.warmup_steps)
    monitor = HealthMonitor(args.logging_step, list(updater.parts),
                            args.arMode in SATURATING_CONTEXTS, info, seed=args.random_seed)
    guard = CollapseGuard(
        args.on_collapse, CollapseRule(args.collapse_cosine, patience=args.collapse_patience),
        getattr(training.criterion, "chance_loss", lambda: None)(), training,
        lambda n: data.train.rng.seed(args.random_seed + 7919 * n), args.rollback_lr_factor,
        args.max_rollbacks, rollbacks=sum(e["action"] == "rollback"
                                          for e in logs.get("collapse_events", [])))
    guard.keep_healthy_state()
    epoch = start_epoch

    def health_check() -> dict[str, float] | None:
        metrics = monitor.check()
        if metrics is None:
            return None
        logs.setdefault("health_steps", []).append({"step": global_step, "epoch": epoch,
                                                    **metrics})
        lr = training.optimizers["model"].param_groups[0]["lr"]
        board.scalars({**{f"health/{key}": value for key, value in metrics.items()},
                       "health/lr": lr, "health/rollbacks": guard.rollbacks}, global_step)
        event = guard.after_check(metrics, global_step, epoch)
        if event is not None:
            logs.setdefault("collapse_events", []).append(event)
            if info.is_main:
                print(event["message"], file=sys.stderr, flush=True)
        return metrics

    def on_train_step(out, grad_norms) -> None:
        nonlocal global_step
        global_step += 1
        running.append(out.loss.detach())
        monitor.observe(out, grad_norms)
        if args.logging_step > 0 and global_step % args.logging_step == 0:
            board.scalars({"train/running_loss": torch.stack(running).mean().item()},
                          global_step)
            running.clear()
        if monitor.due(global_step):
            health_check()

    nan_budget = NanBudget(args.allow_nan_steps)
    try:
        with StopRequest() as stop:
            for epoch in range(start_epoch, args.nEpoch):
                epoch_start = data.train.epoch_state()
                if interrupted and epoch == start_epoch:
                    epoch_start = interrupted["epoch_start"]
                lr = training.optimizers["model"].param_groups[0]["lr"]
                train_stats = run_epoch(
                    step_module, train_loader, device, updater,
                    desc=f"epoch {epoch} train", on_step=on_train_step,
                    should_stop=lambda: guard.stop_requested or any_rank(stop.requested, info,
                                                                         device),
                    nan_budget=nan_budget, info=info)
                health = health_check() or monitor.latest
                if train_stats.interrupted:
                    done = train_stats.batches_done + (interrupted["batches_done"] if interrupted
                                                       and epoch == start_epoch else 0)
                    if info.is_main:
                        stop_run(run_dir, training, data, epoch, epoch_start, done,
                                 "collapse guard" if guard.stop_requested else
                                 stop.signal_name or "stop signal (another rank)")
                    if guard.stop_requested:
                        if run_dir:
                            ckpt.write_json(Path(run_dir) / ckpt.LOGS_FILE, logs)
                        raise TrainingCollapsed(
                            f"{guard.events[-1]['message']}. Retry from an earlier checkpoint "
                            f"with a lower --learningRate, --clip_grad_norm or --warmup_steps, "
                            f"or let the guard roll back (--on_collapse rollback)")
                    break
                val_stats = run_epoch(step_module, val_loader, device, None,
                                      desc=f"epoch {epoch} val", info=info)
                for scheduler in training.schedulers.values():
                    scheduler.step()
                append_logs(logs, epoch, train_stats, val_stats, training.objective.step_names)
                record_health(logs, health)
                board.scalars({**epoch_scalars("train", train_stats, training.objective.step_names),
                               **epoch_scalars("val", val_stats, training.objective.step_names),
                               "lr": lr}, epoch)
                audio_rate = train_stats.n_windows * args.sizeWindow / 16000 / \
                    max(train_stats.seconds, 1e-9)
                if info.is_main:
                    print(f"epoch {epoch:3d} | train {train_stats.describe()} | val "
                          f"{val_stats.describe()} | {train_stats.seconds:.1f} s, "
                          f"{audio_rate:.1f} s audio/s | lr {lr:.2e}", flush=True)
                    if health is not None:
                        print(f"          {describe_health(health)}", flush=True)
                if run_dir and ((epoch + 1) % args.save_step == 0 or epoch == args.nEpoch - 1):
                    ckpt.save_checkpoint(ckpt.checkpoint_path(run_dir, epoch),
                                         training.state(epoch, rng_state(data)))
                    ckpt.remove_old_checkpoints(run_dir, args.keep_checkpoints)
                if info.is_main and args.supervised_classif_metric and \
                        (epoch + 1) % args.linsep_classif_each_epochs == 0:
                    metrics = run_linsep(args, model, data, device, epoch, linsep_logs)
                    record_linsep(logs, epoch, metrics)
                    board.scalars({f"linsep/{key}": metrics[key] for key in LINSEP_LOG_KEYS[1:]
                                   if key in metrics}, epoch)
                if info.is_main and capture_data is not None and \
                        (epoch + 1) % args.captureEachEpochs == 0:
                    results = capture(args, model, training.criterion, capture_data, data.speakers,
                                      epoch, device)
                    logs.setdefault("capture_epoch", []).append(epoch)
                    logs.setdefault("capture_stats", []).append(results)
                    board.scalars({f"stats/{key}": value for key, value in results.items()}, epoch)
                if run_dir:
                    ckpt.write_json(Path(run_dir) / ckpt.LOGS_FILE, logs)
                barrier(info)  # the other ranks wait for rank 0's probes and captures
    except NonFiniteLoss as exc:
        last = ckpt.list_checkpoints(run_dir) if run_dir else []
        raise NonFiniteLoss(f"{exc}; last good checkpoint: "
                            f"{last[-1][1] if last else 'none yet'}. Rerun the command to "
                            f"resume from it (perhaps with a lower --learningRate), or allow "
                            f"skipping such batches with --allow_nan_steps K") from None
    finally:
        board.close()
        data.close()
        if capture_data is not None:
            capture_data.close()
    if run_dir:
        print(f"checkpoints and logs: {run_dir}  (TensorBoard: tensorboard --logdir "
              f"{Path(run_dir) / 'tensorboard'})", flush=True)
    return logs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, resume = parse_args(argv)
        if args.only_classif_metric:
            only_classif_metric(args, resume)
        elif args.onlyCapture:
            only_capture(args, resume)
        else:
            train(args, resume)
    except CPCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
