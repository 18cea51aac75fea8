"""Train a CPC model on a LibriSpeech-format corpus.

    python cpc/train.py --pathDB DB --pathTrain train.txt --pathVal val.txt \
        --pathCheckpoint OUT --file_extension .flac

Rerunning the same command continues from the newest checkpoint in OUT. Option names follow
facebookresearch/CPC_audio and its CPC-CTC fork, so existing command lines keep working.

This file turns options into a run and wires its parts: the options themselves are in
options.py, the epoch loop in trainer.py, its per-epoch jobs in hooks.py, the math in model.py
and criterion/, the data in dataset.py, the file formats in utils/checkpoint.py and run_log.py.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/train.py`: import the package, not siblings
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch

from cpc.capture.writer import requested_kinds
from cpc.collapse_guard import CollapseGuard, CollapseRule
from cpc.config_file import load_config
from cpc.criterion import build_criterion
from cpc.criterion.workers import build_workers, check_sampling, estimate_target_stats
from cpc.dataset import AudioBatchData, CorpusData, build_capture_dataset, build_datasets
from cpc.eval.linear_separability import ProbeConfig
from cpc.health import SATURATING_CONTEXTS, HealthMonitor
from cpc.hooks import (CaptureHook, CaptureSettings, CheckpointHook, HealthHook, ProbeHook,
                       ProbeSettings, capture_epoch, probe_model)
from cpc.model import build_model
from cpc.objectives import CriterionObjective, TrainStep, WorkerObjective
from cpc.options import ARCHITECTURE_GROUPS, build_parser, explicit_dests, group_dests
from cpc.run_log import TensorBoard, empty_logs, truncate_logs
from cpc.stats import parse_stats_spec
from cpc.trainer import (Hook, NanBudget, Resumption, Run, Trainer, Training,
                         restore_rng_state, seed_everything)
from cpc.utils import checkpoint as ckpt
from cpc.utils.constants import FRAME_SIZE
from cpc.utils.devices import select_device
from cpc.utils.distributed import DistInfo, broadcast_int, init_distributed, shutdown_distributed
from cpc.utils.errors import CPCError, ConfigError
from cpc.utils.files import remove_stale_temp_files
from cpc.utils.optim import Updater, build_adam, build_optimizer, pase_lr_factor


# --------------------------------------------------------------------------------------------
# From the command line to a run
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict | None]:
    """The options as given (``--config`` fills defaults, the command line wins) and the PASE
    recipe of that file when it names workers. Reads the config file only."""
    parser = build_parser()
    config_path = parser.parse_known_args(argv)[0].config
    pase = None
    if config_path:
        defaults, pase = load_config(config_path, parser)
        parser.set_defaults(save_step=pase["ckpt_save_interval"],
                            keep_checkpoints=pase["num_ckpts_keep"], **defaults)
    args = parser.parse_args(argv)
    return args, pase if pase and any(pase["workers_config"].values()) else None


@dataclass(frozen=True)
class RunConfig:
    """One run, resolved against its run directory: what ``main`` acts on."""

    args: argparse.Namespace  # the options, with the architecture of a resumed run
    pase: dict | None  # the PASE recipe (workers and their schedule), or None for CPC
    seed: int  # --random_seed, the resumed run's, or drawn
    resume: dict | None  # the newest checkpoint of --pathCheckpoint, when resuming

    def saved_args(self) -> dict:
        """``checkpoint_args.json``: the options plus what was derived from them."""
        return {**vars(self.args), "random_seed": self.seed, "pase_settings": self.pase}


def resolve_run(argv: list[str]) -> RunConfig:
    """Parse, take a saved run's architecture and state, check everything before any work."""
    args, pase = parse_args(argv)
    resume, seed = None, args.random_seed
    if args.pathCheckpoint and not args.restart and ckpt.list_checkpoints(args.pathCheckpoint):
        saved = read_saved_args(args.pathCheckpoint)
        parser = build_parser()
        args = reconcile_with_saved(args, saved, explicit_dests(parser, argv),
                                    group_dests(parser, ARCHITECTURE_GROUPS), args.pathCheckpoint)
        pase = reconcile_pase(pase, saved.get("pase_settings"), args)
        found = ckpt.load_newest_checkpoint(args.pathCheckpoint)
        if found is None:
            raise ConfigError(f"no checkpoint of {args.pathCheckpoint} can be read")
        resume = found[2]
        seed = seed if seed is not None else saved.get("random_seed")
    check_args(args, pase)
    check_output_dirs(args)
    return RunConfig(args, pase, seed if seed is not None else random.randint(0, 2**31 - 1),
                     resume)


