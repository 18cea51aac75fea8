"""From a command line to a run: parse, resolve against the run directory, check.

``resolve_run(argv)`` returns a frozen :class:`RunConfig` (the options, the PASE recipe, the
seed, the state to resume) or raises a :class:`~cpc.utils.errors.ConfigError` naming the flag
at fault, before any file is written or deleted. Nothing here mutates a parsed Namespace.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import random
import tempfile
from pathlib import Path

from cpc.capture.kinds import requested_kinds
from cpc.criterion.objective import objective_capture_kinds
from cpc.criterion.options import criterion_name
from cpc.config_file import load_config
from cpc.architecture import architecture_options
from cpc.options import NOT_CARRIED_OVER, build_parser, complete_with_defaults, explicit_dests
from cpc.stats import parse_stats_spec
from cpc.utils import checkpoint as ckpt
from cpc.utils.constants import FRAME_SIZE, window_size_problem
from cpc.utils.distributed import launched_ranks
from cpc.utils.errors import ConfigError
from cpc.utils.files import check_output_dir
from cpc.utils.option_classes import flag



def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict | None]:
    """The options as given (``--config`` fills defaults, the command line wins) and the PASE
    recipe of that file when it names workers. Reads the config file only."""
    parser = build_parser()
    config_path = parser.parse_known_args(argv)[0].config
    recipe = None
    if config_path:
        defaults, recipe = load_config(config_path, parser)
        parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    return args, recipe if recipe and any(recipe["workers_config"].values()) else None


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run, resolved against its run directory: what ``main`` acts on."""

    args: argparse.Namespace  # the options, with the architecture of a resumed run
    recipe: dict | None  # the PASE worker recipe (workers and their rates), or None
    seed: int  # --random_seed, the resumed run's, or drawn
    resume: dict | None  # the newest checkpoint of --pathCheckpoint, when resuming
    saved: dict | None = None  # the resumed run's checkpoint_args.json

    def saved_args(self) -> dict:
        """``checkpoint_args.json``: the options plus what was derived from them."""
        return {**vars(self.args), "random_seed": self.seed, "pase_settings": self.recipe}


# Options of one invocation, not of the run: a resumed run never takes them from its saved
# args (the mode, the run directory and what to do with it, the machine, the listing cache).
INVOCATION_OPTIONS = frozenset({
    "pathCheckpoint", "restart", "load", "loadCriterion", "only_classif_metric", "onlyCapture",
    "config", "device", "nGPU", "dist_timeout_minutes", "ignore_cache"})
# What the read-only modes (--onlyCapture, --only_classif_metric) take from the run they read
# when not given: where its corpus is (what they measure is their own flags' choice).
CORPUS_OPTIONS = frozenset({"pathDB", "file_extension"})


def resolve_run(argv: list[str]) -> RunConfig:
    """Parse, take a saved run's options and state, check everything before any work."""
    args, recipe = parse_args(argv)
    parser = build_parser()
    explicit = explicit_dests(parser, argv)
    resume, saved, seed = None, None, args.random_seed
    if not args.restart and has_checkpoints(args.pathCheckpoint):
        saved = read_saved_args(args.pathCheckpoint)
        read_only = args.only_classif_metric or args.onlyCapture
        args = restore_omitted(args, saved, explicit | config_dests(args.config, parser),
                               CORPUS_OPTIONS if read_only else
                               set(vars(args)) - INVOCATION_OPTIONS)
        args = reconcile_with_saved(args, saved, explicit, architecture_options(),
                                    args.pathCheckpoint)
        check_same_criterion(args, saved, args.pathCheckpoint)
        recipe = reconcile_recipe(recipe, saved.get("pase_settings"), args)
        found = ckpt.load_newest_checkpoint(args.pathCheckpoint, with_interrupted=True)
        if found is None:
            raise ConfigError(f"no checkpoint of {args.pathCheckpoint} can be read")
        check_processes(found[1], found[2], launched_ranks())
        resume = found[2]
        seed = seed if seed is not None else saved.get("random_seed")
    check_args(args, recipe, explicit)
    check_output_dirs(args)
    return RunConfig(args, recipe, seed if seed is not None else random.randint(0, 2**31 - 1),
                     resume, saved)


def check_processes(path: Path, state: dict, world_size: int) -> None:
    """A cut epoch continues only with the number of processes that began it: each process
    trained on its own share of the files, so another number would replay other batches."""
    cut = state.get("interrupted") or {}
    began = cut.get("world_size", 1) if "rngs" in cut else world_size  # older: restarted
    if began != world_size:
        launch = "python cpc/train.py ..." if began == 1 else \
            f"torchrun --nproc_per_node {began} cpc/train.py ..."
        raise ConfigError(
            f"{path} holds epoch {state['epoch']} cut after {cut['batches_done']} batches by "
            f"{began} process(es), each reading its own share of the files; {world_size} "
            f"cannot continue it exactly: resume with `{launch}`, or delete {path.name} to "
            f"resume from the last finished epoch's checkpoint")


