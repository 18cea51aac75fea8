"""One probe: a fresh classifier trained on frozen features (:func:`train_probe`), or together
with its own copy of the model on the audio windows (:func:`finetune_probe`, CPC_audio's
fine-tuning), keeping the epoch with the best validation accuracy."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from cpc.criterion.supervised import (CTCPhoneCriterion, PhoneCriterion, SpeakerCriterion,
                                      collapse_repeats, edit_distance)
from cpc.data.packs import AudioBatchData
from cpc.probes.config import PROBES, ProbeConfig
from cpc.probes.features import FeatureSet, extract_features, feature_dim, probe_inputs
from cpc.utils import checkpoint as ckpt


@dataclass
class ProbeResult:
    """What one probe run kept: its best validation epoch and every epoch's record."""

    name: str
    best_epoch: int = -1
    best_val_acc: float = float("nan")  # speaker/phone accuracy; 1 - PER for the CTC probe
    best_val_per: float | None = None  # CTC probe only
    history: list[dict] = field(default_factory=list)


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


def train_probe(name: str, train: FeatureSet, val: FeatureSet, *, n_classes: int,
                config: ProbeConfig, device: torch.device, log_dir: Path | None = None,
                checkpoint_dir: Path | None = None) -> ProbeResult:
    """Train a fresh probe on frozen train features; keep the epoch with the best val accuracy.

    Writes ``<log_dir>/epoch_<k>.json`` every ``logging_step`` probe epochs (and the last) and
    ``<log_dir>/best.json``; with a checkpoint_dir, ``<checkpoint_dir>/best_probe.pt`` and, every
    ``save_step`` epochs (and the last), ``<checkpoint_dir>/probe_epoch_<k>.pt``.
    """
    train_x, train_y = probe_inputs(name, train)
    val_x, val_y = probe_inputs(name, val)
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

    return _fit(name, config, probe=probe, model=None, train_epoch=train_epoch,
                evaluate=lambda: evaluate_probe(probe, val_x, val_y, config.batch_size, device),
                windows_fraction=train.kept_fraction, log_dir=log_dir,
                checkpoint_dir=checkpoint_dir)


def _window_inputs(name: str, context: torch.Tensor, encoded: torch.Tensor, speakers: torch.Tensor,
                   phones: torch.Tensor | None, *, get_encoded: bool
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
                   val_data: AudioBatchData, *, n_classes: int, config: ProbeConfig,
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
    probe = make_probe(name, feature_dim(tuned, on_encoded), n_classes, config.n_layers).to(device)
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
                                  get_encoded=get_encoded)
            out = probe(x, x, y)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            total += out.loss.item() * len(y)
            seen += len(y)
        return total / max(seen, 1)

    def evaluate() -> dict:
        features = extract_features(tuned, val_data, batch_size=config.batch_size, device=device,
                                    with_frames=with_frames, budget_gb=config.feature_budget_gb,
                                    get_encoded=get_encoded)
        return evaluate_probe(probe, *probe_inputs(name, features), config.batch_size, device)

    return _fit(name, config, probe=probe, model=tuned, train_epoch=train_epoch,
                evaluate=evaluate, windows_fraction=1.0, log_dir=log_dir,
                checkpoint_dir=checkpoint_dir)


def _fit(name: str, config: ProbeConfig, *, probe: nn.Module, model: nn.Module | None,
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

