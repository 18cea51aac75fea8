"""LibriSpeech-format data pipeline: listing, split lists, phone labels, audio, batches.

The model sees fixed-size windows cut from the glued audio of many files, as in CPC_audio:
files are grouped into *packs* of at most ``max_size_loaded`` samples; inside a pack, files are
sorted by speaker and concatenated; a *sampler* turns a pack into batches of window start
positions (the plans, pure functions of the geometry, are in :mod:`cpc.data.plan`). While one
pack trains, the next one is read in the background.

Every user-facing problem (missing directory, unreadable file, wrong sample rate, split list
matching nothing, bad labels...) raises :class:`DataError` with a message naming the culprit.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import soundfile as sf
import torch

from cpc.audio_check import (NonFinite, find_non_finite, inspect_file, non_finite_message,
                             screen_non_finite, wrong_rate_error)
from cpc.data.layout import one_speaker_warning, split_level_problem
from cpc.data.plan import (Pack, count_batches, make_batches, mix_seed, plan_packs,
                           random_offset, rank_shares, too_short, window_seq_ids)
from cpc.utils.errors import DataError
from cpc.utils.files import atomic_write_text
from cpc.utils.constants import FRAME_SIZE, SAMPLE_RATE, SAMPLING_TYPES, window_size_problem

_CACHE_VERSION = 2  # 2: float files' non-finite samples


class SeqInfo(NamedTuple):
    """One audio file of the corpus."""

    speaker: int  # index into the speaker list returned with it
    path: str  # path relative to pathDB, '/'-separated
    n_samples: int
    non_finite: NonFinite | None = None  # NaN / inf samples found when listing (float files)

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
    """All files under path_db ending in extension, as (relative path, size, mtime_ns), sorted.

    Hidden files and folders (names starting with '.': macOS's ``._*`` copies, ``.Trash``)
    are skipped, as the feature export does. Symbolic links to folders are followed after the
    real folders, and a folder reached twice (a link loop, or a link to a listed folder) is
    listed once, with a warning naming the link.
    """
    found = []
    seen: set[Path] = set()
    real_dirs, links = [path_db], []
    while real_dirs or links:
        directory = real_dirs.pop() if real_dirs else links.pop(0)
        target = directory.resolve()
        if target in seen:
            warnings.warn(f"{directory} leads to {target}, which is already listed (a symbolic "
                          f"link loop, or a second link to one folder): skipped, each file is "
                          f"listed once")
            continue
        seen.add(target)
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=True):
                    (links if entry.is_symlink() else real_dirs).append(Path(entry.path))
                elif entry.name.endswith(extension):
                    st = entry.stat()
                    rel = Path(entry.path).relative_to(path_db).as_posix()
                    found.append((rel, st.st_size, st.st_mtime_ns))
    found.sort()
    return found


def _probe(path: Path) -> dict:
    """Header facts of one audio file (and, for a float file, its non-finite samples), or a
    DataError naming it."""
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes)")
    facts = inspect_file(path)
    return {"n_samples": facts.n_samples, "sample_rate": facts.sample_rate,
            "channels": facts.channels, "non_finite": facts.non_finite and list(facts.non_finite)}


def findAllSeqs(pathDB: str | Path, extension: str = ".flac", loadCache: bool = True,
                speaker_level: int = 1, n_workers: int = 8
                ) -> tuple[list[SeqInfo], list[str]]:
    """List every ``extension`` file under pathDB; the speaker is its first directory level.

    Returns (sequences, speaker names) with ``sequences[i].speaker`` indexing the names.
    Header facts (length, rate, channels) are cached per file and refreshed for files whose size
    or modification time changed, so the cache follows the tree; ``loadCache=False`` (the
    ``--ignore_cache`` flag) re-reads every header. Every file's rate and emptiness are checked
    here, before any training starts (every file at a wrong rate is named). Float files are
    decoded once to find non-finite samples (``SeqInfo.non_finite``; see
    :func:`drop_bad_audio`).
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
    sequences, wrong_rate = [], []
    for rel, _, _ in files:
        parts = rel.split("/")
        if len(parts) <= speaker_level:
            raise DataError(f"{path_db / rel} is not inside a speaker directory: expected "
                            f"pathDB/<speaker>/.../<file>{extension} (LibriSpeech layout)")
        speaker = "/".join(parts[:speaker_level])
        if speaker not in speaker_index:
            speaker_index[speaker] = len(speaker_names)
            speaker_names.append(speaker)
        info = facts[rel]
        if info["n_samples"] == 0:
            raise DataError(f"{path_db / rel} is empty (0 samples)")
        if info["sample_rate"] != SAMPLE_RATE:
            wrong_rate.append((str(path_db / rel), info["sample_rate"]))
        found = info["non_finite"] and NonFinite(*info["non_finite"])
        sequences.append(SeqInfo(speaker_index[speaker], rel, info["n_samples"], found))
    if wrong_rate:
        raise wrong_rate_error(wrong_rate)
    return sequences, speaker_names


def check_speaker_level(path_db: str | Path, seqs: Sequence[SeqInfo],
                        speakers: Sequence[str]) -> None:
    """Refuse a pathDB one level above the speakers (:mod:`cpc.data.layout`); warn when it
    holds one speaker, which trains but leaves nothing for speaker probes."""
    problem = split_level_problem(str(path_db), [s.path for s in seqs],
                                  [s.speaker for s in seqs], speakers)
    if problem:
        raise DataError(problem)
    warning = one_speaker_warning(str(path_db), speakers)
    if warning:
        warnings.warn(warning)


def check_speaker_classes(train: Sequence[SeqInfo], val: Sequence[SeqInfo],
                          speakers: Sequence[str], train_source: str, val_source: str,
                          remedy: str = "") -> None:
    """Speaker classification (probes, downstream_speaker.py) needs two training speakers or
    more, and validation files of training speakers only: otherwise it scores 1.000 or 0.000
    whatever the features. ``remedy`` ends both messages (another way out)."""
    trained = sorted({seq.speaker for seq in train})
    if len(trained) < 2:
        raise DataError(f"{train_source} lists files of speaker {speakers[trained[0]]} only: "
                        f"speaker classification needs at least two speakers{remedy}")
    unseen = sorted({speakers[seq.speaker] for seq in val if seq.speaker not in set(trained)})
    if unseen:
        raise DataError(f"speakers {', '.join(unseen[:5])} of {val_source} have no training "
                        f"file in {train_source}: speaker classification needs the same "
                        f"speakers in both lists (split each speaker's files){remedy}")


def drop_bad_audio(path_db: str | Path, parts: Sequence[Sequence[SeqInfo]], bad_audio: str
                   ) -> list[list[SeqInfo]]:
    """Each list of ``parts`` without the files holding NaN or infinite samples, as
    ``--bad_audio`` says: ``refuse`` raises one error naming all of them (before any audio is
    trained on), ``skip`` leaves each out with a warning (a part left empty is an error)."""
    name = lambda seq: str(Path(path_db) / seq.path)  # noqa: E731
    found = {name(s): s.non_finite for part in parts for s in part if s.non_finite}
    dropped = screen_non_finite(sorted(found.items()), bad_audio)
    kept = [[s for s in part if name(s) not in dropped] for part in parts]
    for part, left in zip(parts, kept):
        if part and not left:
            raise DataError(f"every one of the {len(part)} files chosen from {path_db} (e.g. "
                            f"{name(part[0])}) holds NaN or infinite samples: --bad_audio skip "
                            f"leaves nothing to read")
    return kept


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
    """File stems listed one per line (blank lines ignored; a UTF-8 byte-order mark, which
    Windows editors write, is dropped)."""
    path_split = Path(path_split)
    if path_split.is_dir():
        raise DataError(f"split list {path_split} is a directory; expected a text file of file "
                        f"stems, one per line (e.g. train_split.txt)")
    if not path_split.is_file():
        raise DataError(f"split list {path_split} does not exist")
    try:
        text = path_split.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"split list {path_split} is not a text file ({exc.reason} at byte "
                        f"{exc.start}); expected file stems, one per line") from None
    stems = [Path(line.strip()).stem for line in text.splitlines() if line.strip()]
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
    check_unique_stems(kept, pathSplit)
    warn_missing_stems(wanted, {s.stem for s in kept}, pathSplit)
    if len(wanted_set) < len(wanted):
        twice = sorted({stem for stem in wanted if wanted.count(stem) > 1})
        warnings.warn(f"{pathSplit} lists {len(wanted) - len(wanted_set)} stem(s) more than "
                      f"once (first: {', '.join(twice[:5])}); each file is used once")
    return kept


