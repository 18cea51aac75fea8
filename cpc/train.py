"""Train a CPC model on a LibriSpeech-format corpus.

    python cpc/train.py --pathDB DB --pathTrain train.txt --pathVal val.txt \
        --pathCheckpoint OUT --file_extension .flac

Rerunning the same command continues from the newest checkpoint in OUT, and so does
``python cpc/train.py --pathCheckpoint OUT`` alone (CPC_audio's form: the flags the run was
saved with apply unless given). Option names follow
facebookresearch/CPC_audio and its CPC-CTC fork, so existing command lines keep working.

This file wires the parts of a run: the options are in options.py, their resolution against
the run directory and their checks in run_config.py, the epoch loop in trainer.py, its
per-epoch jobs in hooks.py, the math in model.py and criterion/, the data in data/, the
file formats in utils/checkpoint.py and run_log.py.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/train.py`: import the package, not siblings
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from cpc.options import build_parser
from cpc.utils.cli import answer_help, exit_without_teardown
from cpc.utils.signals import handle_interrupts, run_command
from cpc.utils.memory import keep_freed_memory

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(build_parser(), sys.argv[1:])

import torch

from cpc.collapse_guard import CollapseGuard, CollapseRule
from cpc.criterion.objective import Objective, build_objective
from cpc.criterion.options import criterion_name
from cpc.data.corpus import CorpusData, build_capture_dataset, build_corpus_data, select_corpus
from cpc.data.loader import AudioLoader
from cpc.data.packs import AudioBatchData
from cpc.health import SATURATING_CONTEXTS, HealthMonitor
from cpc.hooks import (CaptureHook, CaptureSettings, CheckpointHook, HealthHook, ProbeHook,
                       ProbeSettings, capture_epoch, probe_model)
from cpc.model import build_model
from cpc.precision import loss_scaler, set_tf32
from cpc.probes.config import ProbeConfig
from cpc.probes.run import check_probe_corpus
from cpc.run_config import (RunConfig, capture_kinds, check_compatibility_flags,
                            device_name, output_dirs, parse_args, resolve_run)
from cpc.run_log import TensorBoard, empty_logs, truncate_logs
from cpc.trainer import (Hook, NonFiniteWatch, Resumption, Run, StepModule, TrainedState,
                         Trainer, seed_everything)
from cpc.utils import checkpoint as ckpt
from cpc.utils.constants import SAMPLE_RATE
from cpc.utils.devices import select_device
from cpc.utils.distributed import (DistInfo, PeerFailed, init_distributed, launched_ranks,
                                   on_main, shutdown_distributed)
from cpc.utils.errors import CPCError, ConfigError
from cpc.utils.files import (exclusive_lock, missing_directories, remove_empty_directories,
                             remove_stale_temp_files)
from cpc.utils.optim import Updater, build_adam, set_adam_settings
from cpc.utils.signals import StopRequest


# --------------------------------------------------------------------------------------------
# The parts of a run
# --------------------------------------------------------------------------------------------

def load_data(args: argparse.Namespace, seed: int, info: DistInfo = DistInfo()) -> CorpusData:
    """The corpus, listed once (by rank 0 under torchrun, which shares the listing), and this
    rank's share of it."""
    def select():
        selection = select_corpus(args.pathDB, args.file_extension, args.pathTrain,
                                  args.pathVal, args.path_phone_data,
                                  n_process_loader=args.n_process_loader, seed=seed,
                                  ignore_cache=args.ignore_cache,
                                  max_files=(1000, 100) if args.debug else None,
                                  bad_audio=args.bad_audio)
        return selection.shareable() if info.active else selection
    data = build_corpus_data(on_main(select, info), args.sizeWindow,
                             n_process_loader=args.n_process_loader,
                             max_size_loaded=args.max_size_loaded, seed=seed, rank=info.rank,
                             world_size=info.world_size)
    if info.is_main:
        print(f"train: {data.train.describe()}\nval:   {data.val.describe()}", flush=True)
        for name, part in (("train", data.train), ("val", data.val)):
            unused = part.unused_audio(args.samplingType if name == "train" else "sequential")
            if unused:
                print(f"warning: {name}: {unused}", file=sys.stderr, flush=True)
    return data