def read_saved_args(run_dir: str) -> dict:
    args_file = Path(run_dir) / ckpt.ARGS_FILE
    if not args_file.is_file():
        raise ConfigError(f"{run_dir} holds checkpoints but no {ckpt.ARGS_FILE}")
    return ckpt.read_json(args_file)


def reconcile_with_saved(args: argparse.Namespace, saved: dict, explicit: set[str],
                         architecture: set[str], run_dir: str) -> argparse.Namespace:
    """The options with the architecture of a saved run; explicit flags contradicting it are an
    error."""
    taken = {}
    for dest in sorted(architecture & set(saved)):
        if dest in explicit and getattr(args, dest) != saved[dest]:
            raise ConfigError(f"--{dest} {getattr(args, dest)} contradicts the run in {run_dir}, "
                              f"trained with --{dest} {saved[dest]}; use another "
                              f"--pathCheckpoint or --restart")
        taken[dest] = saved[dest]
    return argparse.Namespace(**{**vars(args), **taken})


def reconcile_pase(pase: dict | None, saved: dict | None, args: argparse.Namespace) -> dict | None:
    """A resumed PASE run keeps its recipe; a different --config is an error."""
    if saved and pase is None:
        return saved  # resumed without repeating --config
    if pase and pase != saved:
        raise ConfigError(f"the PASE settings of --config {args.config} differ from those of the "
                          f"run in {args.pathCheckpoint}")
    return pase


def has_checkpoints(run_dir: str | None) -> bool:
    return bool(run_dir and ckpt.list_checkpoints(run_dir))


def check_args(args: argparse.Namespace, pase: dict | None) -> None:
    """Contradictory or incomplete options, refused before any work."""
    if args.pathDB is None:
        raise ConfigError("--pathDB is required: the root directory of the corpus")
    if args.nPredicts < 1 or args.negativeSamplingExt < 1:
        raise ConfigError("--nPredicts and --negativeSamplingExt must be positive")
    frames = args.sizeWindow // FRAME_SIZE
    if args.nPredicts >= frames and not pase:  # PASE workers predict nothing
        raise ConfigError(f"--nPredicts {args.nPredicts} must be smaller than the "
                          f"{frames} frames of a --sizeWindow {args.sizeWindow} window")
    if args.restart and (args.onlyCapture or args.only_classif_metric):
        raise ConfigError(f"--restart starts the run in {args.pathCheckpoint} over; "
                          f"--{'onlyCapture' if args.onlyCapture else 'only_classif_metric'} "
                          f"reads its checkpoints and changes nothing: drop --restart")
    check_probe_args(args)
    check_capture_args(args, pase)
    if args.load and has_checkpoints(args.pathCheckpoint) and not args.restart \
            and not args.only_classif_metric:
        raise ConfigError(f"--load initialises a new run but {args.pathCheckpoint} already "
                          f"holds checkpoints: add --restart or choose another --pathCheckpoint")


def check_probe_args(args: argparse.Namespace) -> None:
    if args.only_classif_metric and not (args.load or has_checkpoints(args.pathCheckpoint)):
        raise ConfigError("--only_classif_metric needs a trained model: a --pathCheckpoint "
                          "holding checkpoints, or --load CHECKPOINT")
    if args.CTCphones and not args.path_phone_data:
        raise ConfigError("--CTCphones needs phone labels: add --path_phone_data FILE")
    if (args.supervised_classif_metric or args.only_classif_metric) and \
            not (args.speaker_sep or args.path_phone_data):
        flag = "--only_classif_metric" if args.only_classif_metric else \
            "--supervised_classif_metric"
        raise ConfigError(f"{flag} needs --speaker_sep and/or --path_phone_data (what to probe)")
    if args.linsep_classif_each_epochs < 1:
        raise ConfigError("--linsep_classif_each_epochs must be at least 1")


def check_capture_args(args: argparse.Namespace, pase: dict | None) -> None:
    parse_stats_spec(args.captureSetStats)  # refuses bad stat specs before any work
    capturing = bool(capture_kinds(args, pase)) or bool(args.captureSetStats)
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


# --------------------------------------------------------------------------------------------
# The parts of a run
# --------------------------------------------------------------------------------------------

