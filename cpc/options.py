"""The command-line options of training, one function per group, and what derives from them.

``build_parser()`` is the whole CLI of ``cpc/train.py`` (``--config FILE.yaml`` then fills
defaults, see :mod:`cpc.config_file`). Every default lives once: the options of the model and of
each registered component in its options dataclass, beside its code (:mod:`cpc.architecture`),
the others here; :func:`complete_with_defaults` fills a Namespace loaded from an older
``checkpoint_args.json`` (ours or CPC_audio's) with the defaults of options it predates.

This module imports no torch (the names a flag lists come from :mod:`cpc.registries` and other
torch-free modules, and so do the options classes of the shipped components), so that
``cpc/train.py --help`` answers before torch is imported.
"""
from __future__ import annotations

import argparse
import difflib
from typing import NoReturn

from cpc.capture.kinds import CAPTURE_KINDS
from cpc.collapse_rule import ON_COLLAPSE, CollapseRule
from cpc.criterion.recipe import PaseOptions
from cpc.probes.config import ProbeConfig
from cpc.architecture import architecture_classes
from cpc.registries import STATS
from cpc.utils.cli import DefaultsHelpFormatter, add_bad_audio_flag
from cpc.utils.option_classes import add_option_groups
from cpc.utils.constants import PRECISIONS, SAMPLING_TYPES

# The recipe's stabilisers (CPC_audio has neither: --clip_grad_norm 0 --warmup_steps 0).
DEFAULT_CLIP_GRAD_NORM = 1.0
DEFAULT_WARMUP_STEPS = 200

# --------------------------------------------------------------------------------------------
# Options, one function per group
# --------------------------------------------------------------------------------------------

def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Dataset")
    group.add_argument("--pathDB", type=str, default=None,
                       help="Root of the corpus: <pathDB>/<speaker>/.../<file><ext>.")
    group.add_argument("--file_extension", type=str, default=".flac",
                       help="Extension of the audio files.")
    group.add_argument("--pathTrain", type=str, default=None,
                       help="File listing the training stems, one per line; without it, every file.")
    group.add_argument("--pathVal", type=str, default=None,
                       help="File listing the validation stems; without it, a seeded 1%% of train.")
    group.add_argument("--path_phone_data", "--pathPhone", type=str, default=None,
                       help="Phone labels, CPC_audio format: '<stem> id id ...' per 10 ms frame.")
    group.add_argument("--sizeWindow", type=int, default=20480,
                       help="Samples per training window (multiple of 160).")
    group.add_argument("--n_process_loader", type=int, default=8,
                       help="Threads reading audio files.")
    group.add_argument("--max_size_loaded", type=int, default=4_000_000_000,
                       help="Samples held per pack; the next pack loads in the background.")
    group.add_argument("--ignore_cache", action="store_true",
                       help="Re-read every file header instead of the cached listing.")
    add_bad_audio_flag(group)


def add_architecture_args(parser: argparse.ArgumentParser) -> None:
    """The options of the model and of every registered encoder, context network and criterion,
    declared beside each (:mod:`cpc.architecture`), in the groups their classes name."""
    add_option_groups(parser, architecture_classes())