def load_capture_data(args: argparse.Namespace) -> tuple[AudioBatchData, list[str]]:
    data, speakers = build_capture_dataset(
        args.pathDB, args.file_extension, args.pathCaptureDS, args.path_phone_data,
        args.sizeWindow, percent=args.captureDSfreq, total=args.captureDStotNr,
        n_process_loader=args.n_process_loader, bad_audio=args.bad_audio)
    print(f"capture: {data.describe()}", flush=True)
    return data, speakers


def build_training(args: argparse.Namespace, recipe: dict | None, device: torch.device,
                   n_speakers: int, n_phones: int) -> TrainedState:
    """The model, the objective (a criterion, or the PASE workers of --config), one Adam per
    rate group of the objective on its per-epoch schedule, and fp16's loss scaler."""
    model = build_model(args).to(device)
    objective = build_objective(args, criterion_name(args), recipe,
                                dim_context=model.dim_context, dim_encoded=model.dim_encoded,
                                n_speakers=n_speakers, n_phones=n_phones)
    objective.module.to(device)
    optimizers, rates = {}, {}
    for name, group in objective.rate_groups(model).items():
        optimizers[name], rates[name] = build_adam(
            group.params, group.lr, betas=(args.beta1, args.beta2), eps=args.epsilon,
            schedule=group.schedule, warmup_steps=args.warmup_steps)
    return TrainedState(model, objective, optimizers, rates, loss_scaler(args.precision, device))


def load_initial_weights(paths: list[str], model: torch.nn.Module,
                         objective: Objective | None = None) -> None:
    """--load: the model (and, when given, the objective's) weights of a checkpoint."""
    from cpc.feature_loader import resolve_checkpoint
    path = resolve_checkpoint(paths[0])
    state = ckpt.load_checkpoint(path)
    try:
        ckpt.load_model_weights(model, state)
        if objective is not None:
            objective.load_weights(state)
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[-1].strip()[:200]
        raise ConfigError(f"--load {path}: its weights do not fit the model these flags build "
                          f"({first}); give the architecture flags it was trained with (its "
                          f"{ckpt.ARGS_FILE})") from None


def probe_settings(args: argparse.Namespace, seed: int, log_root: str | None,
                   data: CorpusData) -> ProbeSettings:
    """The probes of --speaker_sep / --path_phone_data, refused (before any training) when
    the corpus leaves a speaker probe nothing to measure."""
    probes = ["speaker", "speaker_mean"] if args.speaker_sep else []
    if args.path_phone_data:
        probes.append("phone_ctc" if args.CTCphones else "phone")
    check_probe_corpus(probes, data.selection,
                       f"--pathTrain {args.pathTrain}" if args.pathTrain else
                       f"the training files of --pathDB {args.pathDB}",
                       f"--pathVal {args.pathVal}" if args.pathVal else
                       "the validation files (a seeded 1% of the training files)",
                       ", or drop --speaker_sep")
    config = ProbeConfig(n_epochs=args.linsep_n_epoch, batch_size=args.linsepBatchSizeGPU,
                         lr=args.linsep_lr, beta1=args.linsep_beta1, beta2=args.linsep_beta2,
                         epsilon=args.linsep_epsilon, n_layers=args.linsep_net_layers,
                         logging_step=args.linsep_task_logging_step,
                         feature_budget_gb=args.linsep_feature_budget_gb, seed=seed)
    return ProbeSettings(probes=probes, config=config, extract_batch_size=args.batchSizeGPU,
                         get_encoded=args.phone_get_encoded, log_root=log_root,
                         probe_root=args.linsep_checkpoint_dir)


def capture_settings(args: argparse.Namespace, recipe: dict | None) -> CaptureSettings:
    return CaptureSettings(capture_kinds(args, recipe), args.captureSetStats,
                           args.pathCaptureSave, args.batchSizeGPU)


def health_hook(args: argparse.Namespace, run: Run, updater: Updater,
                device: torch.device) -> HealthHook:
    training = run.training
    monitor = HealthMonitor(list(updater.parts),
                            saturating_context=args.arMode in SATURATING_CONTEXTS,
                            info=run.info, seed=run.seed, device=device)
    chance = training.objective.chance_loss()
    rule = CollapseRule(args.collapse_cosine, args.collapse_context_cosine,
                        args.collapse_saturated, patience=args.collapse_patience)
    guard = CollapseGuard(args.on_collapse, rule, chance_loss=chance, training=training,
                          reseed_data=lambda n: setattr(run, "data_generation", n),
                          lr_factor=args.rollback_lr_factor, max_rollbacks=args.max_rollbacks)
    guard.keep_healthy_state()
    return HealthHook(monitor, guard)


