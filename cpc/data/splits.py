"""Which listed files a run uses: split lists, the seeded train/validation split, thinning,
and the speaker checks of a chosen split.

A split list names files by stem, one per line (CPC_audio's ``train_split.txt``), so it can
never point outside pathDB; stems absent from the corpus are reported, and a list matching
nothing, or a stem naming several files, is a :class:`~cpc.utils.errors.DataError`.
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Sequence

from cpc.data.listing import SeqInfo
from cpc.utils.errors import DataError


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
