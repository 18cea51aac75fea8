"""The windows of a list of files, in memory pack by pack (:class:`AudioBatchData`).

Files are grouped into *packs* of at most ``max_size_loaded`` samples (planned by
:mod:`cpc.data.plan`); a pack's files are read, glued and cut into windows, and the next pack
is read in the background while one trains.
"""
from __future__ import annotations

import functools
import random
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cpc.data.audio import read_audio
from cpc.data.batch import Batch, LoadedPack
from cpc.data.listing import SeqInfo
from cpc.data.loader import AudioLoader
from cpc.data.plan import Pack, mix_seed, plan_packs, rank_shares, too_short
from cpc.utils.constants import FRAME_SIZE, SAMPLE_RATE, SAMPLING_TYPES, window_size_problem
from cpc.utils.errors import DataError


class AudioBatchData:
    """Windows over the glued audio of a list of files, loaded pack by pack.

    ``phone_labels`` (stem -> frame ids) must cover ``sequences`` with lengths already reconciled
    by :func:`~cpc.data.labels.attach_phone_labels`. Under torchrun (``world_size`` > 1) this
    rank owns a share of the files (:func:`~cpc.data.plan.rank_shares`, fixed by ``seed``) and
    reads only those, in packs of ``max_size_loaded / world_size`` samples re-planned every
    epoch. Two packs are in memory at most (the current one and the one being prefetched), so
    peak audio memory per rank is about ``2 * max_size_loaded / world_size * 4`` bytes.
    """

    def __init__(self, path_db: str | Path, size_window: int, sequences: Sequence[SeqInfo],
                 phone_labels: dict[str, np.ndarray] | None, n_speakers: int, *,
                 n_process_loader: int = 8, max_size_loaded: int = 4_000_000_000,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        problem = window_size_problem(size_window, "--sizeWindow", nearest=False)
        if problem:
            raise DataError(problem)
        if not sequences:
            raise DataError(f"no file to load from {path_db}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in [0, {world_size})")
        self.path_db = Path(path_db)
        self.size_window = size_window
        self.sequences = list(sequences)
        self.phone_labels = phone_labels
        self.n_speakers = n_speakers
        self.n_process_loader = max(1, n_process_loader)
        self.max_size_loaded = max_size_loaded
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._lengths = [s.n_samples for s in self.sequences]
        self._speakers = [s.speaker for s in self.sequences]
        self._paths = [s.path for s in self.sequences]
        self.share = rank_shares(self._lengths, world_size, seed)[rank]
        self.max_pack_samples = max(1, max_size_loaded // world_size)
        self._plans: dict[tuple[int, int], list[Pack]] = {}
        longest = max(p.n_samples for p in self.plan(0))
        if longest < size_window:
            raise DataError(f"no window of --sizeWindow {size_window} samples fits: the longest "
                            f"pack of {path_db} holds {longest} samples")
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cpc-pack")
        self._loads: dict[tuple[int, ...], Future] = {}
        self._lock = threading.Lock()

    # -- plans ---------------------------------------------------------------------------------
    def plan(self, epoch: int, generation: int = 0) -> list[Pack]:
        """This rank's packs in epoch ``epoch`` (``generation`` counts the data orders drawn
        anew by collapse rollbacks): a pure function of the seed and these numbers."""
        key = (epoch, generation)
        if key not in self._plans:
            if len(self._plans) > 4:
                self._plans.pop(next(iter(self._plans)))
            rng = random.Random(mix_seed(self.seed, epoch, generation, self.rank))
            self._plans[key] = plan_packs(self.share, self._lengths, self._speakers, self._paths,
                                          self.max_pack_samples, rng)
        return self._plans[key]

    @functools.cached_property
    def _whole_plan(self) -> list[Pack]:
        """The packs of every file in one process (for the facts below; planned once)."""
        return plan_packs(range(len(self.sequences)), self._lengths, self._speakers,
                          self._paths, self.max_size_loaded, random.Random(self.seed))

    # -- facts ---------------------------------------------------------------------------------
    @property
    def n_packs(self) -> int:
        """This rank's packs per epoch."""
        return len(self.plan(0))

    @property
    def n_samples(self) -> int:
        return sum(self._lengths)

    def n_windows(self) -> int:
        """Windows per epoch at offset 0 (all files, all ranks)."""
        return sum(p.n_samples // self.size_window for p in self._whole_plan)

    def getNSpeakers(self) -> int:
        return self.n_speakers

    def summary(self) -> dict:
        speakers = {s.speaker for s in self.sequences}
        out = {"files": len(self.sequences), "hours": self.n_samples / SAMPLE_RATE / 3600,
               "speakers": len(speakers), "packs": self.n_packs,
               "windows": self.n_windows(), "size_window": self.size_window}
        if self.phone_labels is not None:
            used = set()
            for seq in self.sequences:
                used.update(np.unique(self.phone_labels[seq.stem]).tolist())
            out["phones"] = len(used)
        return out

    def unused_audio(self, sampling_type: str) -> str | None:
        """A warning when some audio is in stretches shorter than one window (no window of
        ``sampling_type`` can cover it), saying how many and how much; None otherwise."""
        count, samples = too_short(self._whole_plan, sampling_type, self.size_window)
        if not count:
            return None
        unit = {"samespeaker": "speakers' audio", "samesequence": "files"}.get(sampling_type,
                                                                              "packs")
        return (f"{count} {unit} ({samples / SAMPLE_RATE:.1f} s of audio) are shorter than one "
                f"--sizeWindow {self.size_window} window and are not used by --samplingType "
                f"{sampling_type}")

    def describe(self) -> str:
        """One line: files, hours, speakers, phones, windows, packs (and the share per rank)."""
        s = self.summary()
        phones = f", {s['phones']} phones" if "phones" in s else ""
        ranks = f" per process, each of {self.world_size} reading 1/{self.world_size} of " \
                f"the files" if self.world_size > 1 else ""
        return (f"{s['files']} files, {s['hours']:.2f} h, {s['speakers']} speakers{phones}, "
                f"{s['windows']} windows of {s['size_window']} samples, {s['packs']} "
                f"pack(s){ranks}")

    # -- loading -------------------------------------------------------------------------------
    def _read(self, pack: Pack) -> LoadedPack:
        paths = [self.path_db / self._paths[i] for i in pack.seq_ids]
        with ThreadPoolExecutor(self.n_process_loader) as pool:
            arrays = list(pool.map(read_audio, paths))
        audio = np.empty(pack.n_samples, dtype=np.float32)
        for i, (start, end, data) in enumerate(zip(pack.seq_starts[:-1], pack.seq_starts[1:],
                                                    arrays)):
            want = int(end - start)
            if len(data) < want:
                raise DataError(f"{paths[i]} holds {len(data)} samples but its header said "
                                f"{want}; the file is truncated or was changed (rerun with "
                                f"--ignore_cache)")
            audio[start:end] = data[:want]
        phones = None
        if self.phone_labels is not None:
            phones = torch.from_numpy(np.concatenate(
                [self.phone_labels[self.sequences[i].stem][:self._lengths[i] // FRAME_SIZE]
                 for i in pack.seq_ids]).astype(np.int64))
        return LoadedPack(pack, torch.from_numpy(audio), phones)

    def prefetch(self, pack: Pack) -> None:
        """Start reading ``pack`` in the background (nothing if it is read or being read)."""
        with self._lock:
            if pack.key not in self._loads:
                self._loads[pack.key] = self._pool.submit(self._read, pack)

    def load(self, pack: Pack, then: Pack | None = None) -> LoadedPack:
        """``pack``'s audio, waiting for its read; every other pack is dropped, and ``then``
        (the next one) starts reading in the background."""
        self.prefetch(pack)
        loaded = self._loads[pack.key].result()
        with self._lock:
            keep = {pack.key} | ({then.key} if then is not None else set())
            for key in [k for k in self._loads if k not in keep]:
                self._loads.pop(key).cancel()
        if then is not None:
            self.prefetch(then)
        return loaded

    def close(self) -> None:
        """Stop the background reads (also done at interpreter exit)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- batches -------------------------------------------------------------------------------
    def make_batch(self, loaded: LoadedPack, starts: Sequence[int],
                   frame_provenance: bool = False) -> Batch:
        """The windows starting at ``starts`` samples of a loaded pack (with the file of every
        frame when ``frame_provenance``: windows may span several glued files)."""
        pack = loaded.pack
        starts_np = np.asarray(starts, dtype=np.int64)
        audio = torch.stack([loaded.audio[s:s + self.size_window] for s in starts_np]).unsqueeze(1)
        position = np.searchsorted(pack.seq_starts, starts_np, side="right") - 1
        phones = None
        if loaded.phones is not None:
            frames = self.size_window // FRAME_SIZE
            phones = torch.stack([loaded.phones[s // FRAME_SIZE: s // FRAME_SIZE + frames]
                                  for s in starts_np])
        frame_seq_index = None
        if frame_provenance:
            frame_starts = starts_np[:, None] + FRAME_SIZE * np.arange(
                self.size_window // FRAME_SIZE)
            frame_position = np.searchsorted(pack.seq_starts, frame_starts, side="right") - 1
            frame_seq_index = torch.from_numpy(pack.seq_ids[frame_position])
        return Batch(audio=audio,
                     speaker=torch.from_numpy(pack.seq_speakers[position]),
                     phones=phones,
                     seq_index=torch.from_numpy(pack.seq_ids[position]),
                     seq_offset=torch.from_numpy(starts_np - pack.seq_starts[position]),
                     frame_seq_index=frame_seq_index)

    def getDataLoader(self, batchSize: int, samplingType: str = "samespeaker", *,
                      randomOffset: bool = True, frame_provenance: bool = False
                      ) -> AudioLoader:
        """An iterable over one epoch of this rank's batches (every pack); iterate it again for
        each epoch. ``randomOffset`` shifts each pack's windows by a random offset drawn per
        epoch (training); without it they start at the pack's first sample (evaluation).
        ``frame_provenance`` adds the file of every frame to each batch (captures).
        """
        if samplingType not in SAMPLING_TYPES:
            raise DataError(f"--samplingType {samplingType!r} is not one of "
                            f"{', '.join(SAMPLING_TYPES)}")
        if batchSize <= 0:
            raise DataError(f"batch size must be positive, got {batchSize}")
        return AudioLoader(self, batchSize, samplingType, random_offset=randomOffset,
                           frame_provenance=frame_provenance)