def epoch_hooks(config: RunConfig, run: Run, updater: Updater,
                device: torch.device) -> list[Hook]:
    """The per-epoch jobs of a training run, in the order they run after each epoch."""
    args, info = config.args, run.info
    hooks: list[Hook] = [health_hook(args, run, updater, device),
                         CheckpointHook(args.save_step, args.nEpoch - 1, args.keep_checkpoints,
                                        args.save_interval_steps, args.save_interval_minutes)]
    if args.supervised_classif_metric and info.is_main:
        log_root = args.linsep_logs_dir or (str(Path(args.pathCheckpoint) / "linsep_logs")
                                            if args.pathCheckpoint else None)
        hooks.append(ProbeHook(probe_settings(args, config.seed, log_root, run.data),
                               args.linsep_classif_each_epochs, device))
    settings = capture_settings(args, config.recipe)
    if info.is_main and args.captureEachEpochs > 0 and (settings.kinds or args.captureSetStats):
        capture_data, speakers = load_capture_data(args)
        hooks.append(CaptureHook(settings, args.captureEachEpochs, capture_data, speakers,
                                 device))
    return hooks


# --------------------------------------------------------------------------------------------
# The three modes: train, probe once, capture once
# --------------------------------------------------------------------------------------------

def train(argv: list[str]) -> dict:
    """Train as the options say (one process, or one rank of torchrun); returns the logs.
    Rank 0 resolves the run (the checkpoint to resume from, the seed) for every rank and holds
    the run directory's lock for the whole run."""
    args, _ = parse_args(argv)
    check_compatibility_flags(args)  # --nGPU: before it picks a device
    device = prepare_device(args)
    info, device = init_distributed(device, args.dist_timeout_minutes)
    try:
        config = on_main(lambda: resolve_run(argv), info)
        with exclusive_lock(config.args.pathCheckpoint if info.is_main else None, "training"), \
                StopRequest() as signals:
            return train_process(config, info, device, signals)
    finally:
        shutdown_distributed()


def prepare_device(args: argparse.Namespace) -> torch.device:
    """The device of --device / --nGPU, with its process-wide settings: on CPU the allocator
    keeps freed memory; on CUDA, TF32 (unless --no_tf32) and cuDNN's autotuner (unless
    --deterministic); one process with several visible GPUs gets a warning."""
    device = select_device(device_name(args))
    if device.type == "cpu":
        keep_freed_memory()
        return device
    set_tf32(not args.no_tf32)
    torch.backends.cudnn.benchmark = not args.deterministic
    visible = torch.cuda.device_count()
    if visible > 1 and launched_ranks() == 1:
        print(f"warning: {visible} GPUs are visible but this single process trains on one; to "
              f"train on all of them run `torchrun --standalone --nproc_per_node {visible} "
              f"cpc/train.py ...` with the same flags", file=sys.stderr, flush=True)
    return device


