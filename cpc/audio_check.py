"""Audio that its header says nothing wrong about, but that no model can use: NaN or infinite
samples, and files sampled at another rate.

Only float files (WAV/AIFF ``FLOAT`` or ``DOUBLE``) can hold a non-finite sample: integer PCM
(FLAC, 16-bit WAV...) cannot, so listing a corpus decodes its float files only. Every read of
audio (:func:`cpc.data.audio.read_audio`) checks its samples too, so no tool ever computes on a
NaN it was not told about.

``--bad_audio`` says what a tool does with a file holding non-finite samples: ``refuse`` (the
default) stops before any output with one error naming every such file; ``skip`` leaves each
out with a warning naming it. A file at another rate is always an error: every one is named.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import soundfile as sf

from cpc.utils.constants import BAD_AUDIO_CHOICES, SAMPLE_RATE
from cpc.utils.errors import DataError

FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
NAMED_AT_MOST = 5  # files named in one message; the rest are counted
SUSPECTS_READ = 64  # files of a batch with a non-finite loss read to look for loud audio


class NonFinite(NamedTuple):
    """The non-finite samples of a file."""

    n_nan: int
    n_inf: int
    first: int  # index of the first non-finite sample (a frame index for multichannel audio)

    def describe(self) -> str:
        return (f"{self.n_nan} NaN / {self.n_inf} infinite samples (first at sample "
                f"{self.first})")


def find_non_finite(samples: np.ndarray) -> NonFinite | None:
    """The NaN and infinite values of ``samples`` (``(n,)`` or ``(n, channels)``), or None when
    every one is finite (the common case costs one pass of ``np.isfinite``)."""
    finite = np.isfinite(samples)
    if finite.all():
        return None
    bad_rows = ~finite.all(axis=1) if finite.ndim == 2 else ~finite
    n_nan = int(np.isnan(samples).sum())
    return NonFinite(n_nan, int((~finite).sum()) - n_nan, int(np.argmax(bad_rows)))


def can_hold_non_finite(subtype: str) -> bool:
    """Whether a file of this soundfile subtype stores floats (integer PCM cannot be NaN)."""
    return subtype in FLOAT_SUBTYPES


def non_finite_message(path: str | Path, found: NonFinite) -> str:
    """The refusal of one file read with ``--bad_audio refuse``."""
    return (f"{path} holds {found.describe()}: repair or drop the file, or pass "
            f"--bad_audio skip")


def name_some(items: Sequence[str]) -> str:
    """The first few ``items``, ``; ``-separated, and how many more there are."""
    more = len(items) - NAMED_AT_MOST
    return "; ".join(items[:NAMED_AT_MOST]) + (f"; and {more} more" if more > 0 else "")


def screen_non_finite(found: Sequence[tuple[str, NonFinite]], policy: str) -> set[str]:
    """Apply ``--bad_audio`` to the files ``found`` holding non-finite samples: ``refuse``
    raises one DataError naming them (the first few, and how many in all); ``skip`` warns
    once per file and returns their names, to be left out."""
    if policy not in BAD_AUDIO_CHOICES:
        raise DataError(f"--bad_audio {policy!r} is not one of {', '.join(BAD_AUDIO_CHOICES)}")
    if not found:
        return set()
    if policy == "refuse":
        if len(found) == 1:
            raise DataError(non_finite_message(*found[0]))
        raise DataError(f"{len(found)} files hold NaN or infinite samples: "
                        + name_some([f"{path} holds {bad.describe()}" for path, bad in found])
                        + ": repair or drop them, or pass --bad_audio skip")
    for path, bad in found:
        warnings.warn(f"skipping {path}: it holds {bad.describe()} (--bad_audio skip)",
                      stacklevel=2)
    return {path for path, _ in found}


def wrong_rate_error(found: Sequence[tuple[str, int]]) -> DataError:
    """One error naming the files (the first few, and how many in all) sampled at a rate
    other than 16 kHz."""
    suffix = Path(found[0][0]).suffix
    what = f"{found[0][0]} is sampled at {found[0][1]} Hz" if len(found) == 1 else \
        f"{len(found)} files are not sampled at {SAMPLE_RATE} Hz: " + \
        name_some([f"{path} ({rate} Hz)" for path, rate in found])
    return DataError(f"{what}; expected {SAMPLE_RATE} Hz. Audio is never resampled silently: "
                     f"convert the corpus first, e.g. `sox in{suffix} -r {SAMPLE_RATE} "
                     f"out{suffix}`")


class FileFacts(NamedTuple):
    """What :func:`inspect_file` learns of one audio file."""

    n_samples: int
    sample_rate: int
    channels: int
    non_finite: NonFinite | None  # always None for integer files, which are not decoded


def inspect_file(path: str | Path) -> FileFacts:
    """A file's header facts and, for a float file only, its non-finite samples; a file
    soundfile cannot read is a DataError naming it."""
    try:
        info = sf.info(str(path))
        found = None
        if can_hold_non_finite(info.subtype):
            found = find_non_finite(sf.read(str(path), dtype="float32", always_2d=True)[0])
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise DataError(f"cannot read audio file {path}: {exc}") from None
    return FileFacts(int(info.frames), int(info.samplerate), int(info.channels), found)


def screen_files(paths: Sequence[Path], policy: str, n_workers: int = 4) -> list[Path]:
    """``paths`` without those ``--bad_audio skip`` leaves out, after checking every file's
    rate (all wrong ones named in one error) and the samples of the float files; run before a
    tool writes anything. Skipping every file is an error."""
    with ThreadPoolExecutor(max(1, n_workers)) as pool:
        facts = list(pool.map(inspect_file, paths))
    wrong = [(str(p), f.sample_rate) for p, f in zip(paths, facts) if f.sample_rate != SAMPLE_RATE]
    if wrong:
        raise wrong_rate_error(wrong)
    dropped = screen_non_finite([(str(p), f.non_finite) for p, f in zip(paths, facts)
                                 if f.non_finite is not None], policy)
    if dropped and len(dropped) == len(paths):
        raise DataError(f"every one of the {len(paths)} audio files holds NaN or infinite "
                        f"samples: --bad_audio skip leaves nothing to read")
    return [p for p in paths if str(p) not in dropped]


def screen_by_stem(files: dict[str, Path], policy: str, n_workers: int = 4) -> dict[str, Path]:
    """:func:`screen_files` on the values of ``{stem: path}``."""
    kept = set(screen_files(list(files.values()), policy, n_workers))
    return {stem: path for stem, path in files.items() if path in kept}


def beyond_full_scale(paths: Sequence[str | Path]) -> list[str]:
    """Which float files among ``paths`` hold samples beyond [-1, 1] (integer PCM cannot), each
    as ``'<path> reaches <peak>'``: finite audio that can still overflow a model to NaN."""
    found = []
    for path in paths:
        try:
            if not can_hold_non_finite(sf.info(str(path)).subtype):
                continue
            peak = float(np.abs(sf.read(str(path), dtype="float32")[0]).max())
        except (OSError, RuntimeError):  # gone or changed since it was read: not named here,
            continue  # the error being reported is the non-finite loss
        if peak > 1.0:
            found.append(f"{path} reaches {peak:.3g}")
    return found


def suspect_audio(paths: Sequence[str | Path]) -> str | None:
    """Why the audio of ``paths`` (the files of batches whose loss is not finite) may be at
    fault, or None when it is within [-1, 1] (non-finite samples are refused when read). Only
    the first ``SUSPECTS_READ`` files are read: a diverged model names every file."""
    loud = beyond_full_scale(paths[:SUSPECTS_READ])
    if not loud:
        return None
    return (f"{name_some(loud)}, beyond the [-1, 1] of float audio: the audio may be at "
            f"fault (scale or drop such files)")