def read_saved_args(run_dir: str) -> dict:
    args_file = Path(run_dir) / ckpt.ARGS_FILE
    if not args_file.is_file():
        raise ConfigError(f"{run_dir} holds checkpoints but no {ckpt.ARGS_FILE}")
    return ckpt.read_json(args_file)


def config_dests(config: str | None, parser: argparse.ArgumentParser) -> set[str]:
    """The options a --config file gives (the file's values count as given, like flags)."""
    return set(load_config(config, parser)[0]) if config else set()


def restore_omitted(args: argparse.Namespace, saved: dict, given: set[str],
                    restorable: set[str]) -> argparse.Namespace:
    """The options of a resumed run: every ``restorable`` option that the command line (or
    --config) does not give takes the value the run was saved with, as CPC_audio restores
    its saved flags. A switch saved on therefore stays on (it has no off form)."""
    taken = {dest: saved[dest] for dest in sorted(restorable - given) if dest in saved}
    return argparse.Namespace(**{**vars(args), **taken})


def reconcile_with_saved(args: argparse.Namespace, saved: dict, explicit: set[str],
                         architecture: set[str], run_dir: str) -> argparse.Namespace:
    """The options with the architecture of a saved run (``architecture``: the option fields of
    :func:`cpc.architecture.architecture_options`); explicit flags contradicting it are an
    error naming the option's flag."""
    taken = {}
    for dest in sorted(architecture & set(saved)):
        if dest in explicit and getattr(args, dest) != saved[dest]:
            raise ConfigError(f"{flag(dest)} {getattr(args, dest)} contradicts the run in "
                              f"{run_dir}, trained with {flag(dest)} {saved[dest]}; use another "
                              f"--pathCheckpoint or --restart")
        taken[dest] = saved[dest]
    return argparse.Namespace(**{**vars(args), **taken})


def check_same_criterion(args: argparse.Namespace, saved: dict, run_dir: str) -> None:
    """A resumed run keeps its criterion, which --supervised derives from --path_phone_data
    and --CTC (options outside the architecture groups)."""
    was, now = criterion_name(complete_with_defaults(saved)), criterion_name(args)
    if was != now:
        hint = " (--supervised with --path_phone_data trains phones)" if args.supervised else ""
        raise ConfigError(f"these flags train the {now!r} criterion but the run in {run_dir} "
                          f"trained {was!r}{hint}: give the flags it was trained with, or use "
                          f"another --pathCheckpoint or --restart")


def reconcile_recipe(recipe: dict | None, saved: dict | None,
                     args: argparse.Namespace) -> dict | None:
    """A resumed PASE run keeps its recipe; a different --config is an error."""
    if saved and recipe is None:
        return saved  # resumed without repeating --config
    if recipe and recipe != saved:
        raise ConfigError(f"the PASE settings of --config {args.config} differ from those of the "
                          f"run in {args.pathCheckpoint}")
    return recipe


def has_checkpoints(run_dir: str | None) -> bool:
    """Whether a run directory holds a checkpoint to resume from (finished or cut epoch)."""
    return bool(run_dir and (ckpt.list_checkpoints(run_dir) or ckpt.list_interrupted(run_dir)))


def check_args(args: argparse.Namespace, recipe: dict | None, explicit: set[str]) -> None:
    """Contradictory or incomplete options, refused before any work."""
    if args.pathDB is None:
        raise ConfigError("--pathDB is required: the root directory of the corpus")
    training = not (args.only_classif_metric or args.onlyCapture)
    if training and not args.pathCheckpoint:
        raise ConfigError("--pathCheckpoint is required to train: without it nothing (no "
                          "checkpoint, no log) would be saved")
    check_ranges(args)
    check_compatibility_flags(args)
    if launched_ranks() > 1 and args.allow_nan_steps:
        raise ConfigError("--allow_nan_steps cannot skip batches in lockstep across torchrun "
                          "ranks; run without it (a non-finite loss then stops the run)")
    problem = window_size_problem(args.sizeWindow, "--sizeWindow")
    if problem:
        raise ConfigError(problem)
    frames = args.sizeWindow // FRAME_SIZE
    check_supervised_args(args)
    if args.nPredicts >= frames and not recipe and not args.supervised:  # nothing predicted
        raise ConfigError(f"--nPredicts {args.nPredicts} must be smaller than the "
                          f"{frames} frames of a --sizeWindow {args.sizeWindow} window")
    if args.restart and (args.onlyCapture or args.only_classif_metric):
        raise ConfigError(f"--restart starts the run in {args.pathCheckpoint} over; "
                          f"--{'onlyCapture' if args.onlyCapture else 'only_classif_metric'} "
                          f"reads its checkpoints and changes nothing: drop --restart")
    check_probe_args(args)
    check_capture_args(args, recipe)
    check_load_paths(args)
    if recipe:
        ignored = sorted(explicit & {"learningRate", "schedulerStep", "schedulerRamp"})
        if ignored:
            raise ConfigError(f"--{', --'.join(ignored)}: a PASE workers recipe (--config "
                              f"{args.config}) sets its learning rates with encoder_lr_start, "
                              f"worker_lr_start, lr_update_interval and decay_factor; change "
                              f"them in the file")