def start_state(config: RunConfig, training: TrainedState, train_loader: AudioLoader,
                info: DistInfo) -> tuple[dict, Resumption, int]:
    """The run log, where training starts, and the data order (collapse rollbacks so far):
    from the newest checkpoint, or from --load, or fresh."""
    args, resume = config.args, config.resume
    if resume is None:
        if args.load and info.is_main:  # under torchrun DDP copies rank 0's weights to the rest
            load_initial_weights(args.load, training.model,
                                 training.objective if args.loadCriterion else None)
        return empty_logs(), Resumption(), 0
    training.load(resume)
    cut = resume.get("interrupted")  # epoch N in progress, else N done
    if cut is not None and "rngs" not in cut:
        print(f"warning: the cut epoch {resume['epoch']} was saved by an older version, whose "
              f"data order this one cannot replay: epoch {resume['epoch']} starts again from "
              f"its first batch", file=sys.stderr, flush=True)
        cut = None
        start_epoch = resume["epoch"]
    else:
        start_epoch = resume["epoch"] + (0 if cut else 1)
    logs_path = Path(args.pathCheckpoint) / ckpt.LOGS_FILE
    logs = truncate_logs(ckpt.read_json(logs_path), start_epoch - 1) if logs_path.is_file() \
        else empty_logs()
    global_step = resume.get("global_step", start_epoch * len(train_loader))
    # (a checkpoint older than the hooks' states: its data orders drawn anew are its rollbacks)
    hook_states = resume.get("hooks", {"health": {"rollbacks": resume.get("data_generation", 0)}})
    resumption = Resumption(start_epoch, cut, global_step, hook_states)
    if start_epoch >= args.nEpoch:
        if info.is_main:
            print(f"nothing to train: the run in {args.pathCheckpoint} has done its "
                  f"{start_epoch} epochs (--nEpoch {args.nEpoch}); raise --nEpoch to train on",
                  flush=True)
        return logs, resumption, resume.get("data_generation", 0)
    where = f" (after its batch {cut['batches_done']})" if cut else ""
    if info.is_main:
        print(f"resuming {args.pathCheckpoint} at epoch {start_epoch}{where}", flush=True)
    apply_changed_options(config.saved or {}, args, training, logs=logs,
                          start_epoch=start_epoch,
                          processes=(resume.get("world_size", 1), info.world_size),
                          report=info.is_main)
    return logs, resumption, resume.get("data_generation", 0)


RESUMABLE_OPTIMISER_FLAGS = ("learningRate", "beta1", "beta2", "epsilon", "schedulerStep",
                             "schedulerRamp")
RESUMABLE_TRAINING_FLAGS = ("update_freq", "precision", "no_tf32")
# The flags that decide the files, windows, labels and batches of an epoch. Omitted on resume
# they keep the run's values (run_config.restore_omitted); given otherwise, they are applied.
RESUMABLE_DATA_FLAGS = ("pathDB", "file_extension", "pathTrain", "pathVal", "path_phone_data",
                        "sizeWindow", "max_size_loaded", "batchSizeGPU", "samplingType",
                        "random_seed", "debug")
PATH_FLAGS = ("pathDB", "pathTrain", "pathVal", "path_phone_data")


def changed_flag(flag: str, was: object, now: object) -> bool:
    """Whether ``now`` differs from the saved ``was`` (paths compared once resolved, so that
    ``corpus/`` and ``./corpus`` are one directory)."""
    if flag in PATH_FLAGS and isinstance(was, str) and isinstance(now, str):
        return os.path.realpath(was) != os.path.realpath(now)
    return was != now


def validation_flags(changed: dict, args: argparse.Namespace) -> list[str]:
    """The changed data flags that change the validation losses: its files, windows, labels
    and batches (the negatives are drawn in the batch), and, when it is drawn from the
    training files (no --pathVal), the training list."""
    return [flag for flag in changed if flag in RESUMABLE_DATA_FLAGS and flag != "samplingType"
            and not (flag == "pathTrain" and args.pathVal and "pathVal" not in changed)]


def apply_changed_options(saved: dict, args: argparse.Namespace, training: TrainedState, *,
                          logs: dict, start_epoch: int, processes: tuple[int, int],
                          report: bool = True) -> None:
    """Optimiser, schedule, training and data flags changed since the run was saved, and the
    number of processes (``processes``: then, now), apply from the resumed epoch on (the rate
    keeps any collapse-guard scaling); each change is printed and logged. A changed
    validation set restarts the election of the best checkpoint (see restart_best_tracking)."""
    changed = {flag: (saved[flag], getattr(args, flag))
               for flag in RESUMABLE_OPTIMISER_FLAGS + RESUMABLE_TRAINING_FLAGS +
               RESUMABLE_DATA_FLAGS
               if flag in saved and changed_flag(flag, saved[flag], getattr(args, flag))}
    if not training.objective.uses_rate_flags:  # PASE: the recipe's rates, refused above
        changed = {f: v for f, v in changed.items() if f not in RESUMABLE_OPTIMISER_FLAGS}
    if any(flag in RESUMABLE_OPTIMISER_FLAGS for flag in changed):
        lr_scale = args.learningRate / saved["learningRate"] if "learningRate" in changed \
            else 1.0
        training.rates["model"].scale(lr_scale)
        set_adam_settings(training.optimizers["model"], (args.beta1, args.beta2), args.epsilon)
    if processes[0] != processes[1]:
        changed["processes"] = processes
    for flag, (was, now) in changed.items():
        if report:
            name = "processes:" if flag == "processes" else f"--{flag}"
            print(f"{name} {now} (the run had {was}): applied from epoch {start_epoch}",
                  flush=True)
        logs.setdefault("option_changes", []).append(
            {"epoch": start_epoch, "flag": flag, "was": was, "now": now})
    flags = validation_flags(changed, args)
    if flags:
        restart_best_tracking(logs, flags, start_epoch, report)


