"""Batches of windows, epoch after epoch (:class:`AudioLoader`): the samplers of
:mod:`cpc.data.plan` drawn over the packs of a :class:`WindowSource`
(:class:`cpc.data.packs.AudioBatchData`, which makes its loaders with ``getDataLoader``)."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Iterator, Protocol, Sequence

from cpc.data.batch import Batch, LoadedPack
from cpc.data.listing import SeqInfo
from cpc.data.plan import Pack, count_batches, make_batches, mix_seed, random_offset, \
    window_seq_ids


class WindowSource(Protocol):
    """What a loader reads its packs and windows from (:class:`cpc.data.packs.AudioBatchData`)."""

    path_db: Path
    size_window: int
    sequences: list[SeqInfo]
    seed: int
    rank: int

    def plan(self, epoch: int, generation: int = 0) -> list[Pack]:
        """This rank's packs in an epoch."""

    def prefetch(self, pack: Pack) -> None:
        """Start reading ``pack`` in the background."""

    def load(self, pack: Pack, then: Pack | None = None) -> LoadedPack:
        """``pack``'s audio; ``then`` starts reading next."""

    def make_batch(self, loaded: LoadedPack, starts: Sequence[int],
                   frame_provenance: bool = False) -> Batch:
        """The windows starting at ``starts`` samples of a loaded pack."""


class AudioLoader:
    """One epoch of batches per iteration, pack after pack, each pack with its random offset.

    Without :meth:`set_epoch` every iteration is epoch 0 (evaluation, probes, captures: the
    same windows each time). A training loop calls ``set_epoch(epoch)`` first, as with
    torch's DistributedSampler: the packs are re-planned and the draws re-seeded per epoch, so
    an epoch is reproducible from its number alone. ``limit`` truncates the epoch (ranks agree
    on the shortest share, to stay in lockstep) and ``skip`` passes over its first batches
    without building them (a resumed epoch); both apply to the next iteration.
    """

    def __init__(self, dataset: WindowSource, batch_size: int, sampling_type: str, *,
                 random_offset: bool, frame_provenance: bool = False) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampling_type = sampling_type
        self.random_offset = random_offset
        self.frame_provenance = frame_provenance
        self.epoch, self.generation = 0, 0
        self.epochs_advance = False  # set_epoch called: the next epoch follows this one
        self.limit: int | None = None
        self.skip = 0

    def set_epoch(self, epoch: int, generation: int = 0) -> None:
        """Plan epoch ``epoch`` (data order ``generation``) and start reading its first pack."""
        self.epoch, self.generation, self.epochs_advance = epoch, generation, True
        self.limit, self.skip = None, 0
        self.dataset.prefetch(self._packs()[0])

    def _packs(self) -> list[Pack]:
        return self.dataset.plan(self.epoch, self.generation)

    def _draws(self, index: int) -> tuple[int, random.Random]:
        """Pack ``index``'s offset, and the generator its batches are then drawn from."""
        data = self.dataset
        rng = random.Random(mix_seed(data.seed, self.epoch, self.generation, data.rank,
                                     index + 1))
        return (random_offset(rng, data.size_window) if self.random_offset else 0), rng

    def _counts(self) -> list[int]:
        return [count_batches(pack, self.sampling_type, self.dataset.size_window,
                              self.batch_size, self._draws(i)[0])
                for i, pack in enumerate(self._packs())]

    def local_length(self) -> int:
        """Batches of this rank's share in the planned epoch."""
        return sum(self._counts())

    def __len__(self) -> int:
        """Batches of the planned epoch (after ``limit``, skipped ones included)."""
        return self._length(self.local_length())

    def _length(self, local: int) -> int:
        return local if self.limit is None else min(local, self.limit)

    def plan_digest(self) -> str:
        """A digest of the planned epoch as this rank reads it: its packs' files (path, length,
        speaker) in order, each pack's batch count, the epoch's length and what places the
        windows. Passing over a cut epoch's first N batches replays it only if this is
        unchanged."""
        data, digest = self.dataset, hashlib.sha256()
        digest.update(json.dumps([data.seed, data.size_window, self.batch_size,
                                  self.sampling_type, self.random_offset, len(self),
                                  self._counts()]).encode())
        for pack in self._packs():
            seqs = [data.sequences[i] for i in pack.seq_ids.tolist()]
            digest.update(json.dumps([(seq.path, seq.n_samples, seq.speaker)
                                      for seq in seqs]).encode())
        return digest.hexdigest()[:16]

    def _following(self, index: int) -> Pack:
        """The pack read after pack ``index``: the next one, or the next epoch's first."""
        packs = self._packs()
        if index + 1 < len(packs):
            return packs[index + 1]
        if self.epochs_advance:
            return self.dataset.plan(self.epoch + 1, self.generation)[0]
        return packs[0]

    def files_of_batches(self, indices: Sequence[int]) -> list[str]:
        """The paths (sorted) of the files read by batches ``indices`` of the planned epoch,
        redrawn from the plan without reading audio (to name them when a loss is not finite)."""
        data, position, wanted, ids = self.dataset, 0, sorted(set(indices)), set()
        for pack_index, (pack, count) in enumerate(zip(self._packs(), self._counts())):
            inside = [i - position for i in wanted if position <= i < position + count]
            if inside:
                offset, rng = self._draws(pack_index)
                batches = make_batches(pack, self.sampling_type, data.size_window,
                                       self.batch_size, offset, rng)
                for i in inside:
                    ids.update(window_seq_ids(pack, batches[i], data.size_window))
            position += count
        return sorted(str(data.path_db / data.sequences[i].path) for i in ids)

    def __iter__(self) -> Iterator[Batch]:
        """One epoch; its first ``skip`` batches are passed over (their packs are not read)."""
        data = self.dataset
        skip, self.skip = self.skip, 0
        counts = self._counts()
        total = self._length(sum(counts))
        position = 0
        for index, (pack, count) in enumerate(zip(self._packs(), counts)):
            if position >= total:
                return
            if position + count <= skip:
                position += count
                continue
            offset, rng = self._draws(index)
            batches = make_batches(pack, self.sampling_type, data.size_window,
                                   self.batch_size, offset, rng)
            loaded = None  # the previous pack is freed before the next one is held
            loaded = data.load(pack, then=self._following(index))
            for starts in batches:
                if position >= total:
                    return
                if position >= skip:
                    yield data.make_batch(loaded, starts, self.frame_provenance)
                position += 1