def load_data(args: argparse.Namespace, seed: int, verbose: bool = True) -> CorpusData:
    data = build_datasets(args.pathDB, args.file_extension, args.pathTrain, args.pathVal,
                          args.path_phone_data, args.sizeWindow, args.n_process_loader,
                          args.max_size_loaded, seed, args.ignore_cache,
                          max_files=(1000, 100) if args.debug else None)
    if verbose:
        print(f"train: {data.train.describe()}\nval:   {data.val.describe()}", flush=True)
    return data


def load_capture_data(args: argparse.Namespace) -> tuple[AudioBatchData, list[str]]:
    data, speakers = build_capture_dataset(
        args.pathDB, args.file_extension, args.pathCaptureDS, args.path_phone_data,
        args.sizeWindow, args.captureDSfreq, args.captureDStotNr, args.n_process_loader)
    print(f"capture: {data.describe()}", flush=True)
    return data, speakers


def criterion_name(args: argparse.Namespace) -> str:
    """The registered criterion to train: --criterion, or cpcctc for the fork's --CPCCTC."""
    if args.CPCCTC and args.criterion not in ("cpc", "cpcctc"):
        raise ConfigError(f"--CPCCTC selects the cpcctc criterion; it contradicts --criterion "
                          f"{args.criterion}")
    return "cpcctc" if args.CPCCTC else args.criterion


def build_training(args: argparse.Namespace, pase: dict | None, device: torch.device,
                   n_speakers: int, n_phones: int) -> Training:
    """The model and, for CPC / CPC-CTC, one Adam over model and criterion; for PASE workers
    (from --config), one Adam for the encoder and one per worker, on PASE's decay schedule."""
    model = build_model(args).to(device)
    if not pase:
        criterion = build_criterion(criterion_name(args), args,
                                    dim_context=model.dim_context,
                                    dim_encoded=model.dim_encoded, n_speakers=n_speakers,
                                    n_phones=n_phones).to(device)
        optimizer, scheduler = build_optimizer(
            list(model.parameters()) + list(criterion.parameters()), args.learningRate,
            args.beta1, args.beta2, args.epsilon, args.schedulerRamp, args.schedulerStep)
        return Training(model, CriterionObjective(criterion), {"model": optimizer},
                        {"model": scheduler})
    workers = build_workers(pase["workers_config"], model.dim_encoded).to(device)
    check_sampling(workers, args.samplingType)
    groups = {"model": (model.parameters(), pase["encoder_lr_start"])}
    groups.update({f"worker_{name}": (worker.parameters(), pase["worker_lr_start"])
                   for name, worker in workers.items()})
    built = {name: build_adam(params, lr, args.beta1, args.beta2, args.epsilon,
                              lambda epoch: pase_lr_factor(epoch, pase["lr_update_interval"],
                                                           pase["decay_factor"]))
             for name, (params, lr) in groups.items()}
    return Training(model, WorkerObjective(workers),
                    {name: pair[0] for name, pair in built.items()},
                    {name: pair[1] for name, pair in built.items()})


def load_initial_weights(paths: list[str], model: torch.nn.Module,
                         criterion: torch.nn.Module | None = None) -> None:
    """--load: the model (and, when given, criterion) weights of a checkpoint."""
    from cpc.feature_loader import resolve_checkpoint
    state = ckpt.load_checkpoint(resolve_checkpoint(paths[0]))
    model.load_state_dict(state["gEncoder"])
    if criterion is not None:
        criterion.load_state_dict(state["cpcCriterion"])


def probe_settings(args: argparse.Namespace, seed: int, log_root: str | None) -> ProbeSettings:
    probes = ["speaker", "speaker_mean"] if args.speaker_sep else []
    if args.path_phone_data:
        probes.append("phone_ctc" if args.CTCphones else "phone")
    config = ProbeConfig(args.linsep_n_epoch, args.linsepBatchSizeGPU, args.linsep_lr,
                         args.linsep_beta1, args.linsep_beta2, args.linsep_epsilon,
                         args.linsep_net_layers, args.linsep_task_logging_step,
                         args.linsep_feature_budget_gb, seed)
    return ProbeSettings(probes, config, args.batchSizeGPU, args.phone_get_encoded, log_root,
                         args.linsep_checkpoint_dir)