def restart_best_tracking(logs: dict, flags: list[str], start_epoch: int,
                          report: bool) -> None:
    """Validation losses of different validation sets are not comparable: the best checkpoint
    is elected anew among the epochs from ``start_epoch`` on (``best_from_epoch`` in the log);
    the current one stays until the first of them replaces it."""
    logs["best_from_epoch"] = start_epoch
    if report:
        print(f"warning: {', '.join('--' + flag for flag in flags)} changed the validation "
              f"set: checkpoint_best.pt is elected anew among the epochs "
              f"from {start_epoch} on, whose validation losses are not compared with earlier "
              f"ones", file=sys.stderr, flush=True)


def prepare_run_dir(config: RunConfig) -> None:
    """--restart empties the run directory of the old run's checkpoints, logs, TensorBoard
    curves and probe logs (once every check passed and the data loaded); then the args are
    written and the temp files of killed writes removed."""
    run_dir = Path(config.args.pathCheckpoint)
    if config.args.restart:
        for _, path in ckpt.list_checkpoints(run_dir) + ckpt.list_interrupted(run_dir):
            path.unlink()
        (run_dir / ckpt.LOGS_FILE).unlink(missing_ok=True)
        ckpt.best_checkpoint_path(run_dir).unlink(missing_ok=True)
        for name in ("tensorboard", "linsep_logs"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    remove_stale_temp_files(run_dir)
    ckpt.write_json(run_dir / ckpt.ARGS_FILE, config.saved_args())


def effective_batch(args: argparse.Namespace, info: DistInfo) -> dict:
    """What one update sees: windows per batch x processes x accumulated batches."""
    windows = args.batchSizeGPU * info.world_size * args.update_freq
    return {"windows": windows, "per_batch": args.batchSizeGPU, "processes": info.world_size,
            "update_freq": args.update_freq,
            "audio_seconds": windows * args.sizeWindow / SAMPLE_RATE}


def log_effective_batch(args: argparse.Namespace, info: DistInfo, logs: dict,
                        report: bool) -> None:
    """The effective batch into the run log, and (``report``) one console line."""
    batch = logs["effective_batch"] = effective_batch(args, info)
    if report:
        print(f"update: {batch['per_batch']} windows x {batch['processes']} process(es) x "
              f"{batch['update_freq']} accumulated batch(es) = {batch['windows']} windows "
              f"({batch['audio_seconds']:.1f} s of audio); precision {args.precision}",
              flush=True)


def train_process(config: RunConfig, info: DistInfo, device: torch.device,
                  signals: StopRequest) -> dict:
    """The training of one process. Under torchrun every rank trains on its own share of the
    files, DDP averages the gradients, and only rank 0 writes files or runs probes and
    captures (the other ranks wait)."""
    args = config.args
    seed_everything(config.seed, args.deterministic)
    data = load_data(args, config.seed, info)
    training = build_training(args, config.recipe, device, len(data.speakers), data.n_phones)
    run_dir = args.pathCheckpoint if info.is_main else None  # rank 0 writes, the others read
    train_loader = data.train.getDataLoader(args.batchSizeGPU, args.samplingType,
                                            randomOffset=True)
    logs, resumption, generation = start_state(config, training, train_loader, info)
    if config.resume is None and info.is_main:  # (DDP copies rank 0's to the other ranks)
        training.objective.prepare(lambda: data.train.getDataLoader(
            args.batchSizeGPU, args.samplingType, randomOffset=False))
    updater = Updater(training.optimizers, training.rates, training.parameter_parts(),
                      clip_grad_norm=args.clip_grad_norm, update_freq=args.update_freq,
                      scaler=training.scaler)
    run = Run(training, data, logs, board=TensorBoard(run_dir), info=info, run_dir=run_dir,
              seed=config.seed, data_generation=generation)
    log_effective_batch(args, info, logs, info.is_main and resumption.start_epoch < args.nEpoch)
    hooks: list[Hook] = []
    try:
        module = step_module(training, info, device, args.precision,  # DDP: rank 0's weights
                             args.supervised and args.onEncoder)
        hooks = epoch_hooks(config, run, updater, device)  # (the guard copies them)
        if run_dir:  # every check passed: the run directory is written from here on
            prepare_run_dir(config)
        trainer = Trainer(run, module, updater, train_loader=train_loader,
                          val_loader=validation_loader(args, training, data), device=device,
                          hooks=hooks, nonfinite=NonFiniteWatch(args.allow_nan_steps, device),
                          logging_step=args.logging_step, signals=signals)
        logs = trainer.fit(args.nEpoch, resumption)
    finally:
        close_run(run, hooks)
    if run_dir:
        print(f"checkpoints and logs: {run_dir}  (TensorBoard: tensorboard --logdir "
              f"{Path(run_dir) / 'tensorboard'})", flush=True)
    return logs


def step_module(training: TrainedState, info: DistInfo, device: torch.device,
                precision: str, context_unused: bool = False) -> torch.nn.Module:
    """Model and objective as one module; wrapped in DDP under torchrun, told of parameters
    without gradients: the objective's (e.g. the workers a batch leaves out), or the context
    network when the loss reads the encoder only (``context_unused``: --supervised
    --onEncoder)."""
    module: torch.nn.Module = StepModule(training.model, training.objective, precision)
    if info.active:
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=training.objective.has_unused_parameters or context_unused)
    return module


