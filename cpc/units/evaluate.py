r"""Score quantized units against frame phone labels, one table row per units file.

    python -m cpc.units.evaluate OUT/ckpt/quantized_outputs.txt OUT/mfcc/quantized_outputs.txt \
        --names checkpoint mfcc --pathPhone corpus/converted_aligned_phones.txt \
        --phones corpus/phones.txt

Columns: phone purity, cluster purity and PNMI (HuBERT's, :mod:`cpc.units.quality`) over the
frames that have both a unit and a phone label (a file's units and labels may differ by up to
two frames at the end, the extra frames are dropped); the bitrate (ZeroSpeech's, repeats kept
unless --merge_repeats) over all units of the file, at one unit per 10 ms; ABX error (within /
across speakers, angular distance) of the units' one-hot vectors on the items that
``cpc.eval.make_abx_items`` makes from the same labels (phone runs with phones on both sides).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/units/evaluate.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.units.options import evaluate_parser
from cpc.utils.cli import answer_help, exit_without_teardown
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(evaluate_parser(__doc__), sys.argv[1:])

import math

import numpy as np

from cpc.data.labels import parseSeqLabels
from cpc.units.onehot import read_quantized
from cpc.units.quality import bitrate, cluster_purity, joint_counts, phone_purity, pnmi
from cpc.utils.constants import FRAME_SECONDS
from cpc.utils.errors import CPCError, DataError

MAX_LENGTH_GAP = 2  # frames a file's units and labels may differ by
COLUMNS = ("files", "frames", "units", "phone_purity", "cluster_purity", "pnmi", "bitrate",
           "abx_within", "abx_across")


def aligned_pairs(units: dict[str, np.ndarray], labels: dict[str, np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Concatenated (phone, unit) frame pairs of the files having both, and those files."""
    stems = [stem for stem in units if stem in labels]
    if not stems:
        raise DataError(f"no file has both units and phone labels (first unit stems: "
                        f"{', '.join(list(units)[:3])})")
    phones, unit_frames = [], []
    for stem in stems:
        length = min(len(units[stem]), len(labels[stem]))
        if max(len(units[stem]), len(labels[stem])) - length > MAX_LENGTH_GAP:
            raise DataError(f"{stem}: {len(units[stem])} units but {len(labels[stem])} phone "
                            f"labels; more than {MAX_LENGTH_GAP} frames apart means another "
                            f"frame rate or another file")
        phones.append(labels[stem][:length])
        unit_frames.append(units[stem][:length])
    return np.concatenate(phones), np.concatenate(unit_frames), stems


def abx_of_units(units: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                 symbols: dict[int, str], stems: list[str], *, seed: int = 0) -> dict[str, float]:
    """ABX error (within, across) of the units' one-hot vectors, through :mod:`cpc.eval.ABX`;
    NaN for a mode without any cell."""
    from cpc.eval.ABX import ItemFile, gather_item_frames, run_modes
    from cpc.eval.make_abx_items import make_items

    items = make_items(labels, symbols, stems)
    if not items:
        return {"abx_within": math.nan, "abx_across": math.nan}
    item_file = ItemFile(path=Path("<units>"), file=[i.file for i in items],
                         onset=np.array([i.onset for i in items]),
                         offset=np.array([i.offset for i in items]), phone=[i.phone for i in items],
                         context=[f"{i.prev}+{i.next}" for i in items], speaker=[i.speaker for i in items])
    n_units = 1 + max(int(units[stem].max()) for stem in stems)
    eye = np.eye(n_units, dtype=np.float32)
    frames, ids, _ = gather_item_frames(item_file, lambda stem: eye[units[stem]], progress=False)
    results = run_modes(frames, ids, ["within", "across"], distance="angular", max_size_group=10,
                        max_x_across=5, seed=seed)
    return {f"abx_{r.mode}": float(r.error) for r in results}


def evaluate_units(units: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                   symbols: dict[int, str] | None, *, abx: bool = True, merge: bool = False,
                   seed: int = 0) -> dict[str, float]:
    """One table row: the figures of the module docstring."""
    phones, unit_frames, stems = aligned_pairs(units, labels)
    counts = joint_counts(phones, unit_frames)
    n_frames = sum(len(u) for u in units.values())
    row = {"files": len(units), "frames": len(phones),
           "units": int(len(np.unique(np.concatenate(list(units.values()))))),
           "phone_purity": phone_purity(counts), "cluster_purity": cluster_purity(counts),
           "pnmi": pnmi(counts),
           "bitrate": bitrate(units.values(), n_frames * FRAME_SECONDS, merge=merge)}
    if abx:
        names = symbols or {i: str(i) for i in range(int(phones.max()) + 1)}
        row.update(abx_of_units(units, labels, names, stems, seed=seed))
    return row


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Fixed-width table: one line per units file, percentages for purities / PNMI / ABX."""
    columns = [c for c in COLUMNS if any(c in row for row in rows.values())]
    width = max(len(name) for name in rows) + 2
    lines = [f"{'':<{width}}" + "".join(f"{c:>15}" for c in columns)]
    for name, row in rows.items():
        cells = []
        for column in columns:
            value = row[column]
            if column in ("files", "frames", "units"):
                cells.append(f"{value:>15d}")
            elif column == "bitrate":
                cells.append(f"{value:>15.1f}")
            else:
                cells.append(f"{100 * value:>15.2f}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = evaluate_parser(__doc__).parse_args(sys.argv[1:] if argv is None else argv)
    from cpc.eval.make_abx_items import read_phone_symbols
    names = args.names or args.quantized
    try:
        if len(names) != len(args.quantized):
            raise DataError(f"--names gives {len(names)} names for {len(args.quantized)} files")
        labels, _ = parseSeqLabels(args.pathPhone)
        symbols = read_phone_symbols(args.phones) if args.phones else None
        rows = {name: evaluate_units(read_quantized(path), labels, symbols, abx=not args.no_abx,
                                     merge=args.merge_repeats, seed=args.seed)
                for name, path in zip(names, args.quantized)}
    except CPCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows))
    if args.out:
        from cpc.utils.checkpoint import write_json
        write_json(args.out, {name: {k: None if isinstance(v, float) and math.isnan(v) else v
                                     for k, v in row.items()} for name, row in rows.items()})
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
