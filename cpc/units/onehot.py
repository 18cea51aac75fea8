r"""Units to frame features that ABX reads: CPC_audio's ``build_1hot_features.py``.

    python -m cpc.units.onehot OUT/quantized/quantized_outputs.txt OUT/onehot --n_units 50
    python -m cpc.eval.ABX from_pre_computed OUT/onehot ITEMS --file_extension .txt --out OUT/abx

Each ``stem<TAB>u1,u2,...`` line gives OUT/onehot/<stem>.txt (or .npy with --format npy): one
row per unit, the unit's one-hot vector, or with --centroids its k-means centroid (the
"quantized continuous" features). Files are written whole (temp name, then rename); those
already there are skipped, so an interrupted run is simply rerun.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/units/onehot.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.units.options import onehot_parser
from cpc.utils.cli import answer_help, exit_without_teardown
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(onehot_parser(__doc__), sys.argv[1:])

import numpy as np
from tqdm import tqdm

from cpc.utils.errors import CPCError, DataError
from cpc.utils.files import exclusive_lock

DEBUG_FILES = 20


def read_vocabulary(path: str | Path) -> dict[str, int]:
    """``{unit name: index}`` of a dictionary file (first field of each line; fairseq's
    ``madeupword`` padding entries skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dictionary {path} (--dict) does not exist")
    names = [line.split()[0] for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("madeupword")]
    if not names:
        raise DataError(f"dictionary {path} (--dict) is empty")
    return {name: index for index, name in enumerate(names)}


def read_quantized(path: str | Path, vocabulary: dict[str, int] | None = None
                   ) -> dict[str, np.ndarray]:
    """``{stem: unit indices}`` of a ``stem<TAB>u1,u2,...`` file; units are integers, or names
    looked up in ``vocabulary``. A malformed line is a :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"quantized units file {path} does not exist")
    units: dict[str, np.ndarray] = {}
    with open(path) as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise DataError(f"{path}:{line_no}: expected 'stem<TAB>u1,u2,...', got "
                                f"{line.strip()[:80]!r}")
            stem, sequence = fields
            names = sequence.split(",")
            try:
                units[stem] = np.array([vocabulary[n] for n in names] if vocabulary else names,
                                       dtype=np.int64)
            except KeyError as exc:
                raise DataError(f"{path}:{line_no}: unit {exc.args[0]!r} is absent from "
                                f"--dict") from None
            except ValueError:
                raise DataError(f"{path}:{line_no}: units of {stem} are not integers; give "
                                f"their vocabulary with --dict") from None
    if not units:
        raise DataError(f"quantized units file {path} holds no line")
    return units


def unit_features(units: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Rows of ``table`` (one-hot identity or centroids) for each unit."""
    return table[units]


def main(argv: list[str] | None = None) -> int:
    args = onehot_parser(__doc__).parse_args(sys.argv[1:] if argv is None else argv)
    from cpc.eval.build_zeroSpeech_features import write_features
    from cpc.units.clusters import load_clustering
    try:
        vocabulary = read_vocabulary(args.dict) if args.dict else None
        units = read_quantized(args.pathQuantizedUnits, vocabulary)
        if args.centroids:
            table = load_clustering(args.centroids, with_args=False).centroids.numpy()
        else:
            n_units = len(vocabulary) if vocabulary else args.n_units
            table = np.eye(n_units, dtype=np.float32)
        for stem, sequence in units.items():
            if sequence.min() < 0 or sequence.max() >= len(table):
                raise DataError(f"{args.pathQuantizedUnits}: {stem} has unit {sequence.max()} "
                                f"but there are {len(table)} units (--n_units, --dict or "
                                f"--centroids)")
        stems = list(units)[:DEBUG_FILES] if args.debug else list(units)
        out = Path(args.pathOutputDir)
        written = 0
        with exclusive_lock(out, "one-hot export"):
            for stem in tqdm(stems, desc="features", unit="file", file=sys.stderr):
                target = out / f"{stem}.{args.format}"
                if not target.exists():
                    write_features(target, unit_features(units[stem], table), args.format)
                    written += 1
    except (CPCError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: {written} feature files written, {len(stems) - written} already there")
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
