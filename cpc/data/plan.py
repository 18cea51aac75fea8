"""Which windows a process trains on, epoch by epoch: pure functions of the corpus's geometry.

The model sees fixed-size windows cut from the glued audio of many files, as in CPC_audio:

* **shares**: under torchrun every process (rank) owns a fixed share of the files, dealt so
  that the ranks' audio totals are as equal as possible (:func:`rank_shares`); a rank reads
  and decodes only its share, so decode work and audio memory are 1/N per rank;
* **packs**: every epoch, a rank's files are shuffled and grouped into packs of at most
  ``max_samples`` samples, each sorted by (speaker, path) so that a speaker's audio is one
  stretch (:func:`plan_packs`); a share that fits one pack is the same pack every epoch;
* **samplers**: a pack's geometry and a random offset (a multiple of 160 samples) give its
  batches of window start samples (:func:`make_batches`); :func:`count_batches` gives their
  number without drawing them.

Every draw comes from a generator seeded by :func:`mix_seed` of (run seed, epoch, data
generation, rank, pack...), so an epoch is a pure function of these numbers: a run resumed in
the middle of an epoch replays it exactly, and ranks can plan without talking to each other.
"""
from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cpc.utils.constants import FRAME_SIZE, SAMPLING_TYPES


# The last part of a mix_seed call, which keeps apart streams of the same other parts: the tie
# break of the rank shares is (seed, SHARES_STREAM); the batches of pack i of an epoch use
# (seed, epoch, generation, rank, i + 1), and the epoch's global generators (negatives,
# dropout; cpc.trainer.seed_epoch) (seed, epoch, generation, rank, EPOCH_STREAM): apart from
# the packs' streams as long as an epoch has fewer than 24300 packs (each of up to
# --max_size_loaded samples; 4e9 by default).
SHARES_STREAM = 7
EPOCH_STREAM = 0x5eed


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python versions."""
    digest = hashlib.blake2b(b"|".join(str(int(p)).encode() for p in parts), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def rank_shares(lengths: Sequence[int], world_size: int, seed: int) -> list[np.ndarray]:
    """Indices of the files each of ``world_size`` ranks owns, sorted.

    Longest file first, each to the rank with the least audio so far (ties between equal
    lengths broken by a seeded shuffle): the ranks' totals differ by at most one file's length.
    """
    order = list(range(len(lengths)))
    random.Random(mix_seed(seed, SHARES_STREAM)).shuffle(order)
    order.sort(key=lambda i: -lengths[i])  # stable: equal lengths keep the shuffled order
    heap = [(0, rank) for rank in range(world_size)]
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for index in order:
        total, rank = heapq.heappop(heap)
        shares[rank].append(index)
        heapq.heappush(heap, (total + int(lengths[index]), rank))
    return [np.array(sorted(share), dtype=np.int64) for share in shares]


# --------------------------------------------------------------------------------------------
# Packs
# --------------------------------------------------------------------------------------------

@dataclass
class Pack:
    """The geometry of a group of files glued together, sorted by speaker (no audio)."""

    seq_ids: np.ndarray  # (n,) indices into the dataset's sequence list, in glued order
    seq_starts: np.ndarray  # (n+1,) sample boundaries of each file in the glued audio
    seq_speakers: np.ndarray  # (n,) speaker of each file

    @property
    def n_samples(self) -> int:
        return int(self.seq_starts[-1])

    @property
    def key(self) -> tuple[int, ...]:
        """Identifies the pack's content: equal keys, equal glued audio."""
        return tuple(self.seq_ids.tolist())

    def speaker_bounds(self) -> np.ndarray:
        """Sample boundaries of the runs of files with the same speaker (n_runs + 1,)."""
        change = np.flatnonzero(np.diff(self.seq_speakers)) + 1
        return self.seq_starts[np.concatenate([[0], change, [len(self.seq_speakers)]])]


def plan_packs(indices: Sequence[int], lengths: Sequence[int], speakers: Sequence[int],
               paths: Sequence[str], max_samples: int, rng: random.Random) -> list[Pack]:
    """Shuffle the files ``indices`` (seeded), group them into packs of at most
    ``max_samples`` samples (a longer file is a pack of its own), and sort each pack by
    (speaker, path). ``lengths``, ``speakers`` and ``paths`` are indexed by file."""
    order = list(indices)
    rng.shuffle(order)
    groups: list[list[int]] = [[]]
    size = 0
    for index in order:
        if groups[-1] and size + lengths[index] > max_samples:
            groups.append([])
            size = 0
        groups[-1].append(index)
        size += lengths[index]
    packs = []
    for group in groups:
        group.sort(key=lambda i: (speakers[i], paths[i]))
        sizes = np.array([lengths[i] for i in group], dtype=np.int64)
        packs.append(Pack(seq_ids=np.array(group, dtype=np.int64),
                          seq_starts=np.concatenate([[0], np.cumsum(sizes)]),
                          seq_speakers=np.array([speakers[i] for i in group], dtype=np.int64)))
    return packs


