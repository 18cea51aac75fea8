"""A probe run: the frozen features computed once, then every requested probe trained on them
(or, under ``unfrozen``, each probe fine-tuned with its own copy of the model), in a random
stream of its own; and the one-line summary of its metrics."""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn

from cpc.data.corpus import CorpusSelection
from cpc.data.packs import AudioBatchData
from cpc.data.splits import check_speaker_classes
from cpc.probes.config import PROBES, ProbeConfig
from cpc.probes.features import extract_features
from cpc.probes.training import finetune_probe, train_probe


def check_probe_corpus(probes: list[str], selection: CorpusSelection, train_source: str,
                       val_source: str, remedy: str) -> None:
    """Refuse speaker probes that could only score 1.000 (one training speaker) or 0.000
    (validation speakers never trained on), before any feature is computed; ``remedy`` (how
    to skip them) ends the message."""
    if any(name.startswith("speaker") for name in probes):
        check_speaker_classes(selection.train, selection.val, selection.speakers, train_source,
                              val_source, remedy)


def run_probes(model: nn.Module, train_data: AudioBatchData, val_data: AudioBatchData, *,
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
        return _run_probes(model, train_data, val_data, probes=probes, n_speakers=n_speakers,
                           n_phones=n_phones, config=config, device=device,
                           extract_batch_size=extract_batch_size, get_encoded=get_encoded,
                           log_dir=log_dir, checkpoint_dir=checkpoint_dir)


def _run_probes(model: nn.Module, train_data: AudioBatchData, val_data: AudioBatchData, *,
                probes: list[str], n_speakers: int, n_phones: int, config: ProbeConfig,
                device: torch.device, extract_batch_size: int, get_encoded: bool,
                log_dir: str | Path | None, checkpoint_dir: str | Path | None
                ) -> dict[str, float]:
    with_frames = any(name.startswith("phone") for name in probes)
    start = time.time()
    features = {} if config.unfrozen else {
        part: extract_features(model, data, batch_size=extract_batch_size, device=device,
                               with_frames=with_frames, budget_gb=config.feature_budget_gb,
                               get_encoded=get_encoded)
        for part, data in (("train", train_data), ("val", val_data))}
    feature_seconds = time.time() - start
    metrics: dict[str, float] = {}
    for name in probes:
        n_classes = n_speakers if name.startswith("speaker") else n_phones
        sub_log = Path(log_dir) / name if log_dir else None
        sub_ckpt = Path(checkpoint_dir) / name if checkpoint_dir else None
        probe_start = time.time()
        if config.unfrozen:
            result = finetune_probe(name, model, train_data, val_data, n_classes=n_classes,
                                    config=config, device=device, get_encoded=get_encoded,
                                    log_dir=sub_log, checkpoint_dir=sub_ckpt)
        else:
            result = train_probe(name, features["train"], features["val"], n_classes=n_classes,
                                 config=config, device=device, log_dir=sub_log,
                                 checkpoint_dir=sub_ckpt)
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

