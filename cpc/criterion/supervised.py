"""Supervised criteria on CPC features: the linear-separability probes of
:mod:`cpc.probes.training` (built there directly), and CPC_audio's supervised training
(``--supervised``), which trains encoder and context network through them: registered as the
criteria "speaker", "phone" and "phone_ctc" (see :func:`build_speaker` and its siblings).

* :class:`SpeakerCriterion`: one speaker label per window, classified from the last frame or the
  time mean.
* :class:`PhoneCriterion`: frame-wise phone classification (labels ``(B, T)`` aligned with the
  frames).
* :class:`CTCPhoneCriterion`: CTC over the window's phone sequence. The target is the frame labels with
  consecutive repeats collapsed (``a a b b b a -> a b a``); nothing else is removed (silence is a
  phone like the others), so it matches what greedy decoding of a perfect model returns.

Each criterion classifies ``cFeature`` (or ``encodedData`` when ``on_encoder``). Classifiers with
``n_layers > 1`` are MLPs ``dim -> n_classes -> ... -> n_classes`` with ReLUs, as in CPC_audio
(attribute names are CPC_audio's too, so its probe checkpoints load).
"""
from __future__ import annotations

import math
from typing import ClassVar, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import CriterionOutput
from .options import SupervisedOptions


def classifier(dim: int, n_classes: int, n_layers: int = 1) -> nn.Module:
    """Linear layer (``n_layers == 1``) or MLP whose hidden width is ``n_classes``."""
    layers: list[nn.Module] = [nn.Linear(dim, n_classes)]
    for _ in range(n_layers - 1):
        layers += [nn.ReLU(), nn.Linear(n_classes, n_classes)]
    return layers[0] if n_layers == 1 else nn.Sequential(*layers)


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (unit-cost insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, item_a in enumerate(a, start=1):
        current = [i]
        for j, item_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item_a != item_b)))
        previous = current
    return previous[-1]


def phone_error_rate(hyps: Sequence[Sequence[int]], refs: Sequence[Sequence[int]]) -> float:
    """Corpus PER: total edit distance over total reference length (a denominator of 0 counts as 1)."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    errors = sum(edit_distance(hyp, ref) for hyp, ref in zip(hyps, refs))
    return errors / max(1, sum(len(ref) for ref in refs))


def collapse_repeats(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T)`` frame labels -> zero-padded ``(B, L)`` sequences without consecutive repeats, and lengths ``(B,)``."""
    keep = torch.ones_like(labels, dtype=torch.bool)
    keep[:, 1:] = labels[:, 1:] != labels[:, :-1]
    lengths = keep.sum(dim=1)
    positions = keep.long().cumsum(dim=1) - 1
    targets = labels.new_zeros(labels.shape[0], int(lengths.max()))
    rows = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(labels)
    targets[rows[keep], positions[keep]] = labels[keep]
    return targets, lengths


def ctc_greedy_decode(logits: torch.Tensor, blank: int) -> list[list[int]]:
    """Best path per sequence of ``(B, T, C)`` logits, repeats collapsed then blanks removed."""
    best, lengths = collapse_repeats(logits.argmax(dim=-1))
    return [[p for p in row[:n].tolist() if p != blank] for row, n in zip(best, lengths.tolist())]


def _frame_labels_check(features: torch.Tensor, label: torch.Tensor) -> None:
    if label.shape != features.shape[:2]:
        raise ValueError(f"phone labels of shape {tuple(label.shape)} for features {tuple(features.shape[:2])}")


class SpeakerCriterion(nn.Module):
    """Cross-entropy speaker classification of a window; ``label`` is ``(B,)`` speaker ids."""

    label_field: ClassVar[str] = "speaker"  # the Batch field it classifies

    def __init__(self, dim: int, n_speakers: int, n_layers: int = 1, pooling: str = "last",
                 on_encoder: bool = False):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', not {pooling!r}")
        self.pooling = pooling
        self.on_encoder = on_encoder
        self.n_speakers = n_speakers
        self.linearSpeakerClassifier = classifier(dim, n_speakers, n_layers)

    def chance_loss(self) -> float:
        """The loss of a uniform guess, ln(speakers): the collapse guard's chance level."""
        return math.log(self.n_speakers)

    def forward(self, cFeature: torch.Tensor, encodedData: torch.Tensor, label: torch.Tensor,
                capture: bool = False) -> CriterionOutput:
        features = encodedData if self.on_encoder else cFeature
        pooled = features[:, -1] if self.pooling == "last" else features.mean(dim=1)
        logits = self.linearSpeakerClassifier(pooled)
        loss = F.cross_entropy(logits, label)
        accuracy = (logits.detach().argmax(dim=-1) == label).float().mean()
        return CriterionOutput(loss, loss.view(1), accuracy.view(1), {"logits": logits} if capture else {})