def capture_kinds(args: argparse.Namespace, pase: dict | None) -> list[str]:
    return requested_kinds(vars(args), args.captureEverything, criterion_name(args) == "cpcctc",
                           bool(args.path_phone_data), has_criterion=not pase)


def capture_settings(args: argparse.Namespace, pase: dict | None) -> CaptureSettings:
    return CaptureSettings(capture_kinds(args, pase), args.captureSetStats, args.pathCaptureSave,
                           args.batchSizeGPU)


def health_hook(args: argparse.Namespace, seed: int, training: Training, updater: Updater,
                data: CorpusData, logs: dict, info: DistInfo) -> HealthHook:
    monitor = HealthMonitor(args.logging_step, list(updater.parts),
                            args.arMode in SATURATING_CONTEXTS, info, seed=seed)
    chance = getattr(training.criterion, "chance_loss", lambda: None)()  # PASE: no chance level
    guard = CollapseGuard(
        args.on_collapse, CollapseRule(args.collapse_cosine, patience=args.collapse_patience),
        chance, training, lambda n: data.train.rng.seed(seed + 7919 * n), args.rollback_lr_factor,
        args.max_rollbacks, rollbacks=sum(e["action"] == "rollback"
                                          for e in logs.get("collapse_events", [])))
    guard.keep_healthy_state()
    return HealthHook(monitor, guard)


def epoch_hooks(config: RunConfig, training: Training, updater: Updater, data: CorpusData,
                logs: dict, info: DistInfo, device: torch.device) -> list[Hook]:
    """The per-epoch jobs of a training run, in the order they run after each epoch."""
    args = config.args
    hooks: list[Hook] = [health_hook(args, config.seed, training, updater, data, logs, info),
                         CheckpointHook(args.save_step, args.nEpoch - 1, args.keep_checkpoints)]
    if args.supervised_classif_metric and info.is_main:
        log_root = args.linsep_logs_dir or (str(Path(args.pathCheckpoint) / "linsep_logs")
                                            if args.pathCheckpoint else None)
        hooks.append(ProbeHook(probe_settings(args, config.seed, log_root),
                               args.linsep_classif_each_epochs, device))
    settings = capture_settings(args, config.pase)
    if info.is_main and args.captureEachEpochs > 0 and (settings.kinds or args.captureSetStats):
        capture_data, speakers = load_capture_data(args)
        hooks.append(CaptureHook(settings, args.captureEachEpochs, capture_data, speakers,
                                 device))
    return hooks


# --------------------------------------------------------------------------------------------
# The three modes: train, probe once, capture once
# --------------------------------------------------------------------------------------------

def train(config: RunConfig) -> dict:
    """Train as the options say (one process, or one rank of torchrun); returns the logs."""
    info, device = init_distributed(select_device(config.args.device))
    try:
        return train_process(config, info, device)
    finally:
        shutdown_distributed()


def start_state(config: RunConfig, training: Training, data: CorpusData) -> tuple[dict, Resumption]:
    """The run log and first epoch: from the newest checkpoint, or from --load, or fresh."""
    args, resume = config.args, config.resume
    if resume is None:
        if args.load:
            load_initial_weights(args.load, training.model,
                                 training.criterion if args.loadCriterion else None)
        return empty_logs(), Resumption()
    training.load(resume)
    restore_rng_state(resume["rng"], data)
    cut = resume.get("interrupted")  # written on a stop: epoch N in progress, else N done
    start_epoch = resume["epoch"] + (0 if cut else 1)
    logs_path = Path(args.pathCheckpoint) / ckpt.LOGS_FILE
    logs = truncate_logs(ckpt.read_json(logs_path), start_epoch - 1) if logs_path.is_file() \
        else empty_logs()
    where = f" (after its batch {cut['batches_done']})" if cut else ""
    print(f"resuming {args.pathCheckpoint} at epoch {start_epoch}{where}", flush=True)
    return logs, Resumption(start_epoch, cut)


def prepare_run_dir(config: RunConfig) -> None:
    """--restart empties the run directory (after every check passed); then the args are
    written and the temp files of killed writes removed."""
    run_dir = Path(config.args.pathCheckpoint)
    if config.args.restart:
        for _, path in ckpt.list_checkpoints(run_dir):
            path.unlink()
        (run_dir / ckpt.LOGS_FILE).unlink(missing_ok=True)
    remove_stale_temp_files(run_dir)
    ckpt.write_json(run_dir / ckpt.ARGS_FILE, config.saved_args())


