"""Utterances with unaligned phone sequences, in CPC_audio's Common Voice format.

The phone file holds one line per utterance, ``<stem> id id ...``: the utterance's phones in
order, not aligned to frames (CPC_audio's ``validated_phones_reduced.txt``). Audio files are
found by stem anywhere under pathDB (Common Voice's clips directory is flat; a LibriSpeech tree
works too), 16 kHz. Split lists name stems, one per line.
"""
from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from cpc.data.audio import read_audio
from cpc.data.labels import parseSeqLabels
from cpc.data.splits import read_split_list
from cpc.utils.errors import DataError


@dataclass
class Utterance:
    stem: str
    audio: torch.Tensor  # (S,) float32 samples
    phones: torch.Tensor  # (L,) int64 phone ids
    features: torch.Tensor | None = None  # (T, D) of a frozen model, once computed


def read_phone_sequences(path: str | Path) -> tuple[dict[str, list[int]], int]:
    """``{stem: phone ids}`` of a phone file, and the number of phones (largest id + 1)."""
    if not Path(path).is_file():
        raise DataError(f"pathPhone {path} does not exist; expected a file of "
                        f"'<stem> id id ...' lines")
    labels, n_phones = parseSeqLabels(path)
    return {stem: ids.tolist() for stem, ids in labels.items()}, n_phones


def select_stems(path_split: str | Path | None, files: dict[str, Path],
                 labels: dict[str, list[int]], path_phone: str | Path) -> list[str]:
    """Stems of a split list (every labelled audio file without one) that have audio; a listed
    stem without audio is reported, one without a phone sequence is an error."""
    if path_split is None:
        return sorted(stem for stem in files if stem in labels)
    wanted = list(dict.fromkeys(read_split_list(path_split)))
    kept = [stem for stem in wanted if stem in files]
    if not kept:
        raise DataError(f"split list {path_split} names no audio file of the corpus (first "
                        f"entries: {', '.join(wanted[:3])})")
    if len(kept) < len(wanted):
        warnings.warn(f"{len(wanted) - len(kept)} of {len(wanted)} stems of {path_split} have "
                      f"no audio file and are ignored")
    unlabelled = [stem for stem in kept if stem not in labels]
    if unlabelled:
        raise DataError(f"{len(unlabelled)} files of {path_split} have no phone sequence in "
                        f"{path_phone} (first: {', '.join(unlabelled[:3])})")
    return kept


def split_off_validation(stems: list[str], fraction: float, seed: int
                         ) -> tuple[list[str], list[str]]:
    """Seeded random (train, val) split used when no --pathVal is given (CPC_audio's 90/10)."""
    if len(stems) < 2:
        raise DataError("at least two files are needed to split off a validation set; give "
                        "--pathVal")
    order = list(stems)
    random.Random(seed).shuffle(order)
    n_train = min(len(order) - 1, max(1, int(len(order) * (1 - fraction))))
    return order[:n_train], order[n_train:]


def load_utterances(stems: list[str], files: dict[str, Path], labels: dict[str, list[int]]
                    ) -> list[Utterance]:
    """Read each stem's audio (a file that cannot be read is a DataError naming it)."""
    return [Utterance(stem, torch.from_numpy(read_audio(files[stem])),
                      torch.tensor(labels[stem], dtype=torch.long)) for stem in stems]


def pad_audio(batch: list[Utterance]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded ``(B, 1, S)`` audio and sample counts ``(B,)``."""
    n_samples = torch.tensor([len(u.audio) for u in batch])
    audio = torch.zeros(len(batch), 1, int(n_samples.max()))
    for row, utterance in enumerate(batch):
        audio[row, 0, :len(utterance.audio)] = utterance.audio
    return audio, n_samples


def pad_phones(batch: list[Utterance]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded ``(B, L)`` phone ids and phone counts ``(B,)``."""
    n_phones = torch.tensor([len(u.phones) for u in batch])
    phones = torch.zeros(len(batch), int(n_phones.max()), dtype=torch.long)
    for row, utterance in enumerate(batch):
        phones[row, :len(utterance.phones)] = utterance.phones
    return phones, n_phones


def pad_features(batch: list[Utterance]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded ``(B, T, D)`` precomputed features and frame counts ``(B,)``."""
    frames = torch.tensor([len(u.features) for u in batch])
    padded = torch.zeros(len(batch), int(frames.max()), batch[0].features.shape[1])
    for row, utterance in enumerate(batch):
        padded[row, :len(utterance.features)] = utterance.features
    return padded, frames