class PhoneCriterion(nn.Module):
    """Frame-wise cross-entropy phone classification; ``label`` is ``(B, T)``."""

    label_field: ClassVar[str] = "phones"

    def __init__(self, dim: int, n_phones: int, n_layers: int = 1, on_encoder: bool = False):
        super().__init__()
        self.on_encoder = on_encoder
        self.n_phones = n_phones
        self.PhoneCriterionClassifier = classifier(dim, n_phones, n_layers)

    def chance_loss(self) -> float:
        """The loss of a uniform guess, ln(phones): the collapse guard's chance level."""
        return math.log(self.n_phones)

    def forward(self, cFeature: torch.Tensor, encodedData: torch.Tensor, label: torch.Tensor,
                capture: bool = False) -> CriterionOutput:
        features = encodedData if self.on_encoder else cFeature
        _frame_labels_check(features, label)
        logits = self.PhoneCriterionClassifier(features)
        loss = F.cross_entropy(logits.flatten(0, 1), label.flatten())
        accuracy = (logits.detach().argmax(dim=-1) == label).float().mean()
        return CriterionOutput(loss, loss.view(1), accuracy.view(1), {"logits": logits} if capture else {})


class CTCPhoneCriterion(nn.Module):
    """CTC phone recognition; ``label`` is ``(B, T)`` frame labels, collapsed into the target.

    Outputs ``n_phones + 1`` classes, the blank being index ``n_phones``. Loss is
    ``F.ctc_loss`` with ``reduction="mean"`` (per-sequence loss divided by target length, then
    batch mean) and ``zero_infinity=True``. ``step_accuracies`` holds ``1 - PER`` of greedy
    decoding on the batch.
    """

    label_field: ClassVar[str] = "phones"

    def __init__(self, dim: int, n_phones: int, n_layers: int = 1, on_encoder: bool = False):
        super().__init__()
        self.blank = n_phones
        self.on_encoder = on_encoder
        self.PhoneCriterionClassifier = classifier(dim, n_phones + 1, n_layers)

    def greedy_decode(self, logits: torch.Tensor) -> list[list[int]]:
        """Greedy CTC decoding of ``(B, T, n_phones + 1)`` logits into phone-id lists."""
        return ctc_greedy_decode(logits, self.blank)

    def forward(self, cFeature: torch.Tensor, encodedData: torch.Tensor, label: torch.Tensor,
                capture: bool = False) -> CriterionOutput:
        features = encodedData if self.on_encoder else cFeature
        _frame_labels_check(features, label)
        logits = self.PhoneCriterionClassifier(features)
        targets, target_lengths = collapse_repeats(label)
        batch, n_frames = label.shape
        input_lengths = torch.full((batch,), n_frames, dtype=torch.long, device=label.device)
        loss = F.ctc_loss(torch.log_softmax(logits, dim=-1).transpose(0, 1), targets, input_lengths,
                          target_lengths, blank=self.blank, reduction="mean", zero_infinity=True)
        refs = [row[:n] for row, n in zip(targets.tolist(), target_lengths.tolist())]
        per = phone_error_rate(self.greedy_decode(logits.detach()), refs)
        accuracy = torch.tensor([1.0 - per], device=loss.device)
        return CriterionOutput(loss, loss.view(1), accuracy, {"logits": logits} if capture else {})


# --------------------------------------------------------------------------- --supervised training
# The builders of the criterion registry (cpc/registries.py); CPC_audio's train.py builds the
# same three: speaker without phone labels, phone, or phone CTC with --CTC.

def _dim(options: SupervisedOptions, dim_context: int, dim_encoded: int) -> int:
    return dim_encoded if options.onEncoder else dim_context


def build_speaker(options: SupervisedOptions, *, dim_context: int, dim_encoded: int,
                  n_speakers: int, **_: object) -> SpeakerCriterion:
    """Linear speaker classifier on the last frame, as CPC_audio's (which ignored --onEncoder)."""
    return SpeakerCriterion(_dim(options, dim_context, dim_encoded), n_speakers,
                            on_encoder=options.onEncoder)


def build_phone(options: SupervisedOptions, *, dim_context: int, dim_encoded: int,
                n_phones: int, **_: object) -> PhoneCriterion:
    """Frame-wise phone classifier of --nLevelsPhone layers."""
    return PhoneCriterion(_dim(options, dim_context, dim_encoded), n_phones,
                          options.nLevelsPhone, on_encoder=options.onEncoder)


def build_phone_ctc(options: SupervisedOptions, *, dim_context: int, dim_encoded: int,
                    n_phones: int, **_: object) -> CTCPhoneCriterion:
    """CTC phone recogniser of --nLevelsPhone layers (CPC_audio's: linear, not on the encoder)."""
    return CTCPhoneCriterion(_dim(options, dim_context, dim_encoded), n_phones,
                             options.nLevelsPhone, on_encoder=options.onEncoder)