def add_linsep_args(parser: argparse.ArgumentParser) -> None:
    probe = ProbeConfig()  # the defaults of the probe settings, shared with the probes' script
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
                       help="Probe logs: <dir>/<cpc_epoch>/<probe>/; during training without "
                            "it, <pathCheckpoint>/linsep_logs.")
    group.add_argument("--linsep_checkpoint_dir", type=str, default=None,
                       help="Best probe states: <dir>/<cpc_epoch>/<probe>/best_probe.pt.")
    group.add_argument("--linsep_task_logging_step", type=int, default=probe.logging_step,
                       help="Write a probe log every this many probe epochs.")
    group.add_argument("--linsep_n_epoch", type=int, default=probe.n_epochs,
                       help="Epochs of each probe.")
    group.add_argument("--linsepBatchSizeGPU", type=int, default=probe.batch_size,
                       help="Windows per probe batch.")
    group.add_argument("--linsep_lr", type=float, default=probe.lr,
                       help="Learning rate of the probes' Adam.")
    group.add_argument("--linsep_beta1", type=float, default=probe.beta1,
                       help="Beta1 of the probes' Adam (first-moment decay).")
    group.add_argument("--linsep_beta2", type=float, default=probe.beta2,
                       help="Beta2 of the probes' Adam (second-moment decay).")
    group.add_argument("--linsep_epsilon", type=float, default=probe.epsilon,
                       help="Epsilon of the probes' Adam (added to the denominator).")
    group.add_argument("--linsep_net_layers", type=int, default=probe.n_layers,
                       help="1: linear probe; more: MLP whose hidden width is the class count.")
    group.add_argument("--phone_get_encoded", action="store_true",
                       help="Phone probe on the encoder output z instead of the contexts c.")
    group.add_argument("--CTCphones", action="store_true",
                       help="Phone probe trained with CTC on the window's phone sequence; "
                            "reports the phone error rate.")
    group.add_argument("--linsep_feature_budget_gb", type=float,
                       default=probe.feature_budget_gb,
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
    add_option_groups(parser, [PaseOptions])


def add_training_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Training")
    group.add_argument("--nEpoch", type=int, default=200, help="Epochs to train in all.")
    group.add_argument("--batchSizeGPU", type=int, default=8,
                       help="Windows per batch (per process).")
    group.add_argument("--update_freq", type=int, default=1,
                       help="Accumulate the gradients of this many batches into one update "
                            "(fairseq's --update-freq): an update sees batchSizeGPU x "
                            "processes x update_freq windows, CPC_audio's batchSizeGPU x nGPU "
                            "with fewer GPUs.")
    group.add_argument("--precision", type=str, default="fp32", choices=list(PRECISIONS),
                       help="Format of the forward: bf16 / fp16 run it under autocast (fp16 "
                            "with a loss scale); the scores, alignments and losses stay "
                            "float32, and so do weights and checkpoints.")
    group.add_argument("--no_tf32", action="store_true",
                       help="On CUDA, float32 matmuls and convolutions in full float32 instead "
                            "of TF32 tensor cores.")
    group.add_argument("--samplingType", type=str, default="samespeaker",
                       choices=list(SAMPLING_TYPES),
                       help="How windows are grouped into batches.")
    group.add_argument("--learningRate", type=float, default=2e-4,
                       help="Learning rate of Adam (a --config with PASE workers sets its "
                            "rates in the file instead).")
    group.add_argument("--beta1", type=float, default=0.9,
                       help="Beta1 of Adam (first-moment decay).")
    group.add_argument("--beta2", type=float, default=0.999,
                       help="Beta2 of Adam (second-moment decay).")
    group.add_argument("--epsilon", type=float, default=1e-8,
                       help="Epsilon of Adam (added to the denominator).")
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
                       help="Seed of every random generator; without it, one is drawn and "
                            "saved.")
    group.add_argument("--allow_nan_steps", type=int, default=0,
                       help="Skip up to this many training batches whose loss is not finite, "
                            "reading every loss as it comes (0: stop at the first, naming the "
                            "batch and the last good checkpoint; losses are then read once "
                            "per --logging_step, and always before a checkpoint).")
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
        "checkpoint_logs.json and TensorBoard (health/...). A collapse (the loss back at chance "
        "and either the encoded frames of different windows nearly parallel or most encoder "
        "units dead, or the LSTM / GRU context vectors of different windows nearly parallel with "
        "most outputs saturated, on --collapse_patience consecutive checks) is acted on per "
        "--on_collapse.")
    group.add_argument("--on_collapse", type=str, default="rollback", choices=ON_COLLAPSE,
                       help="rollback: restore the last healthy state kept in memory, multiply "
                            "the learning rate by --rollback_lr_factor, draw a new data order "
                            "and go on; stop: checkpoint and end the run; warn: print and go "
                            "on.")
    group.add_argument("--collapse_cosine", type=float, default=CollapseRule.cosine,
                       help="Mean cosine of encoded frames of different windows from which a "
                            "check counts as collapsed (with the loss at chance).")
    group.add_argument("--collapse_context_cosine", type=float,
                       default=CollapseRule.context_cosine,
                       help="Mean cosine of context vectors of different windows from which a "
                            "check counts as a collapse of the context network (with the loss "
                            "at chance and --collapse_saturated).")
    group.add_argument("--collapse_saturated", type=float, default=CollapseRule.saturated,
                       help="Fraction of LSTM / GRU context outputs above 0.95 in absolute "
                            "value that a context collapse also needs (other context networks "
                            "have no such figure: only the encoder's collapse is detected).")
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
    group.add_argument("--save_interval_steps", type=int, default=0,
                       help="Also save the epoch in progress every this many updates (0: "
                            "never), as interrupted_checkpoint_<epoch>.pt: a killed run "
                            "resumes from it.")
    group.add_argument("--save_interval_minutes", type=float, default=0.0,
                       help="Also save the epoch in progress every this many minutes (0: "
                            "never).")
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
                       help="auto: CUDA when available, else CPU. Several GPUs: one process "
                            "per GPU, `torchrun --nproc_per_node N cpc/train.py ...`.")
    group.add_argument("--dist_timeout_minutes", type=float, default=60.0,
                       help="Under torchrun, how long a collective (NCCL, gloo) may wait for "
                            "the other processes before the job fails; rank 0's probes and "
                            "captures are waited for without limit.")