def train_process(config: RunConfig, info: DistInfo, device: torch.device) -> dict:
    """The training of one process. Under torchrun every rank draws the same batches and takes
    its share, DDP averages the gradients, and only rank 0 writes files or runs probes and
    captures (the other ranks wait)."""
    args = config.args
    if info.active and args.allow_nan_steps:
        raise ConfigError("--allow_nan_steps cannot skip batches in lockstep across torchrun "
                          "ranks yet; run without it (a non-finite loss then stops the run)")
    config = RunConfig(args, config.pase, broadcast_int(config.seed, info, device), config.resume)
    seed_everything(config.seed, args.deterministic)
    data = load_data(args, config.seed, verbose=info.is_main)
    training = build_training(args, config.pase, device, len(data.speakers), data.n_phones)
    run_dir = args.pathCheckpoint if info.is_main else None  # rank 0 writes, the others read
    if run_dir:
        prepare_run_dir(config)
    logs, resumption = start_state(config, training, data)
    if training.workers is not None and config.resume is None:
        print(f"estimating the workers' target statistics on {args.pase_stats_batches} batches",
              flush=True)
        estimate_target_stats(training.workers, data.train.getDataLoader(
            args.batchSizeGPU, args.samplingType, False), args.pase_stats_batches)
    updater = Updater(training.optimizers, training.schedulers, training.parameter_parts(),
                      args.clip_grad_norm, args.warmup_steps)
    hooks = epoch_hooks(config, training, updater, data, logs, info, device)
    run = Run(training, data, logs, TensorBoard(run_dir), info, run_dir)
    try:
        trainer = Trainer(run, step_module(training, info, device), updater,
                          data.train.getDataLoader(args.batchSizeGPU, args.samplingType, True,
                                                   rank=info.rank, world_size=info.world_size),
                          validation_loader(args, training, data, info), device, hooks,
                          NanBudget(args.allow_nan_steps), args.logging_step)
        logs = trainer.fit(args.nEpoch, resumption)
    finally:
        close_run(run, hooks)
    if run_dir:
        print(f"checkpoints and logs: {run_dir}  (TensorBoard: tensorboard --logdir "
              f"{Path(run_dir) / 'tensorboard'})", flush=True)
    return logs


def step_module(training: Training, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """Model and objective as one module; wrapped in DDP under torchrun."""
    module: torch.nn.Module = TrainStep(training.model, training.objective)
    if info.active:
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=training.workers is not None)
    return module


def validation_loader(args: argparse.Namespace, training: Training, data: CorpusData,
                      info: DistInfo):
    # PASE classifiers need several speakers per batch, which sequential windows rarely have
    sampling = "uniform" if training.workers is not None else "sequential"
    return data.val.getDataLoader(args.batchSizeGPU, sampling, False, rank=info.rank,
                                  world_size=info.world_size)


def close_run(run: Run, hooks: list[Hook]) -> None:
    run.board.close()
    run.data.close()
    for hook in hooks:
        if isinstance(hook, CaptureHook):
            hook.data.close()


def only_classif_metric(config: RunConfig) -> dict[str, float]:
    """--only_classif_metric: probe a trained model once; the run directory is left untouched."""
    args = config.args
    device = select_device(args.device)
    data = load_data(args, config.seed)
    model = build_model(args).to(device)
    if config.resume is not None:
        model.load_state_dict(config.resume["gEncoder"])
        epoch = config.resume["epoch"]
    else:
        load_initial_weights(args.load, model)
        epoch = 0
    try:
        return probe_model(probe_settings(args, config.seed, args.linsep_logs_dir), model, data,
                           device, epoch)
    finally:
        data.close()


def only_capture(config: RunConfig) -> dict[str, float]:
    """--onlyCapture: capture once with the newest checkpoint; the run directory is untouched."""
    args = config.args
    device = select_device(args.device)
    data, speakers = load_capture_data(args)
    training = build_training(args, config.pase, device, len(speakers), 0)
    training.load(config.resume, with_optimizers=False)
    try:
        return capture_epoch(capture_settings(args, config.pase), training.model,
                             training.criterion, data, speakers, config.resume["epoch"], device)
    finally:
        data.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = resolve_run(argv)
        if config.args.only_classif_metric:
            only_classif_metric(config)
        elif config.args.onlyCapture:
            only_capture(config)
        else:
            train(config)
    except CPCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
