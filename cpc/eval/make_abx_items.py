r"""Write a ZeroSpeech / Libri-light ABX ``.item`` file from frame-level phone labels.

    python -m cpc.eval.make_abx_items converted_aligned_phones.txt phones.txt val_split.txt \
        --out val.item

Inputs are the corpus's label files: ``<stem> id id ...`` (one phone id per 10 ms frame),
``phones.txt`` (``<id> <symbol>``, id 0 = silence) and a split list (one stem per line). One
item per phone occurrence (a run of identical frame labels), written as::

    #file onset offset #phone prev-phone next-phone speaker
    1133-926611-0001 0.4100 0.4900 AE DH N 1133

Onset and offset are the run's frame boundaries in seconds (frame i spans [i, i+1) * 10 ms).
Silence is never a target phone, and, as in triphone ABX tasks, an occurrence is kept only when
both neighbours are phones: occurrences next to silence or at a file edge are dropped. The
speaker is the stem up to its first ``-`` (LibriSpeech ``speaker-chapter-utterance``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple, Sequence

if __package__ in (None, ""):  # run as `python cpc/eval/make_abx_items.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.eval.options import abx_items_parser
from cpc.utils.cli import answer_help
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(abx_items_parser(__doc__), sys.argv[1:])

import numpy as np

from cpc.data.labels import parseSeqLabels
from cpc.data.splits import read_split_list
from cpc.utils.errors import CPCError, DataError
from cpc.utils.constants import FRAME_SECONDS

SILENCE_ID = 0
HEADER = "#file onset offset #phone prev-phone next-phone speaker"


class Item(NamedTuple):
    """One line of an item file."""

    file: str
    onset: float
    offset: float
    phone: str
    prev: str
    next: str
    speaker: str


def read_phone_symbols(path: str | Path) -> dict[int, str]:
    """``{id: symbol}`` from a ``phones.txt`` of ``<id> <symbol>`` lines."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"phone list {path} does not exist")
    symbols: dict[int, str] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[0].isdigit():
            raise DataError(f"{path}:{line_no}: expected '<id> <symbol>', got {line.strip()[:80]!r}")
        symbols[int(fields[0])] = fields[1]
    if not symbols:
        raise DataError(f"phone list {path} is empty")
    return symbols


def phone_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(start frame, end frame, id)`` of each run of identical labels."""
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(labels)]])
    return starts, ends, labels[starts]


def items_of_file(stem: str, labels: np.ndarray, symbols: dict[int, str]) -> list[Item]:
    """Items of one file: every phone run with phone runs on both sides (see module doc)."""
    starts, ends, ids = phone_runs(labels)
    speaker = stem.split("-")[0]
    items = []
    for k in range(1, len(ids) - 1):
        if SILENCE_ID in (ids[k - 1], ids[k], ids[k + 1]):
            continue
        items.append(Item(file=stem, onset=starts[k] * FRAME_SECONDS, offset=ends[k] * FRAME_SECONDS,
                          phone=symbols[ids[k]], prev=symbols[ids[k - 1]], next=symbols[ids[k + 1]],
                          speaker=speaker))
    return items


def make_items(labels: dict[str, np.ndarray], symbols: dict[int, str], stems: Sequence[str],
               source: str = "the phone labels") -> list[Item]:
    """Items of the listed files, in list order; every stem needs labels with known ids."""
    missing = [stem for stem in stems if stem not in labels]
    if missing:
        raise DataError(f"{len(missing)} listed files have no labels in {source} "
                        f"(first: {', '.join(missing[:5])})")
    items = []
    for stem in stems:
        unknown = sorted(set(np.unique(labels[stem]).tolist()) - set(symbols))
        if unknown:
            raise DataError(f"{source}: {stem} uses phone ids {unknown[:5]} absent from the phone list")
        items += items_of_file(stem, labels[stem], symbols)
    return items


def write_item_file(path: str | Path, items: Sequence[Item]) -> None:
    """Write items with the ZeroSpeech header, times with 4 decimals (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [f"{i.file} {i.onset:.4f} {i.offset:.4f} {i.phone} {i.prev} {i.next} {i.speaker}"
                        for i in items]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = abx_items_parser(__doc__).parse_args(argv)
    try:
        labels, _ = parseSeqLabels(args.phone_labels)
        items = make_items(labels, read_phone_symbols(args.phones), read_split_list(args.split),
                           source=args.phone_labels)
    except CPCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_item_file(args.out, items)
    n_files = len({item.file for item in items})
    print(f"{args.out}: {len(items)} items from {n_files} files, "
          f"{len({item.phone for item in items})} phones, "
          f"{len({item.speaker for item in items})} speakers")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