# CPC_audio / CPC-CTC fork flags this project does not carry over: accepted so that their
# command lines parse, refused when they would change anything (see cpc.train.check_args).
# flag -> (type, CPC_audio's default, what to do instead)
NOT_CARRIED_OVER: dict[str, tuple[type, object, str]] = {
    "speakerEmbedding": (int, 0, "speaker embeddings fed to the prediction network "
                                 "(deprecated in CPC_audio) are not supported"),
    "nullspace": (bool, False, "loading a nullspace (the fork's --nullspace) is not supported"),
    "gru_level": (int, -1, "features of an inner context layer: use the hub (cpc.hub gives "
                           "every layer, hidden_state_<i>)"),
    # facebookresearch/CPC_audio before its release (cpc_default_config.py at bd82b73^)
    "adversarial": (bool, False, "CPC_audio's (deprecated) speaker-adversarial training (a "
                                 "second Adam on a speaker classifier whose entropy the model "
                                 "maximises) is not carried over; measure the speaker "
                                 "information left with --supervised_classif_metric "
                                 "--speaker_sep"),
    "clustering": (str, None, "CPC_audio's research clustering losses are not carried over; "
                              "cluster a trained model's features with "
                              "`python -m cpc.units.cluster`"),
    "n_clusters": (int, 200, "clustering is not part of training here; cluster a trained "
                             "model's features with `python -m cpc.units.cluster`"),
    # clustering-loss settings: without --clustering CPC_audio ignores them too
    "cluster_delay": (int, 0, ""),
    "cluster_iter": (int, 100, ""),
    "clustering_update": (str, "kmean", ""),
}


def add_compatibility_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "CPC_audio compatibility", "Flags of CPC_audio command lines: --nGPU picks the device; "
        "the others are accepted so that existing scripts parse, and refused with an "
        "explanation when they would change anything. CPC_audio's --pathPhone is "
        "--path_phone_data.")
    group.add_argument("--nGPU", type=int, default=None,
                       help="0: CPU; 1: one GPU (the same as --device cuda); more: use torchrun "
                            "(one process per GPU).")
    for flag, (kind, default, _) in NOT_CARRIED_OVER.items():
        if kind is bool:
            group.add_argument(f"--{flag}", action="store_true", help=argparse.SUPPRESS)
        else:
            group.add_argument(f"--{flag}", type=kind, default=default, help=argparse.SUPPRESS)


class CommandLineParser(argparse.ArgumentParser):
    """argparse without prefix abbreviations, whose errors are two lines: the error (with the
    nearest option for a misspelt one) and where the options are listed."""

    def __init__(self, **kwargs) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            known = [s for action in self._actions for s in action.option_strings]
            hints = []
            for word in message.split(":", 1)[1].split():
                if word.startswith("-"):
                    close = difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.6)
                    hints.append(f"{word} (did you mean {close[0]}?)" if close else word)
            message = "unrecognized arguments: " + " ".join(hints) if hints else message
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"(`{self.prog} --help` lists every option by group)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(
        description="Train a CPC model on a LibriSpeech-format corpus.",
        formatter_class=DefaultsHelpFormatter)
    for add in (add_dataset_args, add_architecture_args, add_pase_args, add_linsep_args,
                add_capture_args, add_training_args, add_health_args, add_save_args,
                add_load_args, add_device_args, add_compatibility_args):
        add(parser)
    return parser


def explicit_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the options actually given in ``argv`` (not filled from defaults): argparse
    leaves an option it is not given as it finds it in the namespace, here a marker."""
    unset = object()
    marked = argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([])), unset))
    return {dest for dest, value in vars(parser.parse_args(argv, marked)).items()
            if value is not unset}


def complete_with_defaults(saved: dict) -> argparse.Namespace:
    """A Namespace of saved training args (``checkpoint_args.json``, ours or CPC_audio's), with
    the parser's default for every option the saved run predates; unknown keys are kept."""
    defaults = vars(build_parser().parse_args([]))
    return argparse.Namespace(**{**defaults, **saved})
