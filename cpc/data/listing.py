"""What audio a corpus holds: its files, their speakers and lengths, and which are usable.

:func:`findAllSeqs` lists every audio file under pathDB (LibriSpeech layout: the speaker is the
first directory level) with its header facts, cached per file in :func:`cache_dir` so that a
second listing reads only the files that changed; every wrong rate or empty file is named
before any training starts. :func:`check_speaker_level` refuses a pathDB one level above the
speakers and :func:`drop_bad_audio` applies ``--bad_audio`` to files holding NaN or inf.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Sequence

from cpc.audio_check import NonFinite, inspect_file, screen_non_finite, wrong_rate_error
from cpc.data.layout import one_speaker_warning, split_level_problem
from cpc.utils.constants import SAMPLE_RATE
from cpc.utils.errors import DataError
from cpc.utils.files import atomic_write_text

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