def warn_missing_stems(wanted: Sequence[str], found: set[str], path_split: str | Path) -> None:
    """Warn of the stems of a split list absent from the corpus (typos, another corpus)."""
    missing = [stem for stem in wanted if stem not in found]
    if missing:
        warnings.warn(f"{len(missing)} of {len(wanted)} stems of {path_split} are not in the "
                      f"corpus and are ignored (first: {', '.join(missing[:5])})")


def check_unique_stems(seqs: Sequence[SeqInfo], path_split: str | Path) -> None:
    """A split list selects files by stem: a listed stem naming several files of the corpus
    (a copied folder) is refused, naming them."""
    paths: dict[str, list[str]] = {}
    for seq in seqs:
        paths.setdefault(seq.stem, []).append(seq.path)
    clash = next((named for named in paths.values() if len(named) > 1), None)
    if clash:
        raise DataError(f"{path_split}: the stem {Path(clash[0]).stem} names {len(clash)} files "
                        f"of the corpus ({', '.join(clash[:3])}); a split list selects files "
                        f"by stem, so each must name one file: remove the copies")


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
    if pathLabels.is_dir():
        raise DataError(f"phone label file {pathLabels} (--path_phone_data) is a directory; "
                        f"expected a text file of lines '<stem> id id ...' (CPC_audio's "
                        f"converted_aligned_phones.txt)")
    if not pathLabels.is_file():
        raise DataError(f"phone label file {pathLabels} (--path_phone_data) does not exist")
    labels: dict[str, np.ndarray] = {}
    max_id = -1
    try:
        with open(pathLabels, encoding="utf-8-sig") as handle:  # -sig: drop a byte-order mark
            for line_no, line in enumerate(handle, 1):
                max_id = max(max_id, _parse_label_line(pathLabels, line_no, line, labels))
    except UnicodeDecodeError as exc:
        raise DataError(f"phone label file {pathLabels} is not a text file ({exc.reason} at "
                        f"byte {exc.start}); expected lines '<stem> id id ...'") from None
    if not labels:
        raise DataError(f"phone label file {pathLabels} holds no labels")
    return labels, max_id + 1


