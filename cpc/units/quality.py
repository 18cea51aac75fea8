"""How well discrete units match phones: purities and PNMI (HuBERT), and bitrate (ZeroSpeech).

Purities and PNMI follow Hsu et al. 2021 (HuBERT, sec. IV-D). From frame-aligned pairs
(phone x, unit z), the joint distribution is ``p_xz(i, j)`` = (frames with phone i and unit j) /
(frames), with marginals ``p_x`` and ``p_z``:

* phone purity   = ``sum_j p_z(j) max_i p_x|z(i | j)`` = ``sum_j max_i p_xz(i, j)``: the frame
  accuracy of labelling each unit with its most frequent phone;
* cluster purity = ``sum_i p_x(i) max_j p_z|x(j | i)`` = ``sum_i max_j p_xz(i, j)``: the same
  with the roles swapped (each phone's most frequent unit);
* PNMI = ``I(x; z) / H(x)``: the fraction of the phone entropy the units explain.

Pure functions of integer arrays; reading files is :mod:`cpc.units.evaluate`'s job.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np


def joint_counts(phones: np.ndarray, units: np.ndarray, n_phones: int | None = None,
                 n_units: int | None = None) -> np.ndarray:
    """``n_phones x n_units`` frame counts of aligned (phone, unit) pairs."""
    phones, units = np.asarray(phones, np.int64), np.asarray(units, np.int64)
    if phones.shape != units.shape:
        raise ValueError(f"{phones.shape[0]} phone labels but {units.shape[0]} units")
    n_phones = int(phones.max()) + 1 if n_phones is None else n_phones
    n_units = int(units.max()) + 1 if n_units is None else n_units
    counts = np.zeros((n_phones, n_units), np.int64)
    np.add.at(counts, (phones, units), 1)
    return counts


def _total(counts: np.ndarray) -> int:
    total = int(counts.sum())
    if total == 0:
        raise ValueError("no aligned frame")
    return total


def phone_purity(counts: np.ndarray) -> float:
    """Expected largest phone probability given the unit."""
    return int(counts.max(axis=0).sum()) / _total(counts)


def cluster_purity(counts: np.ndarray) -> float:
    """Expected largest unit probability given the phone."""
    return int(counts.max(axis=1).sum()) / _total(counts)


def pnmi(counts: np.ndarray) -> float:
    """Phone-normalised mutual information ``I(x; z) / H(x)`` (natural logs cancel)."""
    p = counts / _total(counts)
    px, pz = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    mutual = float((p[nz] * np.log(p[nz] / np.outer(px, pz)[nz])).sum())
    entropy = float(-(px[px > 0] * np.log(px[px > 0])).sum())
    if entropy == 0:
        raise ValueError("a single phone: PNMI is undefined (H(phone) = 0)")
    return mutual / entropy


def merge_repeats(units: np.ndarray) -> np.ndarray:
    """A sequence with each run of identical consecutive symbols replaced by one symbol."""
    units = np.asarray(units)
    if len(units) == 0:
        return units
    return units[np.concatenate([[True], units[1:] != units[:-1]])]


def bitrate(sequences: Iterable[np.ndarray], duration_s: float, *, merge: bool = False) -> float:
    """ZeroSpeech bitrate (2019, kept in 2021) in bits per second: ``N / D * H``, with N the
    number of symbols of all sequences, D their total duration and H the entropy (bits) of the
    symbols' unigram distribution over all sequences.

    Repeats are not merged by default: ZeroSpeech 2019's evaluation counts the symbols as
    submitted, and frame-rate units are submitted one per 10 ms frame, so their repeats are
    what carries the durations; merging them (``merge``) drops the durations without
    counting their cost, which is the lower, "segment" bitrate some papers report.
    """
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    sequences = [merge_repeats(s) if merge else np.asarray(s) for s in sequences]
    symbols = np.concatenate(sequences) if sequences else np.zeros(0, np.int64)
    if len(symbols) == 0:
        raise ValueError("no symbol")
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(len(symbols) / duration_s * -(p * np.log2(p)).sum())