def validation_loader(args: argparse.Namespace, training: TrainedState,
                      data: CorpusData) -> AudioLoader:
    return data.val.getDataLoader(args.batchSizeGPU, training.objective.validation_sampling,
                                  randomOffset=False)


def close_run(run: Run, hooks: list[Hook]) -> None:
    run.board.close()
    run.data.close()
    for hook in hooks:
        hook.close()


def single_process(flag: str) -> None:
    if launched_ranks() > 1:
        raise ConfigError(f"{flag} runs in one process: run it without torchrun")


def only_classif_metric(config: RunConfig) -> dict[str, float]:
    """--only_classif_metric: probe a trained model once; the run directory is left untouched."""
    args = config.args
    single_process("--only_classif_metric")
    device = prepare_device(args)
    data = load_data(args, config.seed)
    model = build_model(args).to(device)
    if config.resume is not None:
        ckpt.load_model_weights(model, config.resume)
        epoch = config.resume["epoch"]
    else:
        load_initial_weights(args.load, model)
        epoch = 0
    try:
        return probe_model(probe_settings(args, config.seed, args.linsep_logs_dir, data), model,
                           data, device, epoch)
    finally:
        data.close()


def only_capture(config: RunConfig) -> dict[str, float]:
    """--onlyCapture: capture once with the newest checkpoint; the run directory is untouched."""
    args = config.args
    single_process("--onlyCapture")
    device = prepare_device(args)
    data, speakers = load_capture_data(args)
    if args.supervised:  # its kinds need no criterion (capture_kinds), whose classes may differ
        model, criterion = build_model(args).to(device), None
        ckpt.load_model_weights(model, config.resume)
    else:
        training = build_training(args, config.recipe, device, len(speakers), 0)
        training.load(config.resume, with_optimizers=False)
        model, criterion = training.model, training.objective.capture_module
    try:
        return capture_epoch(capture_settings(args, config.recipe), model, criterion=criterion,
                             data=data, speakers=speakers, epoch=config.resume["epoch"],
                             device=device)
    finally:
        data.close()


def main(argv: list[str] | None = None) -> int:
    """Train, probe or capture as the flags say; a user error is one line and exit status 2,
    and the output folders this invocation created are removed when it left them empty."""
    argv = sys.argv[1:] if argv is None else argv
    created: list[Path] = []
    try:
        args, _ = parse_args(argv)
        created = [new for _, path in output_dirs(args) for new in missing_directories(path)]
        if args.only_classif_metric:
            only_classif_metric(resolve_run(argv))
        elif args.onlyCapture:
            only_capture(resolve_run(argv))
        else:
            train(argv)
    except PeerFailed:  # rank 0 prints the error
        return 2
    except CPCError as exc:
        remove_empty_directories(created)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