def _parse_label_line(path: Path, line_no: int, line: str, labels: dict[str, np.ndarray]
                      ) -> int:
    """Add one ``<stem> id id ...`` line to ``labels``; returns its largest id (-1: blank)."""
    fields = line.split()
    if not fields:
        return -1
    try:
        ids = np.array(fields[1:], dtype=np.int64)
    except ValueError:
        raise DataError(f"{path}:{line_no}: expected '<stem> id id ...' with integer ids, got "
                        f"{line.strip()[:80]!r}") from None
    if len(ids) == 0 or ids.min() < 0:
        raise DataError(f"{path}:{line_no}: {fields[0]} has no labels or a negative id")
    if fields[0] in labels:
        raise DataError(f"{path}:{line_no}: {fields[0]} is labelled twice; one line per file")
    labels[fields[0]] = ids.astype(np.int32)
    return int(ids.max())


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
    """Mono float32 samples in [-1, 1] of a 16 kHz file; stereo is averaged with a warning.
    A NaN or infinite sample is a DataError naming the file (tools check their files before
    reading them, so that ``--bad_audio skip`` can leave such files out)."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise DataError(f"cannot read audio file {path}: {exc}") from None
    if rate != SAMPLE_RATE:
        raise DataError(f"{path} is sampled at {rate} Hz; expected {SAMPLE_RATE} Hz (resample "
                        f"the corpus first)")
    if data.shape[0] == 0:
        raise DataError(f"{path} is empty (0 samples)")
    found = find_non_finite(data)
    if found is not None:
        raise DataError(non_finite_message(path, found))
    if data.shape[1] > 1:
        warnings.warn(f"{path} has {data.shape[1]} channels; averaging them to mono")
        return data.mean(axis=1)
    return data[:, 0]


@dataclass
class LoadedPack:
    """A pack's glued audio (and phone labels), ready to cut windows from."""

    pack: Pack
    audio: torch.Tensor  # (N,) float32
    phones: torch.Tensor | None  # (N // 160,) long, with phone labels


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
    speaker_host: torch.Tensor | None = None  # the speakers still on the host, after to()

    def _map(self, move) -> "Batch":
        apply = lambda t: None if t is None else move(t)  # noqa: E731
        return Batch(apply(self.audio), apply(self.speaker), apply(self.phones),
                     apply(self.seq_index), apply(self.seq_offset), apply(self.frame_seq_index))

    def to(self, device: torch.device | str) -> "Batch":
        """On ``device``; the copy is asynchronous from pinned memory. The speaker labels also
        stay on the host (``speaker_host``), for decisions that must not wait for a GPU."""
        moved = self._map(lambda t: t.to(device, non_blocking=True))
        moved.speaker_host = self.speaker if self.speaker.device.type == "cpu" else \
            self.speaker_host
        return moved

    def pin_memory(self) -> "Batch":
        """In page-locked memory, from which a copy to the GPU does not stall the host."""
        return self._map(lambda t: t.pin_memory())

    def __len__(self) -> int:
        return self.audio.shape[0]


