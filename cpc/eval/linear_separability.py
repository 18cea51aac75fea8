r"""Linear-separability probes: speaker and phone classifiers trained on frozen features.

Used three ways: periodically during CPC training (``--supervised_classif_metric``), once on a
checkpoint (``--only_classif_metric``), and as this standalone script::

    python cpc/eval/linear_separability.py pathDB pathTrain pathVal CHECKPOINT \
        --pathPhone converted_aligned_phones.txt --out OUT
    python cpc/eval/linear_separability.py pathDB pathTrain pathVal --features mfcc ...

Features are computed once per run (the encoder is frozen, so recomputing them every probe
epoch would be waste) from the datasets already in memory: speaker probes need one pooled vector
per window (the last context frame, CPC_audio's choice, and the time mean); phone probes need
every frame, kept in float16 within ``feature_budget_gb`` (beyond it a regular subset of the
windows is used, and the logs say so).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/eval/linear_separability.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.eval.options import linsep_parser
from cpc.utils.cli import answer_help, exit_without_teardown

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    answer_help(linsep_parser(__doc__), sys.argv[1:])

import torch
import torch.nn as nn
from tqdm import tqdm

from cpc.criterion.supervised import (CTCPhoneCriterion, PhoneCriterion, SpeakerCriterion,
                                      collapse_repeats, edit_distance)
from cpc.dataset import AudioBatchData
from cpc.utils import checkpoint as ckpt
from cpc.utils.constants import FRAME_SIZE

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
    ``<log_dir>/best.json``; with a checkpoint_dir, ``<checkpoint_dir>/best_probe.pt``.
    """
    train_x, train_y = _probe_inputs(name, train)
    val_x, val_y = _probe_inputs(name, val)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    probe = make_probe(name, train_x.shape[-1], n_classes, config.n_layers).to(device)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config.lr,
                                 betas=(config.beta1, config.beta2), eps=config.epsilon)
    result = ProbeResult(name)
    for epoch in range(config.n_epochs):
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
        val_stats = evaluate_probe(probe, val_x, val_y, config.batch_size, device)
        record = {"probe": name, "epoch": epoch, "train_loss": total / max(seen, 1),
                  "val_loss": val_stats["loss"], "val_acc": val_stats["acc"],
                  "pooling": {"speaker": "last", "speaker_mean": "mean"}.get(name, "frames"),
                  "windows_fraction": train.kept_fraction}
        if "per" in val_stats:
            record["val_per"] = val_stats["per"]
        result.history.append(record)
        if not val_stats["acc"] <= result.best_val_acc:  # first epoch, or an improvement
            result.best_epoch, result.best_val_acc = epoch, val_stats["acc"]
            result.best_val_per = val_stats.get("per")
            if checkpoint_dir is not None:
                ckpt.save_torch(Path(checkpoint_dir) / "best_probe.pt",
                               {"probe": name, "classifier": probe.state_dict(),
                                "epoch": epoch, "val_acc": val_stats["acc"]})
        if log_dir is not None and ((epoch + 1) % config.logging_step == 0
                                    or epoch == config.n_epochs - 1):
            ckpt.write_json(Path(log_dir) / f"epoch_{epoch}.json", record)
    if log_dir is not None:
        ckpt.write_json(Path(log_dir) / "best.json",
                        {"probe": name, "best_epoch": result.best_epoch,
                         "best_val_acc": result.best_val_acc, "best_val_per": result.best_val_per})
    return result


# --------------------------------------------------------------------------------------------
# A probe run: features once, then every requested probe
# --------------------------------------------------------------------------------------------

def run_probes(model: nn.Module, train_data: AudioBatchData, val_data: AudioBatchData,
               probes: list[str], n_speakers: int, n_phones: int, config: ProbeConfig,
               device: torch.device, extract_batch_size: int, get_encoded: bool = False,
               log_dir: str | Path | None = None, checkpoint_dir: str | Path | None = None
               ) -> dict[str, float]:
    """Train the named probes on frozen features; returns the best metrics by name.

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
    features = {part: extract_features(model, data, extract_batch_size, device, with_frames,
                                       get_encoded, config.feature_budget_gb)
                for part, data in (("train", train_data), ("val", val_data))}
    feature_seconds = time.time() - start
    metrics: dict[str, float] = {}
    for name in probes:
        n_classes = n_speakers if name.startswith("speaker") else n_phones
        sub_log = Path(log_dir) / name if log_dir else None
        sub_ckpt = Path(checkpoint_dir) / name if checkpoint_dir else None
        probe_start = time.time()
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


def main(argv: list[str] | None = None) -> int:
    from cpc.utils.memory import keep_freed_memory
    from cpc.dataset import build_datasets
    from cpc.utils.files import check_output_dir
    from cpc.utils.devices import select_device
    from cpc.utils.errors import CPCError

    args = parse_args(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    try:
        if args.out:
            check_output_dir(args.out, "--out")
        device = select_device(args.device)
        data = build_datasets(args.pathDB, args.file_extension, args.pathTrain, args.pathVal,
                              args.pathPhone, args.sizeWindow, args.n_process_loader,
                              args.max_size_loaded, args.seed)
        model = build_feature_model(args.features, args.load, args.mfcc_dim, args.seed).to(device)
        probes = ([] if args.no_speaker else ["speaker", "speaker_mean"]) + \
            (["phone_ctc" if args.CTC else "phone"] if args.pathPhone else [])
        if not probes:
            raise CPCError("nothing to probe: give --pathPhone or drop --no_speaker")
        config = ProbeConfig(args.nEpoch, args.batchSizeGPU, args.lr, args.beta1, args.beta2,
                             args.epsilon, args.nLevels, 1, args.feature_budget_gb, args.seed)
        out = Path(args.out) if args.out else None
        metrics = run_probes(model, data.train, data.val, probes, len(data.speakers),
                             data.n_phones, config, device, args.batchSizeGPU, args.get_encoded,
                             out / "logs" if out else None, out / "probes" if out else None)
        data.close()
    except (CPCError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.features}: {format_metrics(metrics)}")
    if out:
        ckpt.write_json(out / "results.json", {"features": args.features, **metrics})
    return 0


if __name__ == "__main__":
    exit_without_teardown(main())
