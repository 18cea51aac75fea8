"""A CTC phone recogniser on CPC features: training and phone error rate.

The recogniser is CPC_audio's cross-lingual one: the model's contexts (or encoder output),
optionally normalised per utterance over time (``seq_norm``), optionally through an LSTM, then a
1-D convolution of ``kernel_size`` frames with stride ``kernel_size // 2`` (by default 8 frames
of 10 ms, one output per 40 ms) onto the phones and the CTC blank (the last class). It is
trained with ``torch.nn.CTCLoss`` on whole utterances, the model frozen or fine-tuned with it.
A frozen model's features are computed once, before the first epoch, not every epoch.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from cpc.criterion.supervised import edit_distance
from cpc.eval.ctc_decoding import decode
from cpc.eval.phone_sequences import Utterance, pad_audio, pad_features, pad_phones
from cpc.utils import checkpoint as ckpt

CHECKPOINT = "checkpoint.pt"  # best recogniser (and model) of a training run, CPC_audio's name


class CTCPhoneRecognizer(nn.Module):
    """``(B, T, D)`` features -> ``(B, T', n_phones + 1)`` log-probabilities; blank = n_phones."""

    def __init__(self, dim: int, n_phones: int, *, lstm: bool = False, kernel_size: int = 8,
                 seq_norm: bool = False, dropout: bool = False) -> None:
        super().__init__()
        if kernel_size < 2:
            raise ValueError(f"--kernelSize must be at least 2 (the stride is half of it); "
                             f"got {kernel_size}")
        self.blank = n_phones
        self.seq_norm = seq_norm
        self.lstm = nn.LSTM(dim, dim, batch_first=True) if lstm else None
        self.dropout = nn.Dropout1d(0.5) if dropout else None
        self.classifier = nn.Conv1d(dim, n_phones + 1, kernel_size, stride=kernel_size // 2)

    def output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """Valid outputs of sequences of ``frames`` valid input frames."""
        kernel, stride = self.classifier.kernel_size[0], self.classifier.stride[0]
        return torch.div(frames - kernel, stride, rounding_mode="floor").add(1).clamp(min=0)

    def forward(self, features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        if self.seq_norm:
            features = normalise_over_time(features, frames)
        if self.lstm is not None:
            features = self.lstm(features)[0]
        x = features.transpose(1, 2)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.classifier(x).transpose(1, 2).log_softmax(dim=-1)


def normalise_over_time(features: torch.Tensor, frames: torch.Tensor, eps: float = 1e-8
                        ) -> torch.Tensor:
    """Each sequence minus its mean, over its standard deviation, on its ``frames`` valid
    frames (padding stays out of the statistics)."""
    mask = (torch.arange(features.shape[1], device=features.device)[None] <
            frames.to(features.device)[:, None]).unsqueeze(-1).float()
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (features * mask).sum(dim=1, keepdim=True) / count
    var = ((features - mean) ** 2 * mask).sum(dim=1, keepdim=True) / count
    return (features - mean) / torch.sqrt(var + eps)


@dataclass(frozen=True, kw_only=True)
class RecognizerConfig:
    """How the recogniser is trained (``common_voices_eval.py train``'s flags)."""

    batch_size: int = 8
    n_epochs: int = 30
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    freeze: bool = True  # False: the model is fine-tuned with the recogniser
    get_encoded: bool = False  # the encoder output instead of the contexts
    loss_reduction: str = "mean"
    seed: int = 0


def model_features(model: nn.Module, audio: torch.Tensor, n_samples: torch.Tensor,
                   get_encoded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, D)`` features of padded audio and each utterance's valid frame count."""
    context, encoded, _ = model(audio, None)
    features = encoded if get_encoded else context
    frames = torch.div(n_samples, model.downsampling, rounding_mode="floor")
    return features, frames.clamp(max=features.shape[1])


@torch.no_grad()
def with_frozen_features(model: nn.Module, utterances: list[Utterance], batch_size: int,
                         device: torch.device, get_encoded: bool) -> list[Utterance]:
    """The utterances with their features computed once by the model in eval mode."""
    model.eval()
    done = []
    for batch in _batches(utterances, batch_size, None):
        audio, n_samples = pad_audio(batch)
        features, frames = model_features(model, audio.to(device), n_samples, get_encoded)
        done += [replace(u, features=f[:n].cpu()) for u, f, n in zip(batch, features, frames)]
    return done


def _inputs(model: nn.Module, batch: list[Utterance], device: torch.device, get_encoded: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and frame counts of a batch: precomputed ones, or the model's."""
    if batch[0].features is not None:
        features, frames = pad_features(batch)
        return features.to(device), frames
    audio, n_samples = pad_audio(batch)
    return model_features(model, audio.to(device), n_samples, get_encoded)


def _batches(utterances: list[Utterance], batch_size: int, rng: random.Random | None
             ) -> Iterator[list[Utterance]]:
    order = list(range(len(utterances)))
    if rng is not None:
        rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        yield [utterances[i] for i in order[start:start + batch_size]]


def _loss(model: nn.Module, recognizer: CTCPhoneRecognizer, batch: list[Utterance],
          config: RecognizerConfig, device: torch.device, ctc: nn.CTCLoss) -> torch.Tensor:
    phones, n_phones = pad_phones(batch)
    features, frames = _inputs(model, batch, device, config.get_encoded)
    log_probs = recognizer(features, frames)
    lengths = recognizer.output_lengths(frames).clamp(max=log_probs.shape[1])
    return ctc(log_probs.transpose(0, 1), phones.to(device), lengths, n_phones)


def train_recognizer(model: nn.Module, recognizer: CTCPhoneRecognizer,
                     train: list[Utterance], val: list[Utterance], *, config: RecognizerConfig,
                     device: torch.device, out: Path | None = None) -> list[dict]:
    """Train for ``config.n_epochs``; after each epoch the validation loss, and the best
    recogniser and model so far saved to ``out/checkpoint.pt`` (atomically). Returns one
    record per epoch (train and validation CTC loss)."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    params = list(recognizer.parameters())
    if config.freeze:
        model.requires_grad_(False)
        train = with_frozen_features(model, train, config.batch_size, device, config.get_encoded)
        val = with_frozen_features(model, val, config.batch_size, device, config.get_encoded)
    else:
        params += list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2),
                                 eps=config.epsilon)
    ctc = nn.CTCLoss(blank=recognizer.blank, reduction=config.loss_reduction, zero_infinity=True)
    history, best = [], float("inf")
    for epoch in range(config.n_epochs):
        model.train(not config.freeze)
        recognizer.train()
        total = 0.0
        n_batches = 0
        for batch in _batches(train, config.batch_size, rng):
            loss = _loss(model, recognizer, batch, config, device, ctc)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            n_batches += 1
        record = {"epoch": epoch, "train_loss": total / max(1, n_batches),
                  "val_loss": validation_loss(model, recognizer, val, config, device, ctc)}
        history.append(record)
        print(f"epoch {epoch}: CTC loss train {record['train_loss']:.4f} "
              f"val {record['val_loss']:.4f}", flush=True)
        if record["val_loss"] < best and out is not None:
            best = record["val_loss"]
            ckpt.save_torch(out / CHECKPOINT, {
                "classifier": recognizer.state_dict(), "model": model.state_dict(),
                "bestLoss": best, "epoch": epoch, "n_phones": recognizer.blank})
    return history


@torch.no_grad()
def validation_loss(model: nn.Module, recognizer: CTCPhoneRecognizer, val: list[Utterance],
                    config: RecognizerConfig, device: torch.device, ctc: nn.CTCLoss) -> float:
    """Mean CTC loss of the validation batches, model and recogniser in eval mode."""
    model.eval()
    recognizer.eval()
    losses = [_loss(model, recognizer, batch, config, device, ctc).item()
              for batch in _batches(val, config.batch_size, None)]
    return sum(losses) / max(1, len(losses))


@torch.no_grad()
def phone_error_rates(model: nn.Module, recognizer: CTCPhoneRecognizer,
                      utterances: list[Utterance], *, batch_size: int, device: torch.device,
                      get_encoded: bool, decoding: str, beam_width: int = 20) -> dict:
    """Decode every utterance; ``per``: total edit distance over total reference length;
    ``mean_utterance_per``: the mean of the utterances' PERs (CPC_audio's figure)."""
    model.eval()
    recognizer.eval()
    errors, reference, utterance_pers = 0, 0, []
    for batch in _batches(utterances, batch_size, None):
        features, frames = _inputs(model, batch, device, get_encoded)
        log_probs = recognizer(features, frames).cpu()
        lengths = recognizer.output_lengths(frames).clamp(max=log_probs.shape[1]).tolist()
        for utterance, scores, length in zip(batch, log_probs, lengths):
            hypothesis = decode(scores, length, recognizer.blank, decoding, beam_width)
            truth = utterance.phones.tolist()
            distance = edit_distance(hypothesis, truth)
            errors += distance
            reference += len(truth)
            utterance_pers.append(distance / len(truth))
    return {"per": errors / max(1, reference),
            "mean_utterance_per": sum(utterance_pers) / max(1, len(utterance_pers)),
            "n_utterances": len(utterances), "decoding": decoding}