class AudioBatchData:
    """Windows over the glued audio of a list of files, loaded pack by pack.

    ``phone_labels`` (stem -> frame ids) must cover ``sequences`` with lengths already reconciled
    by :func:`attach_phone_labels`. Under torchrun (``world_size`` > 1) this rank owns a share
    of the files (:func:`~cpc.data.plan.rank_shares`, fixed by ``seed``) and reads only those,
    in packs of ``max_size_loaded / world_size`` samples re-planned every epoch. Two packs are
    in memory at most (the current one and the one being prefetched), so peak audio memory per
    rank is about ``2 * max_size_loaded / world_size * 4`` bytes.
    """

    def __init__(self, path_db: str | Path, size_window: int, sequences: Sequence[SeqInfo],
                 phone_labels: dict[str, np.ndarray] | None, n_speakers: int,
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

    def getDataLoader(self, batchSize: int, samplingType: str = "samespeaker",
                      randomOffset: bool = True, frame_provenance: bool = False
                      ) -> "AudioLoader":
        """An iterable over one epoch of this rank's batches (every pack); iterate it again for
        each epoch. ``frame_provenance`` adds the file of every frame to each batch (captures).
        """
        if samplingType not in SAMPLING_TYPES:
            raise DataError(f"--samplingType {samplingType!r} is not one of "
                            f"{', '.join(SAMPLING_TYPES)}")
        if batchSize <= 0:
            raise DataError(f"batch size must be positive, got {batchSize}")
        return AudioLoader(self, batchSize, samplingType, randomOffset, frame_provenance)


class AudioLoader:
    """One epoch of batches per iteration, pack after pack, each pack with its random offset.

    Without :meth:`set_epoch` every iteration is epoch 0 (evaluation, probes, captures: the
    same windows each time). A training loop calls ``set_epoch(epoch)`` first, as with
    torch's DistributedSampler: the packs are re-planned and the draws re-seeded per epoch, so
    an epoch is reproducible from its number alone. ``limit`` truncates the epoch (ranks agree
    on the shortest share, to stay in lockstep) and ``skip`` passes over its first batches
    without building them (a resumed epoch); both apply to the next iteration.
    """

    def __init__(self, dataset: AudioBatchData, batch_size: int, sampling_type: str,
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
            digest.update(json.dumps([(data._paths[i], data._lengths[i], data._speakers[i])
                                      for i in pack.seq_ids.tolist()]).encode())
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
        return sorted(str(data.path_db / data._paths[i]) for i in ids)

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


@dataclass
class CorpusSelection:
    """The files of a run, listed before any audio is read (once, by rank 0 under torchrun)."""

    path_db: str
    train: list[SeqInfo]
    val: list[SeqInfo]
    speakers: list[str]
    n_phones: int  # 0 without phone labels
    path_phone_data: str | None = None
    labels: dict[str, np.ndarray] | None = None  # parsed phone labels (not shared: re-read)

    def shareable(self) -> "CorpusSelection":
        """This selection without its parsed labels, which each rank reads from the file."""
        return dataclasses.replace(self, labels=None)

    def with_labels(self) -> "CorpusSelection":
        if self.path_phone_data and self.labels is None:
            return dataclasses.replace(self, labels=parseSeqLabels(self.path_phone_data)[0])
        return self


def select_corpus(path_db: str | Path, extension: str, path_train: str | None,
                  path_val: str | None, path_phone_data: str | None, n_process_loader: int = 8,
                  seed: int = 0, ignore_cache: bool = False,
                  max_files: tuple[int, int] | None = None,
                  bad_audio: str = "refuse") -> CorpusSelection:
    """List pathDB, apply the split lists (or a seeded 99/1 split), attach phone labels.

    ``max_files`` = (train, val) keeps only that many files of each part (``--debug``);
    ``bad_audio`` (``--bad_audio``) says what becomes of the chosen files holding NaN or
    infinite samples (:func:`drop_bad_audio`).
    """
    seqs, speakers = findAllSeqs(path_db, extension, loadCache=not ignore_cache,
                                 n_workers=n_process_loader)
    check_speaker_level(path_db, seqs, speakers)
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
    train, val = drop_bad_audio(path_db, (train, val), bad_audio)
    labels, n_phones = None, 0
    if path_phone_data:
        labels, n_phones = parseSeqLabels(path_phone_data)
        train = attach_phone_labels(train, labels, path_db, path_phone_data)
        val = attach_phone_labels(val, labels, path_db, path_phone_data)
    return CorpusSelection(str(path_db), train, val, speakers, n_phones,
                           str(path_phone_data) if path_phone_data else None, labels)


@dataclass
class CorpusData:
    """Training and validation windows of one corpus (this rank's share), and its label
    inventories."""

    train: AudioBatchData
    val: AudioBatchData
    speakers: list[str]
    n_phones: int  # 0 without phone labels
    selection: CorpusSelection | None = None
    _whole: "CorpusData | None" = None

    def whole(self) -> "CorpusData":
        """Every file of the corpus in one process (the probes' data): this data itself in a
        one-process run, else a view built at the first call and closed with this one."""
        if self.train.world_size == 1:
            return self
        if self._whole is None:
            self._whole = build_corpus_data(self.selection, self.train.size_window,
                                            self.train.n_process_loader,
                                            self.train.max_size_loaded, self.train.seed)
        return self._whole

    def close(self) -> None:
        self.train.close()
        self.val.close()
        if self._whole is not None:
            self._whole.close()


def build_corpus_data(selection: CorpusSelection, size_window: int, n_process_loader: int = 8,
                      max_size_loaded: int = 4_000_000_000, seed: int = 0, rank: int = 0,
                      world_size: int = 1) -> CorpusData:
    """The datasets of a selection, for rank ``rank`` of ``world_size``."""
    selection = selection.with_labels()

    def make(part: list[SeqInfo], part_seed: int, name: str) -> AudioBatchData:
        try:
            return AudioBatchData(selection.path_db, size_window, part, selection.labels,
                                  len(selection.speakers), n_process_loader, max_size_loaded,
                                  part_seed, rank, world_size)
        except DataError as exc:  # say which part: the other one may be fine
            raise DataError(f"the {name} files ({len(part)} of them): {exc}") from None
    return CorpusData(make(selection.train, seed, "training"),
                      make(selection.val, seed + 1, "validation"),
                      selection.speakers, selection.n_phones, selection)


def build_datasets(path_db: str | Path, extension: str, path_train: str | None,
                   path_val: str | None, path_phone_data: str | None, size_window: int,
                   n_process_loader: int = 8, max_size_loaded: int = 4_000_000_000,
                   seed: int = 0, ignore_cache: bool = False,
                   max_files: tuple[int, int] | None = None,
                   bad_audio: str = "refuse") -> CorpusData:
    """:func:`select_corpus` and :func:`build_corpus_data` in one process."""
    selection = select_corpus(path_db, extension, path_train, path_val, path_phone_data,
                              n_process_loader, seed, ignore_cache, max_files, bad_audio)
    return build_corpus_data(selection, size_window, n_process_loader, max_size_loaded, seed)


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
                          n_process_loader: int = 8, bad_audio: str = "refuse"
                          ) -> tuple[AudioBatchData, list[str]]:
    """The capture dataset (files of ``path_list``, thinned, with phone labels when given,
    without the bad audio ``--bad_audio skip`` leaves out) and the corpus's speaker names,
    which its speaker indices refer to."""
    seqs, speakers = findAllSeqs(path_db, extension, n_workers=n_process_loader)
    check_speaker_level(path_db, seqs, speakers)
    chosen = thin_sequences(filterSeqs(path_list, seqs), percent, total)
    chosen, = drop_bad_audio(path_db, (chosen,), bad_audio)
    labels = None
    if path_phone_data:
        labels, _ = parseSeqLabels(path_phone_data)
        chosen = attach_phone_labels(chosen, labels, path_db, path_phone_data)
    return (AudioBatchData(path_db, size_window, chosen, labels, len(speakers), n_process_loader),
            speakers)