# (dest, lowest allowed, highest allowed, whether the lowest is allowed)
NUMBER_RANGES = (
    *((dest, 1, None, True) for dest in (
        "nEpoch", "batchSizeGPU", "hiddenEncoder", "hiddenGar", "nLevelsGRU", "save_step",
        "n_process_loader", "linsep_n_epoch", "linsepBatchSizeGPU", "linsep_net_layers",
        "linsep_task_logging_step", "pase_stats_batches", "collapse_patience", "sizeWindow",
        "update_freq", "nLevelsPhone")),
    *((dest, 0, None, True) for dest in (
        "keep_checkpoints", "logging_step", "warmup_steps", "allow_nan_steps", "max_rollbacks",
        "clip_grad_norm", "limitNegsInBatch", "captureEachEpochs", "save_interval_steps",
        "save_interval_minutes")),
    *((dest, 0, None, False) for dest in (
        "learningRate", "epsilon", "linsep_lr", "linsep_epsilon", "linsep_feature_budget_gb",
        "CPCCTCLossTemp", "dist_timeout_minutes")),
    *((dest, 0, 1, True) for dest in ("beta1", "beta2", "linsep_beta1", "linsep_beta2")),
    ("rollback_lr_factor", 0, 1, False), ("collapse_cosine", 0, 1, False),
    ("collapse_context_cosine", 0, 1, False), ("collapse_saturated", 0, 1, True),
)


def check_ranges(args: argparse.Namespace) -> None:
    """Numbers out of their range (a NaN learning rate, zero epochs, a beta of 1...)."""
    for dest, low, high, low_allowed in NUMBER_RANGES:
        value = getattr(args, dest)
        if value is None:
            continue
        below = value < low if low_allowed else value <= low
        if not math.isfinite(value) or below or (high is not None and value > high) or \
                (dest.startswith(("beta", "linsep_beta")) and value >= 1):
            bound = f"{'>=' if low_allowed else '>'} {low}" + \
                ("" if high is None else f" and {'<' if 'beta' in dest else '<='} {high}")
            raise ConfigError(f"{flag(dest)} must be a finite number {bound}; got {value}")


def check_compatibility_flags(args: argparse.Namespace) -> None:
    """CPC_audio flags that parse but are not carried over: refused when they would act."""
    for flag, (_, default, instead) in NOT_CARRIED_OVER.items():
        if instead and getattr(args, flag) != default:
            raise ConfigError(f"--{flag}: {instead}")
    if args.cpc_mode == "bert":
        raise ConfigError("--cpc_mode bert: CPC_audio's masked-prediction criterion was dropped "
                          "before its release and is not carried over; train with --criterion "
                          "cpc or cpcctc")
    if args.nGPU is not None and args.nGPU > 1:
        raise ConfigError(f"--nGPU {args.nGPU}: one process drives one GPU here; run "
                          f"`torchrun --standalone --nproc_per_node {args.nGPU} cpc/train.py ...` "
                          f"with the same flags (README: Several GPUs or machines)")
    if args.nGPU is not None and args.nGPU < 0:
        raise ConfigError(f"--nGPU must be 0 (CPU) or more; got {args.nGPU}")
    if args.nGPU is not None and args.device != "auto" and \
            args.device != ("cpu" if args.nGPU == 0 else "cuda"):
        raise ConfigError(f"--nGPU {args.nGPU} contradicts --device {args.device}; give one")


def device_name(args: argparse.Namespace) -> str:
    """--device, or CPC_audio's --nGPU (0: cpu, 1: cuda)."""
    if args.nGPU is None:
        return args.device
    return "cpu" if args.nGPU == 0 else "cuda"


# The settings of --supervised, and their defaults
SUPERVISED_SETTINGS = {"CTC": False, "onEncoder": False, "nLevelsPhone": 1}
SUPERVISED_CRITERIA = ("speaker", "phone", "phone_ctc")  # what criterion_name picks for them


