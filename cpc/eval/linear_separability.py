r"""Linear-separability probes: speaker and phone classifiers trained on frozen features, or
with the model fine-tuned (``--unfrozen``).

Used three ways: periodically during CPC training (``--supervised_classif_metric``), once on a
checkpoint (``--only_classif_metric``), and as this standalone script::

    python cpc/eval/linear_separability.py pathDB pathTrain pathVal CHECKPOINT \
        --pathPhone converted_aligned_phones.txt --out OUT
    python cpc/eval/linear_separability.py pathDB pathTrain pathVal --features mfcc ...

Features are computed once per run (the encoder is frozen, so recomputing them every probe
epoch would be waste) from the datasets already in memory: speaker probes need one pooled vector
per window (the last context frame, CPC_audio's choice, and the time mean); phone probes need
every frame, kept in float16 within ``feature_budget_gb`` (beyond it a regular subset of the
windows is used, and the logs say so). ``--unfrozen`` (CPC_audio's fine-tuning) trains each probe
together with its own copy of the model on the audio windows; the model's parameters then learn at
``--lr_model`` (default: ``--lr``, as in CPC_audio).
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as `python cpc/eval/linear_separability.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.eval.options import linsep_parser
from cpc.utils.cli import answer_help, exit_without_teardown
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(linsep_parser(__doc__), sys.argv[1:])

import torch
import torch.nn as nn
from tqdm import tqdm

from cpc.criterion.supervised import (CTCPhoneCriterion, PhoneCriterion, SpeakerCriterion,
                                      collapse_repeats, edit_distance)
from cpc.data.corpus import CorpusSelection
from cpc.data.packs import AudioBatchData
from cpc.data.splits import check_speaker_classes
from cpc.run_config import device_name
from cpc.utils import checkpoint as ckpt
from cpc.utils.constants import FRAME_SIZE
from cpc.utils.errors import ConfigError

PROBES = ("speaker", "speaker_mean", "phone", "phone_ctc")


@dataclass
class ProbeConfig:
    """Optimisation and bookkeeping of one probe run (the fork's --linsep_* flags)."""

    n_epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    n_layers: int = 1
    logging_step: int = 1
    feature_budget_gb: float = 4.0
    seed: int = 0
    save_step: int = 0  # also save the probe every save_step epochs (0: only the best one)
    unfrozen: bool = False  # fine-tune the model with each probe
    model_lr: float | None = None  # learning rate of the model under unfrozen (None: lr)


@dataclass
class FeatureSet:
    """Frozen features of the windows of one dataset, with their labels."""

    last: torch.Tensor  # (N, Dc) last context frame of each window
    mean: torch.Tensor  # (N, Dc) time mean of the contexts
    speakers: torch.Tensor  # (N,)
    frames: torch.Tensor | None = None  # (N, T, D) float16, contexts or encoded frames
    phones: torch.Tensor | None = None  # (N, T)
    kept_fraction: float = 1.0  # fraction of the windows kept within the memory budget


@torch.no_grad()
def extract_features(model: nn.Module, dataset: AudioBatchData, batch_size: int,
                     device: torch.device, with_frames: bool, get_encoded: bool = False,
                     budget_gb: float = 4.0) -> FeatureSet:
    """Run the frozen model once over the dataset's windows (sequential, no random offset)."""
    loader = dataset.getDataLoader(batch_size, "sequential", randomOffset=False)
    stride = 1
    if with_frames:
        frames = dataset.size_window // FRAME_SIZE
        per_window = frames * _feature_dim(model, get_encoded) * 2  # float16
        max_windows = max(1, int(budget_gb * 2**30 // per_window))
        stride = max(1, math.ceil(dataset.n_windows() / max_windows))
    was_training = model.training
    model.eval()
    last, mean, speakers, frame_feats, phones = [], [], [], [], []
    for index, batch in enumerate(tqdm(loader, desc="features", leave=False, mininterval=5)):
        if index % stride:
            continue
        c_feature, encoded, _ = model(batch.audio.to(device), None)
        last.append(c_feature[:, -1].float().cpu())
        mean.append(c_feature.mean(dim=1).float().cpu())
        speakers.append(batch.speaker)
        if with_frames:
            if batch.phones is None:
                raise ValueError("phone probes need phone labels (--path_phone_data)")
            chosen = encoded if get_encoded else c_feature
            n = min(chosen.shape[1], batch.phones.shape[1])
            frame_feats.append(chosen[:, :n].half().cpu())
            phones.append(batch.phones[:, :n])
    model.train(was_training)
    return FeatureSet(torch.cat(last), torch.cat(mean), torch.cat(speakers),
                      torch.cat(frame_feats) if with_frames else None,
                      torch.cat(phones) if with_frames else None, 1.0 / stride)


def _feature_dim(model: nn.Module, get_encoded: bool) -> int:
    return model.dim_encoded if get_encoded else model.dim_context


# --------------------------------------------------------------------------------------------
# One probe
# --------------------------------------------------------------------------------------------

@dataclass
class ProbeResult:
    name: str
    best_epoch: int = -1
    best_val_acc: float = float("nan")  # speaker/phone accuracy; 1 - PER for the CTC probe
    best_val_per: float | None = None  # CTC probe only
    history: list[dict] = field(default_factory=list)


def _probe_inputs(name: str, features: FeatureSet) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (N, T', D), labels) of a probe: pooled vectors are sequences of length 1."""
    if name == "speaker":
        return features.last[:, None], features.speakers
    if name == "speaker_mean":
        return features.mean[:, None], features.speakers
    return features.frames, features.phones


def make_probe(name: str, dim: int, n_classes: int, n_layers: int) -> nn.Module:
    """A fresh classifier for probe ``name`` (see PROBES)."""
    if name in ("speaker", "speaker_mean"):
        return SpeakerCriterion(dim, n_classes, n_layers, pooling="last")
    if name == "phone":
        return PhoneCriterion(dim, n_classes, n_layers)
    if name == "phone_ctc":
        return CTCPhoneCriterion(dim, n_classes, n_layers)
    raise ValueError(f"unknown probe {name!r}; available: {', '.join(PROBES)}")


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


@torch.no_grad()
def evaluate_probe(probe: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                   batch_size: int, device: torch.device) -> dict:
    """Loss and accuracy over a whole feature set (corpus-level PER for the CTC probe)."""
    probe.eval()
    total_loss, total_correct, total_count, errors, ref_length = 0.0, 0.0, 0, 0, 0
    for index in _batches(len(labels), batch_size, None):
        x = inputs[index].to(device).float()
        y = labels[index].to(device)
        out = probe(x, x, y, capture=True)
        total_loss += out.loss.item() * len(index)
        if isinstance(probe, CTCPhoneCriterion):
            targets, lengths = collapse_repeats(y)
            hyps = probe.greedy_decode(out.captures["logits"])
            for hyp, ref, n in zip(hyps, targets.tolist(), lengths.tolist()):
                errors += edit_distance(hyp, ref[:n])
                ref_length += n
        else:
            predicted = out.captures["logits"].argmax(dim=-1)
            total_correct += (predicted == y).sum().item()
            total_count += y.numel()
    result = {"loss": total_loss / len(labels)}
    if isinstance(probe, CTCPhoneCriterion):
        result["per"] = errors / max(1, ref_length)
        result["acc"] = 1.0 - result["per"]
    else:
        result["acc"] = total_correct / total_count
    return result


def train_probe(name: str, train: FeatureSet, val: FeatureSet, n_classes: int,
                config: ProbeConfig, device: torch.device, log_dir: Path | None = None,
                checkpoint_dir: Path | None = None) -> ProbeResult:
    """Train a fresh probe on frozen train features; keep the epoch with the best val accuracy.

    Writes ``<log_dir>/epoch_<k>.json`` every ``logging_step`` probe epochs (and the last) and
    ``<log_dir>/best.json``; with a checkpoint_dir, ``<checkpoint_dir>/best_probe.pt`` and, every
    ``save_step`` epochs (and the last), ``<checkpoint_dir>/probe_epoch_<k>.pt``.
    """
    train_x, train_y = _probe_inputs(name, train)
    val_x, val_y = _probe_inputs(name, val)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    probe = make_probe(name, train_x.shape[-1], n_classes, config.n_layers).to(device)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config.lr,
                                 betas=(config.beta1, config.beta2), eps=config.epsilon)

    def train_epoch(epoch: int) -> float:
        probe.train()
        total, seen = 0.0, 0
        for index in _batches(len(train_y), config.batch_size, generator):
            x = train_x[index].to(device).float()
            out = probe(x, x, train_y[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            total += out.loss.item() * len(index)
            seen += len(index)
        return total / max(seen, 1)

    return _fit(name, config, probe, None, train_epoch,
                lambda: evaluate_probe(probe, val_x, val_y, config.batch_size, device),
                train.kept_fraction, log_dir, checkpoint_dir)


def _window_inputs(name: str, context: torch.Tensor, encoded: torch.Tensor, speakers: torch.Tensor,
                   phones: torch.Tensor | None, get_encoded: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of probe ``name`` for one batch of model outputs (cf. extract_features)."""
    if name == "speaker":
        return context[:, -1:], speakers
    if name == "speaker_mean":
        return context.mean(dim=1, keepdim=True), speakers
    if phones is None:
        raise ValueError("phone probes need phone labels (--pathPhone)")
    chosen = encoded if get_encoded else context
    n = min(chosen.shape[1], phones.shape[1])
    return chosen[:, :n], phones[:, :n]


def finetune_probe(name: str, model: nn.Module, train_data: AudioBatchData,
                   val_data: AudioBatchData, n_classes: int, config: ProbeConfig,
                   device: torch.device, get_encoded: bool = False, log_dir: Path | None = None,
                   checkpoint_dir: Path | None = None) -> ProbeResult:
    """``--unfrozen``: train a fresh probe together with a copy of ``model`` (encoder and
    context network) on the audio windows; ``model`` itself is left as it was, so that every
    probe starts from the same weights. Validation runs the fine-tuned copy in eval mode."""
    tuned = copy.deepcopy(model).to(device)
    for parameter in tuned.parameters():
        parameter.requires_grad_(True)
    torch.manual_seed(config.seed)
    on_encoded = get_encoded and name.startswith("phone")
    probe = make_probe(name, _feature_dim(tuned, on_encoded), n_classes, config.n_layers).to(device)
    model_lr = config.lr if config.model_lr is None else config.model_lr
    optimizer = torch.optim.Adam([{"params": probe.parameters()},
                                  {"params": tuned.parameters(), "lr": model_lr}],
                                 lr=config.lr, betas=(config.beta1, config.beta2),
                                 eps=config.epsilon)
    loader = train_data.getDataLoader(config.batch_size, "uniform", randomOffset=True)
    with_frames = name.startswith("phone")

    def train_epoch(epoch: int) -> float:
        tuned.train()
        probe.train()
        loader.set_epoch(epoch)
        total, seen = 0.0, 0
        for batch in loader:
            context, encoded, _ = tuned(batch.audio.to(device), None)
            x, y = _window_inputs(name, context, encoded, batch.speaker.to(device),
                                  None if batch.phones is None else batch.phones.to(device),
                                  get_encoded)
            out = probe(x, x, y)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            total += out.loss.item() * len(y)
            seen += len(y)
        return total / max(seen, 1)

    def evaluate() -> dict:
        features = extract_features(tuned, val_data, config.batch_size, device, with_frames,
                                    get_encoded, config.feature_budget_gb)
        return evaluate_probe(probe, *_probe_inputs(name, features), config.batch_size, device)

    return _fit(name, config, probe, tuned, train_epoch, evaluate, 1.0, log_dir, checkpoint_dir)


def _fit(name: str, config: ProbeConfig, probe: nn.Module, model: nn.Module | None,
         train_epoch: Callable[[int], float], evaluate: Callable[[], dict],
         windows_fraction: float, log_dir: Path | None, checkpoint_dir: Path | None
         ) -> ProbeResult:
    """The epochs of one probe: train, validate, keep the best, log and save (see train_probe).
    A fine-tuned ``model``'s weights are saved with the probe's."""
    result = ProbeResult(name)
    for epoch in range(config.n_epochs):
        train_loss = train_epoch(epoch)
        val_stats = evaluate()
        record = {"probe": name, "epoch": epoch, "train_loss": train_loss,
                  "val_loss": val_stats["loss"], "val_acc": val_stats["acc"],
                  "pooling": {"speaker": "last", "speaker_mean": "mean"}.get(name, "frames"),
                  "windows_fraction": windows_fraction, "unfrozen": model is not None}
        if "per" in val_stats:
            record["val_per"] = val_stats["per"]
        result.history.append(record)
        last = epoch == config.n_epochs - 1
        state = {"probe": name, "classifier": probe.state_dict(), "epoch": epoch,
                 "val_acc": val_stats["acc"]}
        if model is not None:
            state["model"] = model.state_dict()
        if not val_stats["acc"] <= result.best_val_acc:  # first epoch, or an improvement
            result.best_epoch, result.best_val_acc = epoch, val_stats["acc"]
            result.best_val_per = val_stats.get("per")
            if checkpoint_dir is not None:
                ckpt.save_torch(Path(checkpoint_dir) / "best_probe.pt", state)
        if checkpoint_dir is not None and config.save_step and \
                ((epoch + 1) % config.save_step == 0 or last):
            ckpt.save_torch(Path(checkpoint_dir) / f"probe_epoch_{epoch}.pt", state)
        if log_dir is not None and ((epoch + 1) % config.logging_step == 0 or last):
            ckpt.write_json(Path(log_dir) / f"epoch_{epoch}.json", record)
    if log_dir is not None:
        ckpt.write_json(Path(log_dir) / "best.json",
                        {"probe": name, "best_epoch": result.best_epoch,
                         "best_val_acc": result.best_val_acc, "best_val_per": result.best_val_per})
    return result


# --------------------------------------------------------------------------------------------
# A probe run: features once, then every requested probe
# --------------------------------------------------------------------------------------------

def check_probe_corpus(probes: list[str], selection: CorpusSelection, train_source: str,
                       val_source: str, remedy: str) -> None:
    """Refuse speaker probes that could only score 1.000 (one training speaker) or 0.000
    (validation speakers never trained on), before any feature is computed; ``remedy`` (how
    to skip them) ends the message."""
    if any(name.startswith("speaker") for name in probes):
        check_speaker_classes(selection.train, selection.val, selection.speakers, train_source,
                              val_source, remedy)


def run_probes(model: nn.Module, train_data: AudioBatchData, val_data: AudioBatchData,
               probes: list[str], n_speakers: int, n_phones: int, config: ProbeConfig,
               device: torch.device, extract_batch_size: int, get_encoded: bool = False,
               log_dir: str | Path | None = None, checkpoint_dir: str | Path | None = None
               ) -> dict[str, float]:
    """Train the named probes on frozen features (or, with ``config.unfrozen``, each with its
    own fine-tuned copy of the model); returns the best metrics by name.

    Keys: ``speaker_best_val_acc`` (last frame), ``speaker_mean_best_val_acc`` (time mean),
    ``phone_best_val_acc`` (frame accuracy), ``phone_ctc_best_val_per`` (CTC phone error rate).
    ``get_encoded`` probes phones on the encoder output z instead of the contexts c.
    """
    for name in probes:
        if name not in PROBES:
            raise ValueError(f"unknown probe {name!r}; available: {', '.join(PROBES)}")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # leave the caller's random streams alone
        return _run_probes(model, train_data, val_data, probes, n_speakers, n_phones, config,
                           device, extract_batch_size, get_encoded, log_dir, checkpoint_dir)


def _run_probes(model: nn.Module, train_data: AudioBatchData, val_data: AudioBatchData,
                probes: list[str], n_speakers: int, n_phones: int, config: ProbeConfig,
                device: torch.device, extract_batch_size: int, get_encoded: bool,
                log_dir: str | Path | None, checkpoint_dir: str | Path | None
                ) -> dict[str, float]:
    with_frames = any(name.startswith("phone") for name in probes)
    start = time.time()
    features = {} if config.unfrozen else {
        part: extract_features(model, data, extract_batch_size, device, with_frames,
                               get_encoded, config.feature_budget_gb)
        for part, data in (("train", train_data), ("val", val_data))}
    feature_seconds = time.time() - start
    metrics: dict[str, float] = {}
    for name in probes:
        n_classes = n_speakers if name.startswith("speaker") else n_phones
        sub_log = Path(log_dir) / name if log_dir else None
        sub_ckpt = Path(checkpoint_dir) / name if checkpoint_dir else None
        probe_start = time.time()
        if config.unfrozen:
            result = finetune_probe(name, model, train_data, val_data, n_classes, config, device,
                                    get_encoded, sub_log, sub_ckpt)
        else:
            result = train_probe(name, features["train"], features["val"], n_classes, config,
                                 device, sub_log, sub_ckpt)
        if name == "phone_ctc":
            metrics["phone_ctc_best_val_per"] = result.best_val_per
        else:
            metrics[f"{name}_best_val_acc"] = result.best_val_acc
        metrics[f"{name}_seconds_per_epoch"] = (time.time() - probe_start) / config.n_epochs
    metrics["feature_seconds"] = feature_seconds
    return metrics


def format_metrics(metrics: dict[str, float]) -> str:
    """One line: the probe results a researcher reads first."""
    labels = {"speaker_best_val_acc": "speaker (last frame)",
              "speaker_mean_best_val_acc": "speaker (mean-pooled)",
              "phone_best_val_acc": "phone (frame acc)", "phone_ctc_best_val_per": "phone CTC PER"}
    return ", ".join(f"{label} {metrics[key]:.3f}" for key, label in labels.items()
                     if key in metrics)


# --------------------------------------------------------------------------------------------
# Standalone script
# --------------------------------------------------------------------------------------------

def build_feature_model(source: str, checkpoints: list[str], mfcc_dim: int, seed: int
                        ) -> nn.Module:
    """The frozen model whose features are probed: a checkpoint, its architecture untrained
    (``random_init``), or plain MFCCs (``mfcc``)."""
    from cpc.feature_loader import loadModel
    from cpc.model import CPCModel, MFCCEncoder, NoAR
    if source == "mfcc":
        return CPCModel(MFCCEncoder(mfcc_dim), NoAR(mfcc_dim))
    if not checkpoints:
        raise ValueError(f"--features {source} needs a checkpoint (positional argument)")
    torch.manual_seed(seed)
    model, _, _ = loadModel(checkpoints, loadStateDict=(source == "checkpoint"))
    return model


def parse_args(argv: list[str]) -> argparse.Namespace:
    return linsep_parser(__doc__).parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Flags that cannot act together, or CPC_audio flags with no one-device meaning here;
    folds --no_pretraining into --features."""
    if args.nGPU is not None and (args.nGPU > 1 or args.nGPU < -1):
        raise ConfigError(f"--nGPU {args.nGPU}: the probes run on one device; give --nGPU 1 "
                          f"(or --device cuda), --nGPU 0 for the CPU")
    if args.nGPU in (0, 1) and args.device not in ("auto", probe_device(args)):
        raise ConfigError(f"--nGPU {args.nGPU} contradicts --device {args.device}; give one")
    if args.no_pretraining:
        if args.features == "mfcc":
            raise ConfigError("--no_pretraining probes an untrained checkpoint architecture; "
                              "--features mfcc has none: give one of them")
        args.features = "random_init"
    if args.unfrozen and args.features == "mfcc":
        raise ConfigError("--unfrozen fine-tunes a model; --features mfcc has no weights: give "
                          "a checkpoint (or --no_pretraining)")
    if args.save_step < 0:
        raise ConfigError(f"--save_step must be 0 (only the best probe) or more; "
                          f"got {args.save_step}")
    if args.save_step and not args.out:
        raise ConfigError("--save_step saves probes under --out: give --out")
    if args.lr_model is not None and args.lr_model < 0:
        raise ConfigError(f"--lr_model must be >= 0; got {args.lr_model}")


def probe_device(args: argparse.Namespace) -> str:
    """--device, or CPC_audio's --nGPU (0: cpu, 1: cuda; -1, its default, leaves --device)."""
    if args.nGPU == -1:
        return args.device
    return device_name(args)


def main(argv: list[str] | None = None) -> int:
    from cpc.utils.memory import keep_freed_memory
    from cpc.data.corpus import build_datasets
    from cpc.utils.files import check_output_dir, exclusive_lock
    from cpc.utils.devices import select_device
    from cpc.utils.errors import CPCError

    args = parse_args(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    try:
        check_args(args)
        if args.out:
            check_output_dir(args.out, "--out")
        with exclusive_lock(args.out or None, "probe run"):
            device = select_device(probe_device(args))
            data = build_datasets(args.pathDB, args.file_extension, args.pathTrain, args.pathVal,
                                  args.pathPhone, args.sizeWindow,
                                  n_process_loader=args.n_process_loader,
                                  max_size_loaded=args.max_size_loaded, seed=args.seed,
                                  ignore_cache=args.ignore_cache,
                                  max_files=(1000, 100) if args.debug else None,
                                  bad_audio=args.bad_audio)
            model = build_feature_model(args.features, args.load, args.mfcc_dim,
                                        args.seed).to(device)
            probes = ([] if args.no_speaker else ["speaker", "speaker_mean"]) + \
                (["phone_ctc" if args.CTC else "phone"] if args.pathPhone else [])
            if not probes:
                raise CPCError("nothing to probe: give --pathPhone or drop --no_speaker")
            check_probe_corpus(probes, data.selection, args.pathTrain, args.pathVal,
                               ", or give --no_speaker to skip the speaker probes")
            config = ProbeConfig(args.nEpoch, args.batchSizeGPU, args.lr, args.beta1, args.beta2,
                                 args.epsilon, args.nLevels, 1, args.feature_budget_gb,
                                 args.seed, args.save_step, args.unfrozen, args.lr_model)
            out = Path(args.out) if args.out else None
            metrics = run_probes(model, data.train, data.val, probes, len(data.speakers),
                                 data.n_phones, config, device, args.batchSizeGPU,
                                 args.get_encoded, out / "logs" if out else None,
                                 out / "probes" if out else None)
            data.close()
            print(f"{args.features}: {format_metrics(metrics)}")
            if out:
                ckpt.write_json(out / "results.json", {"features": args.features,
                                                       "unfrozen": args.unfrozen, **metrics})
    except (CPCError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
