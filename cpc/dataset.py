"""LibriSpeech-format data pipeline: listing, split lists, phone labels, packs, windows, samplers.

The model sees fixed-size windows cut from the glued audio of many files, as in CPC_audio:
files are grouped into *packs* of at most ``max_size_loaded`` samples; inside a pack, files are
sorted by speaker and concatenated; a *sampler* turns a pack into batches of window start
positions. While one pack trains, the next one is read in the background.

Every user-facing problem (missing directory, unreadable file, wrong sample rate, split list
matching nothing, bad labels...) raises :class:`DataError` with a message naming the culprit.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import soundfile as sf
import torch

from cpc.utils.errors import CPCError
from cpc.utils.files import atomic_write_text
from cpc.utils.constants import FRAME_SIZE, SAMPLE_RATE, SAMPLING_TYPES

_CACHE_VERSION = 1


class DataError(CPCError):
    """A problem with the user's data or data flags; the message names the file or flag."""


class SeqInfo(NamedTuple):
    """One audio file of the corpus."""

    speaker: int  # index into the speaker list returned with it
    path: str  # path relative to pathDB, '/'-separated
    n_samples: int

    @property
    def stem(self) -> str:
        return Path(self.path).stem


# --------------------------------------------------------------------------------------------
# Listing (with a cache that follows the tree)
# --------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where listings are cached: $CPC_CACHE_DIR, else $XDG_CACHE_HOME/cpc_speech, else ~/.cache."""
    if os.environ.get("CPC_CACHE_DIR"):
        return Path(os.environ["CPC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cpc_speech"


def _cache_file(path_db: Path, extension: str) -> Path:
    key = hashlib.sha1(f"{path_db.resolve()}|{extension}".encode()).hexdigest()[:16]
    return cache_dir() / f"listing_{key}.json"


def _walk_audio(path_db: Path, extension: str) -> list[tuple[str, int, int]]:
    """All files under path_db ending in extension, as (relative path, size, mtime_ns), sorted."""
    found = []
    stack = [path_db]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(Path(entry.path))
                elif entry.name.endswith(extension):
                    st = entry.stat()
                    rel = Path(entry.path).relative_to(path_db).as_posix()
                    found.append((rel, st.st_size, st.st_mtime_ns))
    found.sort()
    return found


def _probe(path: Path) -> dict:
    """Header facts of one audio file, or a DataError naming it."""
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise DataError(f"cannot read audio file {path}: {exc}") from None
    return {"n_samples": int(info.frames), "sample_rate": int(info.samplerate),
            "channels": int(info.channels)}


def findAllSeqs(pathDB: str | Path, extension: str = ".flac", loadCache: bool = True,
                speaker_level: int = 1, n_workers: int = 8
                ) -> tuple[list[SeqInfo], list[str]]:
    """List every ``extension`` file under pathDB; the speaker is its first directory level.

    Returns (sequences, speaker names) with ``sequences[i].speaker`` indexing the names.
    Header facts (length, rate, channels) are cached per file and refreshed for files whose size
    or modification time changed, so the cache follows the tree; ``loadCache=False`` (the
    ``--ignore_cache`` flag) re-reads every header. Every file's rate and emptiness are checked
    here, before any training starts.
    """
    path_db = Path(pathDB)
    if not path_db.is_dir():
        raise DataError(f"pathDB {path_db} does not exist or is not a directory")
    files = _walk_audio(path_db, extension)
    if not files:
        seen = sorted({p.suffix for p in path_db.rglob("*") if p.is_file() and p.suffix})
        hint = f" (extensions present: {', '.join(seen[:8])}; see --file_extension)" if seen else \
            " (the directory is empty)"
        raise DataError(f"no file ending in {extension!r} under {path_db}{hint}")

    cache_path = _cache_file(path_db, extension)
    cached: dict = {}
    if loadCache and cache_path.is_file():
        try:
            content = json.loads(cache_path.read_text())
            if content.get("version") == _CACHE_VERSION:
                cached = content["files"]
        except (OSError, ValueError, KeyError):
            cached = {}

    facts: dict[str, dict] = {}
    to_probe = []
    for rel, size, mtime in files:
        entry = cached.get(rel)
        if entry and entry["size"] == size and entry["mtime_ns"] == mtime:
            facts[rel] = entry
        else:
            to_probe.append((rel, size, mtime))
    if to_probe:
        with ThreadPoolExecutor(max(1, n_workers)) as pool:
            probed = pool.map(lambda item: _probe(path_db / item[0]), to_probe)
            for (rel, size, mtime), info in zip(to_probe, probed):
                facts[rel] = {"size": size, "mtime_ns": mtime, **info}
        _write_listing_cache(cache_path, {"version": _CACHE_VERSION, "pathDB": str(path_db.resolve()),
                                        "files": facts})

    speaker_names: list[str] = []
    speaker_index: dict[str, int] = {}
    sequences = []
    for rel, _, _ in files:
        parts = rel.split("/")
        if len(parts) <= speaker_level:
            raise DataError(f"{path_db / rel} is not inside a speaker directory: expected "
                            f"pathDB/<speaker>/.../<file>{extension} (LibriSpeech layout)")
        speaker = "/".join(parts[:speaker_level])
        if speaker not in speaker_index:
            speaker_index[speaker] = len(speaker_names)
            speaker_names.append(speaker)
        _check_header(path_db / rel, facts[rel])
        sequences.append(SeqInfo(speaker_index[speaker], rel, facts[rel]["n_samples"]))
    return sequences, speaker_names


def _check_header(path: Path, info: dict) -> None:
    if info["sample_rate"] != SAMPLE_RATE:
        raise DataError(
            f"{path} is sampled at {info['sample_rate']} Hz; expected {SAMPLE_RATE} Hz. Audio is "
            f"never resampled silently: convert the corpus first, e.g. "
            f"`sox in{path.suffix} -r {SAMPLE_RATE} out{path.suffix}`")
    if info["n_samples"] == 0:
        raise DataError(f"{path} is empty (0 samples)")


def _write_listing_cache(path: Path, content: dict) -> None:
    """Best-effort cache write; an unwritable cache directory is not an error."""
    try:
        atomic_write_text(path, json.dumps(content), durable=False)
    except OSError as exc:
        warnings.warn(f"could not write the listing cache {path}: {exc}")


# --------------------------------------------------------------------------------------------
# Split lists
# --------------------------------------------------------------------------------------------

def read_split_list(path_split: str | Path) -> list[str]:
    """File stems listed one per line (blank lines ignored)."""
    path_split = Path(path_split)
    if not path_split.is_file():
        raise DataError(f"split list {path_split} does not exist")
    stems = [Path(line.strip()).stem for line in path_split.read_text().splitlines() if line.strip()]
    if not stems:
        raise DataError(f"split list {path_split} is empty")
    return stems


def filterSeqs(pathSplit: str | Path, seqs: Sequence[SeqInfo]) -> list[SeqInfo]:
    """The sequences whose stem is listed in pathSplit.

    Only stems are matched against the listing, so a split list can never point outside pathDB.
    Listed stems absent from pathDB are reported; a list matching nothing is an error.
    """
    wanted = read_split_list(pathSplit)
    wanted_set = set(wanted)
    kept = [s for s in seqs if s.stem in wanted_set]
    if not kept:
        raise DataError(f"split list {pathSplit} matches no file of the corpus (first entries: "
                        f"{', '.join(wanted[:3])}; first corpus stems: "
                        f"{', '.join(s.stem for s in seqs[:3])})")
    found = {s.stem for s in kept}
    missing = [stem for stem in wanted if stem not in found]
    if missing:
        warnings.warn(f"{len(missing)} of {len(wanted)} stems of {pathSplit} are not in the "
                      f"corpus and are ignored (first: {', '.join(missing[:5])})")
    if len(wanted_set) < len(wanted):
        twice = sorted({stem for stem in wanted if wanted.count(stem) > 1})
        warnings.warn(f"{pathSplit} lists {len(wanted) - len(wanted_set)} stem(s) more than "
                      f"once (first: {', '.join(twice[:5])}); each file is used once")
    return kept


def split_train_val(seqs: Sequence[SeqInfo], val_fraction: float = 0.01, seed: int = 0
                    ) -> tuple[list[SeqInfo], list[SeqInfo]]:
    """Seeded random split used when no --pathVal is given (CPC_audio's 99/1 split)."""
    order = list(seqs)
    random.Random(seed).shuffle(order)
    n_val = max(1, int(round(len(order) * val_fraction)))
    if len(order) < 2:
        raise DataError("at least two files are needed to split training and validation data")
    return order[n_val:], order[:n_val]


# --------------------------------------------------------------------------------------------
# Phone labels
# --------------------------------------------------------------------------------------------

def parseSeqLabels(pathLabels: str | Path) -> tuple[dict[str, np.ndarray], int]:
    """Read CPC_audio phone labels: one line per file, ``<stem> id id id ...`` (one id per 10 ms).

    Returns (labels by stem, number of phone classes = max id + 1).
    """
    pathLabels = Path(pathLabels)
    if not pathLabels.is_file():
        raise DataError(f"phone label file {pathLabels} (--path_phone_data) does not exist")
    labels: dict[str, np.ndarray] = {}
    max_id = -1
    with open(pathLabels) as handle:
        for line_no, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                ids = np.array(fields[1:], dtype=np.int64)
            except ValueError:
                raise DataError(f"{pathLabels}:{line_no}: expected '<stem> id id ...' with integer "
                                f"ids, got {line.strip()[:80]!r}") from None
            if len(ids) == 0 or ids.min() < 0:
                raise DataError(f"{pathLabels}:{line_no}: {fields[0]} has no labels or a "
                                f"negative id")
            if fields[0] in labels:
                raise DataError(f"{pathLabels}:{line_no}: {fields[0]} is labelled twice; one "
                                f"line per file")
            labels[fields[0]] = ids.astype(np.int32)
            max_id = max(max_id, int(ids.max()))
    if not labels:
        raise DataError(f"phone label file {pathLabels} holds no labels")
    return labels, max_id + 1


def attach_phone_labels(seqs: Sequence[SeqInfo], labels: dict[str, np.ndarray],
                        path_db: str | Path = "", labels_file: str | Path = "--path_phone_data"
                        ) -> list[SeqInfo]:
    """Keep the labelled sequences, trimmed so that audio and labels have the same frame count.

    A file may differ from its labels by at most one 10 ms frame (rounding of the aligner): both
    are then cut to the shorter. Files without labels are reported and dropped; no labelled file
    at all, or a larger mismatch, is a DataError naming the file.
    """
    kept, missing = [], []
    for seq in seqs:
        lab = labels.get(seq.stem)
        if lab is None:
            missing.append(seq.stem)
            continue
        n_frames = seq.n_samples // FRAME_SIZE
        if abs(n_frames - len(lab)) > 1:
            raise DataError(f"{Path(path_db) / seq.path}: {seq.n_samples} samples "
                            f"({n_frames} frames of {FRAME_SIZE}) but {len(lab)} phone labels; "
                            f"a mismatch of more than one frame means labels of another file "
                            f"or another frame rate")
        kept.append(seq._replace(n_samples=min(n_frames, len(lab)) * FRAME_SIZE))
    if not kept:
        raise DataError(f"none of the {len(seqs)} files has phone labels in {labels_file} "
                        f"(first stems: {', '.join(s.stem for s in seqs[:3])})")
    if missing:
        warnings.warn(f"{len(missing)} of {len(seqs)} files have no phone labels and are dropped "
                      f"(first: {', '.join(missing[:5])})")
    return kept


# --------------------------------------------------------------------------------------------
# Audio reading and packs
# --------------------------------------------------------------------------------------------

def read_audio(path: str | Path) -> np.ndarray:
    """Mono float32 samples in [-1, 1] of a 16 kHz file; stereo is averaged with a warning."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise DataError(f"cannot read audio file {path}: {exc}") from None
    if rate != SAMPLE_RATE:
        raise DataError(f"{path} is sampled at {rate} Hz; expected {SAMPLE_RATE} Hz (resample "
                        f"the corpus first)")
    if data.shape[0] == 0:
        raise DataError(f"{path} is empty (0 samples)")
    if data.shape[1] > 1:
        warnings.warn(f"{path} has {data.shape[1]} channels; averaging them to mono")
        return data.mean(axis=1)
    return data[:, 0]


@dataclass
class Pack:
    """Glued audio of a group of files, sorted by speaker, with its boundaries and labels."""

    seq_ids: np.ndarray  # (n,) indices into the dataset's sequence list, in glued order
    seq_starts: np.ndarray  # (n+1,) sample boundaries of each file in `audio`
    seq_speakers: np.ndarray  # (n,) speaker of each file
    audio: torch.Tensor | None = None  # (N,) float32, None until loaded
    phones: torch.Tensor | None = None  # (N // 160,) long, with phone labels

    @property
    def n_samples(self) -> int:
        return int(self.seq_starts[-1])

    def speaker_bounds(self) -> np.ndarray:
        """Sample boundaries of the runs of files with the same speaker (n_runs + 1,)."""
        change = np.flatnonzero(np.diff(self.seq_speakers)) + 1
        return self.seq_starts[np.concatenate([[0], change, [len(self.seq_speakers)]])]


def plan_packs(seqs: Sequence[SeqInfo], max_size_loaded: int, rng: random.Random) -> list[Pack]:
    """Shuffle files (seeded), group them into packs of at most max_size_loaded samples, and
    sort each pack by (speaker, path) so that a speaker's audio is contiguous."""
    order = list(range(len(seqs)))
    rng.shuffle(order)
    groups: list[list[int]] = [[]]
    size = 0
    for index in order:
        if groups[-1] and size + seqs[index].n_samples > max_size_loaded:
            groups.append([])
            size = 0
        groups[-1].append(index)
        size += seqs[index].n_samples
    packs = []
    for group in groups:
        group.sort(key=lambda i: (seqs[i].speaker, seqs[i].path))
        lengths = np.array([seqs[i].n_samples for i in group], dtype=np.int64)
        packs.append(Pack(seq_ids=np.array(group, dtype=np.int64),
                          seq_starts=np.concatenate([[0], np.cumsum(lengths)]),
                          seq_speakers=np.array([seqs[i].speaker for i in group], dtype=np.int64)))
    return packs


# --------------------------------------------------------------------------------------------
# Samplers: pure functions from a pack's geometry to batches of window start samples
# --------------------------------------------------------------------------------------------

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


def rank_share(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's batches: every ``world_size``-th one, after dropping the remainder so that
    all ranks take the same number of steps (distributed training stays in lockstep)."""
    if world_size == 1:
        return batches
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]


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
    raise DataError(f"--samplingType {sampling_type!r} is not one of {', '.join(SAMPLING_TYPES)}")


def group_bounds(pack: Pack, sampling_type: str) -> np.ndarray:
    """Sample boundaries of the stretches a window may not cross under ``sampling_type``."""
    if sampling_type == "samespeaker":
        return pack.speaker_bounds()
    if sampling_type == "samesequence":
        return pack.seq_starts
    return np.array([0, pack.n_samples])


def too_short(packs: Sequence[Pack], sampling_type: str, size_window: int) -> tuple[int, int]:
    """Stretches (speakers, files or packs) shorter than one window, which no window covers:
    how many, and their samples."""
    lengths = np.concatenate([np.diff(group_bounds(pack, sampling_type)) for pack in packs])
    short = lengths[lengths < size_window]
    return len(short), int(short.sum())


# --------------------------------------------------------------------------------------------
# Batches and the dataset
# --------------------------------------------------------------------------------------------

@dataclass
class Batch:
    """A batch of windows and what is known about each of them."""

    audio: torch.Tensor  # (B, 1, sizeWindow) float32
    speaker: torch.Tensor  # (B,) long: speaker of the window's first sample
    phones: torch.Tensor | None  # (B, sizeWindow // 160) long, or None without phone labels
    seq_index: torch.Tensor  # (B,) long: dataset sequence holding the window's first sample
    seq_offset: torch.Tensor  # (B,) long: sample offset of the window start in that sequence
    frame_seq_index: torch.Tensor | None = None  # (B, sizeWindow // 160): file of each frame

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.audio), move(self.speaker), move(self.phones),
                     move(self.seq_index), move(self.seq_offset), move(self.frame_seq_index))

    def __len__(self) -> int:
        return self.audio.shape[0]


class AudioBatchData:
    """Windows over the glued audio of a list of files, loaded pack by pack.

    ``phone_labels`` (stem -> frame ids) must cover ``sequences`` with lengths already reconciled
    by :func:`attach_phone_labels`. Two packs are in memory at most (the current one and the one
    being prefetched), so peak audio memory is about ``2 * max_size_loaded * 4`` bytes.
    """

    def __init__(self, path_db: str | Path, size_window: int, sequences: Sequence[SeqInfo],
                 phone_labels: dict[str, np.ndarray] | None, n_speakers: int,
                 n_process_loader: int = 8, max_size_loaded: int = 4_000_000_000,
                 seed: int = 0) -> None:
        if size_window <= 0 or size_window % FRAME_SIZE:
            raise DataError(f"--sizeWindow {size_window} must be a positive multiple of "
                            f"{FRAME_SIZE} (one encoder frame)")
        if not sequences:
            raise DataError(f"no file to load from {path_db}")
        self.path_db = Path(path_db)
        self.size_window = size_window
        self.sequences = list(sequences)
        self.phone_labels = phone_labels
        self.n_speakers = n_speakers
        self.n_process_loader = max(1, n_process_loader)
        self.rng = random.Random(seed)
        self.packs = plan_packs(self.sequences, max_size_loaded, self.rng)
        if all(p.n_samples < size_window for p in self.packs):
            raise DataError(f"no window of --sizeWindow {size_window} samples fits: the longest "
                            f"pack of {path_db} holds {max(p.n_samples for p in self.packs)} "
                            f"samples")
        self._current = 0  # index of the pack in memory (or being loaded first)
        self._prefetch_pool = ThreadPoolExecutor(1, thread_name_prefix="cpc-pack")
        self._pending: dict[int, Future] = {0: self._prefetch_pool.submit(self._load, 0)}

    # -- facts ---------------------------------------------------------------------------------
    @property
    def n_packs(self) -> int:
        return len(self.packs)

    @property
    def n_samples(self) -> int:
        return sum(p.n_samples for p in self.packs)

    def n_windows(self) -> int:
        """Windows per epoch at offset 0 (all packs)."""
        return sum(p.n_samples // self.size_window for p in self.packs)

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
        count, samples = too_short(self.packs, sampling_type, self.size_window)
        if not count:
            return None
        unit = {"samespeaker": "speakers' audio", "samesequence": "files"}.get(sampling_type,
                                                                              "packs")
        return (f"{count} {unit} ({samples / SAMPLE_RATE:.1f} s of audio) are shorter than one "
                f"--sizeWindow {self.size_window} window and are not used by --samplingType "
                f"{sampling_type}")

    def describe(self) -> str:
        """One line: files, hours, speakers, phones, windows, packs."""
        s = self.summary()
        phones = f", {s['phones']} phones" if "phones" in s else ""
        return (f"{s['files']} files, {s['hours']:.2f} h, {s['speakers']} speakers{phones}, "
                f"{s['windows']} windows of {s['size_window']} samples, {s['packs']} pack(s)")

    # -- loading -------------------------------------------------------------------------------
    def _load(self, index: int) -> Pack:
        pack = self.packs[index]
        paths = [self.path_db / self.sequences[i].path for i in pack.seq_ids]
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
                [self.phone_labels[self.sequences[i].stem][:self.sequences[i].n_samples
                                                           // FRAME_SIZE]
                 for i in pack.seq_ids]).astype(np.int64))
        return Pack(pack.seq_ids, pack.seq_starts, pack.seq_speakers, torch.from_numpy(audio),
                    phones)

    def _pack(self, index: int) -> Pack:
        """Pack ``index`` in memory, waiting for its prefetch; starts prefetching the next one."""
        if index not in self._pending:
            self._pending[index] = self._prefetch_pool.submit(self._load, index)
        pack = self._pending[index].result()
        for other in list(self._pending):
            if other != index:
                self._pending.pop(other).cancel()
        self._current = index
        following = (index + 1) % self.n_packs
        if following != index and following not in self._pending:
            self._pending[following] = self._prefetch_pool.submit(self._load, following)
        return pack

    def epoch_state(self) -> dict:
        """What decides the next epoch's batches: the random state and the pack in memory."""
        return {"rng": self.rng.getstate(), "current_pack": self._current}

    def restore_epoch_state(self, state: dict) -> None:
        """Replay an epoch from its start (a run resumed in the middle of that epoch)."""
        self.rng.setstate(state["rng"])
        self._current = state["current_pack"]

    def close(self) -> None:
        """Stop the background loader (also done at interpreter exit)."""
        self._prefetch_pool.shutdown(wait=False, cancel_futures=True)

    # -- batches -------------------------------------------------------------------------------
    def make_batch(self, pack: Pack, starts: Sequence[int], frame_provenance: bool = False
                   ) -> Batch:
        """The windows starting at ``starts`` samples of ``pack`` (with the file of every frame
        when ``frame_provenance``: windows may span several glued files)."""
        starts_np = np.asarray(starts, dtype=np.int64)
        audio = torch.stack([pack.audio[s:s + self.size_window] for s in starts_np]).unsqueeze(1)
        position = np.searchsorted(pack.seq_starts, starts_np, side="right") - 1
        phones = None
        if pack.phones is not None:
            frames = self.size_window // FRAME_SIZE
            phones = torch.stack([pack.phones[s // FRAME_SIZE: s // FRAME_SIZE + frames]
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

    def getDataLoader(self, batchSize: int, samplingType: str = "samespeaker",
                      randomOffset: bool = True, frame_provenance: bool = False,
                      rank: int = 0, world_size: int = 1) -> "AudioLoader":
        """An iterable over one epoch of batches (every pack); iterate it again for each epoch.

        ``frame_provenance`` adds the file of every frame to each batch (captures). With
        ``world_size`` > 1, every rank draws the same batches (same seed) and takes its share.
        """
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in [0, {world_size})")
        if samplingType not in SAMPLING_TYPES:
            raise DataError(f"--samplingType {samplingType!r} is not one of "
                            f"{', '.join(SAMPLING_TYPES)}")
        if batchSize <= 0:
            raise DataError(f"batch size must be positive, got {batchSize}")
        return AudioLoader(self, batchSize, samplingType, randomOffset, frame_provenance, rank,
                           world_size)


class AudioLoader:
    """One epoch of batches per iteration, pack after pack, with a fresh random offset per pack.

    The offset is a multiple of 160 samples in [0, sizeWindow / 2], so encoder frames always line
    up with the 10 ms phone labels. Iteration starts at the pack already in memory, so a dataset
    that fits in one pack is read from disk once.
    """

    def __init__(self, dataset: AudioBatchData, batch_size: int, sampling_type: str,
                 random_offset: bool, frame_provenance: bool = False, rank: int = 0,
                 world_size: int = 1) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampling_type = sampling_type
        self.random_offset = random_offset
        self.frame_provenance = frame_provenance
        self.rank = rank
        self.world_size = world_size
        self.skip = 0  # batches of the next epoch to pass over without building them

    def _offset(self) -> int:
        if not self.random_offset:
            return 0
        return self.dataset.rng.randint(0, self.dataset.size_window // 2 // FRAME_SIZE) \
            * FRAME_SIZE

    def __len__(self) -> int:
        """Number of batches of an epoch at offset 0 (the exact count varies with the offset)."""
        rng = random.Random(0)
        return sum(len(rank_share(make_batches(p, self.sampling_type, self.dataset.size_window,
                                               self.batch_size, 0, rng),
                                  self.rank, self.world_size))
                   for p in self.dataset.packs)

    def __iter__(self) -> Iterator[Batch]:
        """One epoch; the first ``self.skip`` batches (done before an interruption) are drawn
        the same way, so the random stream is replayed, but not built (``skip`` is then reset)."""
        data = self.dataset
        first = data._current
        skip, self.skip = self.skip, 0
        for step in range(data.n_packs):
            pack = data._pack((first + step) % data.n_packs)
            batches = rank_share(make_batches(pack, self.sampling_type, data.size_window,
                                              self.batch_size, self._offset(), data.rng),
                                 self.rank, self.world_size)
            for starts in batches[skip:]:
                yield data.make_batch(pack, starts, self.frame_provenance)
            skip = max(0, skip - len(batches))



@dataclass
class CorpusData:
    """Training and validation windows of one corpus, and its label inventories."""

    train: AudioBatchData
    val: AudioBatchData
    speakers: list[str]
    n_phones: int  # 0 without phone labels

    def close(self) -> None:
        self.train.close()
        self.val.close()


def build_datasets(path_db: str | Path, extension: str, path_train: str | None,
                   path_val: str | None, path_phone_data: str | None, size_window: int,
                   n_process_loader: int = 8, max_size_loaded: int = 4_000_000_000,
                   seed: int = 0, ignore_cache: bool = False,
                   max_files: tuple[int, int] | None = None) -> CorpusData:
    """List pathDB, apply the split lists (or a seeded 99/1 split), attach phone labels.

    ``max_files`` = (train, val) keeps only that many files of each part (``--debug``).
    """
    seqs, speakers = findAllSeqs(path_db, extension, loadCache=not ignore_cache,
                                 n_workers=n_process_loader)
    train = filterSeqs(path_train, seqs) if path_train else list(seqs)
    if path_val:
        val = filterSeqs(path_val, seqs)
        shared = sorted({s.stem for s in train} & {s.stem for s in val})
        if shared:
            warnings.warn(f"{len(shared)} file(s) are in both {path_train or 'the training set'}"
                          f" and {path_val} (first: {', '.join(shared[:3])}): the validation "
                          f"loss and probes are not measured on held-out audio")
    else:
        train, val = split_train_val(train, 0.01, seed)
    if max_files is not None:
        train, val = train[:max_files[0]], val[:max_files[1]]
    labels, n_phones = None, 0
    if path_phone_data:
        labels, n_phones = parseSeqLabels(path_phone_data)
        train = attach_phone_labels(train, labels, path_db, path_phone_data)
        val = attach_phone_labels(val, labels, path_db, path_phone_data)
    make = lambda part, part_seed: AudioBatchData(  # noqa: E731
        path_db, size_window, part, labels, len(speakers), n_process_loader, max_size_loaded,
        part_seed)
    return CorpusData(make(train, seed), make(val, seed + 1), speakers, n_phones)


def thin_sequences(seqs: Sequence[SeqInfo], percent: float | None = None,
                   total: int | None = None, seed: int = 0) -> list[SeqInfo]:
    """A fixed subset of files: ``percent`` of them or ``total`` of them, drawn with a fixed seed
    (the same files at every capture) and returned in listing order."""
    if percent is not None and total is not None:
        raise DataError("give --captureDSfreq or --captureDStotNr, not both")
    count = len(seqs)
    if percent is not None:
        if not 0 < percent <= 100:
            raise DataError(f"--captureDSfreq {percent} must be a percentage in (0, 100]")
        count = max(1, round(len(seqs) * percent / 100))
    elif total is not None:
        if total < 1:
            raise DataError(f"--captureDStotNr {total} must be at least 1")
        count = min(total, len(seqs))
    chosen = set(random.Random(seed).sample(range(len(seqs)), count))
    return [seq for i, seq in enumerate(seqs) if i in chosen]


def build_capture_dataset(path_db: str | Path, extension: str, path_list: str,
                          path_phone_data: str | None, size_window: int,
                          percent: float | None = None, total: int | None = None,
                          n_process_loader: int = 8) -> tuple[AudioBatchData, list[str]]:
    """The capture dataset (files of ``path_list``, thinned, with phone labels when given) and
    the corpus's speaker names, which its speaker indices refer to."""
    seqs, speakers = findAllSeqs(path_db, extension, n_workers=n_process_loader)
    chosen = thin_sequences(filterSeqs(path_list, seqs), percent, total)
    labels = None
    if path_phone_data:
        labels, _ = parseSeqLabels(path_phone_data)
        chosen = attach_phone_labels(chosen, labels, path_db, path_phone_data)
    return (AudioBatchData(path_db, size_window, chosen, labels, len(speakers), n_process_loader),
            speakers)