def check_supervised_args(args: argparse.Namespace) -> None:
    """--supervised and its settings (CPC_audio's supervised mode), and --cpc_mode none."""
    if args.criterion in SUPERVISED_CRITERIA:
        raise ConfigError(f"--criterion {args.criterion}: the supervised criteria are chosen by "
                          f"--supervised (phone with --path_phone_data, phone_ctc with --CTC)")
    if args.cpc_mode == "none" and not args.supervised:
        raise ConfigError("--cpc_mode none drops the CPC loss and leaves nothing to train: add "
                          "--supervised (speaker labels, or phones with --path_phone_data)")
    if not args.supervised:
        given = [f"--{flag}" for flag, default in SUPERVISED_SETTINGS.items()
                 if getattr(args, flag) != default]
        if given:
            raise ConfigError(f"{given[0]} sets the supervised training: add --supervised (the "
                              f"probes' settings are --CTCphones, --phone_get_encoded, "
                              f"--linsep_net_layers)")
        return
    if args.CPCCTC or args.criterion != "cpc":
        raise ConfigError(f"--supervised trains on labels; it contradicts "
                          f"{'--CPCCTC' if args.CPCCTC else '--criterion ' + args.criterion}")
    if not args.path_phone_data:
        phone_only = [f"--{flag}" for flag in ("CTC", "nLevelsPhone")
                      if getattr(args, flag) != SUPERVISED_SETTINGS[flag]]
        if phone_only:
            raise ConfigError(f"{phone_only[0]} sets the phone classifier of --supervised: "
                              f"add --path_phone_data FILE (without it the speakers are "
                              f"classified)")


def check_load_paths(args: argparse.Namespace) -> None:
    if not args.load:
        return
    for path in args.load:
        if not Path(path).exists():
            raise ConfigError(f"--load {path}: no such file or directory")
        if Path(path).is_dir() and not ckpt.list_checkpoints(path):
            raise ConfigError(f"--load {path}: the directory holds no checkpoint_<N>.pt")
    if has_checkpoints(args.pathCheckpoint) and not args.restart \
            and not args.only_classif_metric:
        raise ConfigError(f"--load initialises a new run but {args.pathCheckpoint} already "
                          f"holds checkpoints: add --restart or choose another --pathCheckpoint")


def check_probe_args(args: argparse.Namespace) -> None:
    if args.only_classif_metric and not (args.load or has_checkpoints(args.pathCheckpoint)):
        raise ConfigError("--only_classif_metric needs a trained model: a --pathCheckpoint "
                          "holding checkpoints, or --load CHECKPOINT")
    if args.CTCphones and not args.path_phone_data:
        raise ConfigError("--CTCphones needs phone labels: add --path_phone_data FILE")
    if args.CTCphones and args.phone_get_encoded:
        raise ConfigError("--phone_get_encoded cannot be combined with --CTCphones: the CTC "
                          "phone probe reads the contexts c; drop one of them")
    if (args.supervised_classif_metric or args.only_classif_metric) and \
            not (args.speaker_sep or args.path_phone_data):
        flag = "--only_classif_metric" if args.only_classif_metric else \
            "--supervised_classif_metric"
        raise ConfigError(f"{flag} needs --speaker_sep and/or --path_phone_data (what to probe)")
    if args.linsep_classif_each_epochs < 1:
        raise ConfigError("--linsep_classif_each_epochs must be at least 1")


def check_capture_args(args: argparse.Namespace, recipe: dict | None) -> None:
    parse_stats_spec(args.captureSetStats)  # refuses bad stat specs before any work
    capturing = bool(capture_kinds(args, recipe)) or bool(args.captureSetStats)
    if args.onlyCapture and not has_checkpoints(args.pathCheckpoint):
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


def check_writable(path: str, flag: str) -> None:
    """Create an output directory now, and prove it writable, rather than fail after hours."""
    check_output_dir(path, flag)
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path} is not a writable directory ({exc.strerror})") from None


def output_dirs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(flag, path) of every directory the run writes to (the run directory only when it is
    written)."""
    writes_run_dir = not (args.only_classif_metric or args.onlyCapture)
    return [(flag, path) for flag, path in (
        ("--pathCheckpoint", args.pathCheckpoint if writes_run_dir else None),
        ("--pathCaptureSave", args.pathCaptureSave),
        ("--linsep_logs_dir", args.linsep_logs_dir),
        ("--linsep_checkpoint_dir", args.linsep_checkpoint_dir)) if path]


def check_output_dirs(args: argparse.Namespace) -> None:
    """Every directory the run will write to, created and proved writable."""
    for flag, path in output_dirs(args):
        check_writable(path, flag)


def capture_kinds(args: argparse.Namespace, recipe: dict | None) -> list[str]:
    """The capture kinds the flags ask for, checked against what the run's objective (its
    criterion, or the PASE workers of ``recipe``) produces."""
    return requested_kinds(vars(args), args.captureEverything,
                           objective_capture_kinds(criterion_name(args), recipe),
                           bool(args.path_phone_data))