# --------------------------------------------------------------------------------------------
# Samplers: from a pack's geometry to batches of window start samples
# --------------------------------------------------------------------------------------------

def random_offset(rng: random.Random, size_window: int) -> int:
    """A window offset for a pack: a multiple of 160 samples in [0, size_window / 2], so that
    encoder frames line up with the 10 ms phone labels."""
    return rng.randint(0, size_window // 2 // FRAME_SIZE) * FRAME_SIZE


def _windows_in(start: int, end: int, size_window: int, offset: int) -> list[int]:
    """Start samples of the windows of [start + offset, end) that fit entirely."""
    count = max(0, (end - start - offset) // size_window)
    return [start + offset + k * size_window for k in range(count)]


def _chunk(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def grouped_batches(bounds: Sequence[int], size_window: int, batch_size: int, offset: int,
                    rng: random.Random) -> list[list[int]]:
    """Batches whose windows all lie inside one interval of ``bounds`` (a speaker or a file).

    Windows are shuffled inside each interval and cut into batches (the last batch of an interval
    may be smaller); the batch order is then shuffled. This is CPC_audio's same-speaker sampler.
    """
    batches = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        windows = _windows_in(int(start), int(end), size_window, offset)
        rng.shuffle(windows)
        batches.extend(_chunk(windows, batch_size))
    rng.shuffle(batches)
    return batches


def uniform_batches(total: int, size_window: int, batch_size: int, offset: int,
                    rng: random.Random) -> list[list[int]]:
    """Full batches of windows drawn without replacement from the whole pack."""
    windows = _windows_in(0, total, size_window, offset)
    rng.shuffle(windows)
    n_full = len(windows) // batch_size
    return _chunk(windows[:n_full * batch_size], batch_size)


def sequential_batches(total: int, size_window: int, batch_size: int, offset: int
                       ) -> list[list[int]]:
    """Consecutive windows in order; the last batch may be smaller (evaluation and capture)."""
    return _chunk(_windows_in(0, total, size_window, offset), batch_size)


def group_bounds(pack: Pack, sampling_type: str) -> np.ndarray:
    """Sample boundaries of the stretches a window may not cross under ``sampling_type``."""
    if sampling_type == "samespeaker":
        return pack.speaker_bounds()
    if sampling_type == "samesequence":
        return pack.seq_starts
    return np.array([0, pack.n_samples])


def make_batches(pack: Pack, sampling_type: str, size_window: int, batch_size: int, offset: int,
                 rng: random.Random) -> list[list[int]]:
    """Window start samples of one pack, batched as ``sampling_type`` says."""
    if sampling_type in ("samespeaker", "samesequence"):
        return grouped_batches(group_bounds(pack, sampling_type), size_window, batch_size,
                               offset, rng)
    if sampling_type == "uniform":
        return uniform_batches(pack.n_samples, size_window, batch_size, offset, rng)
    if sampling_type == "sequential":
        return sequential_batches(pack.n_samples, size_window, batch_size, offset)
    raise ValueError(f"--samplingType {sampling_type!r} is not one of "
                     f"{', '.join(SAMPLING_TYPES)}")


def count_batches(pack: Pack, sampling_type: str, size_window: int, batch_size: int,
                  offset: int) -> int:
    """``len(make_batches(...))`` without drawing: the count depends only on the geometry."""
    if sampling_type == "uniform":
        return max(0, (pack.n_samples - offset) // size_window) // batch_size
    windows = np.maximum(0, (np.diff(group_bounds(pack, sampling_type)) - offset) // size_window)
    return int(np.sum(-(-windows // batch_size)))


def window_seq_ids(pack: Pack, starts: Sequence[int], size_window: int) -> list[int]:
    """The files (dataset indices, sorted) that the windows starting at ``starts`` samples of
    ``pack`` cover: a window may span several glued files."""
    starts = np.asarray(starts, dtype=np.int64)
    first = np.searchsorted(pack.seq_starts, starts, side="right") - 1
    last = np.searchsorted(pack.seq_starts, starts + size_window - 1, side="right") - 1
    return sorted({int(i) for a, b in zip(first, last) for i in pack.seq_ids[a:b + 1]})


def too_short(packs: Sequence[Pack], sampling_type: str, size_window: int) -> tuple[int, int]:
    """Stretches (speakers, files or packs) shorter than one window, which no window covers:
    how many, and their samples."""
    lengths = np.concatenate([np.diff(group_bounds(pack, sampling_type)) for pack in packs])
    short = lengths[lengths < size_window]
    return len(short), int(short.sum())
