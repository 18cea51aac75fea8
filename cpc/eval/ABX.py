r"""ABX phone discriminability of a checkpoint or of pre-computed features (Libri-light semantics).

    python cpc/eval/ABX.py from_checkpoint CHECKPOINT ITEM_FILE DATASET_DIR --file_extension .flac \
        --out OUT
    python cpc/eval/ABX.py from_pre_computed FEATURES_DIR ITEM_FILE --out OUT

Writes ``OUT/ABX_scores.json`` (``{"within": error, "across": error}``, fractions, for the modes
run) and ``OUT/ABX_args.json``. Item files follow ZeroSpeech (``#file onset offset #phone
prev-phone next-phone speaker``, times in seconds); ``cpc.eval.make_abx_items`` writes them for
a phone-labelled corpus. The exact frame selection, distances, DTW and averaging are described
in :mod:`cpc.eval.abx_core`; docs/evaluation.md has the details and examples.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

if __package__ in (None, ""):  # run as `python cpc/eval/ABX.py`: import the package, not siblings
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.eval.options import abx_parser
from cpc.utils.cli import answer_help, exit_without_teardown
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(abx_parser(__doc__), sys.argv[1:])

import numpy as np
import torch
from tqdm import tqdm

from cpc.eval.abx_core import MODES, ABXResult, Items, abx, item_frame_range
from cpc.utils.files import check_output_dir, exclusive_lock
from cpc.utils import checkpoint as ckpt
from cpc.utils.errors import CPCError, DataError


@dataclass(frozen=True, kw_only=True)
class ItemFile:
    """Parsed item file: one entry per item, labels as strings."""

    path: Path
    file: list[str]
    onset: np.ndarray
    offset: np.ndarray
    phone: list[str]
    context: list[str]  # "prev+next"
    speaker: list[str]

    def __len__(self) -> int:
        return len(self.file)


def read_item_file(path: str | Path) -> ItemFile:
    """Parse an item file; a first line starting with '#' is the header and is skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"item file {path} does not exist")
    files, onsets, offsets, phones, contexts, speakers = [], [], [], [], [], []
    with open(path) as handle:
        for line_no, line in enumerate(handle, 1):
            fields = line.split()
            if not fields or (line_no == 1 and line.startswith("#")):
                continue
            if len(fields) != 7:
                raise DataError(f"{path}:{line_no}: expected 7 fields 'file onset offset phone "
                                f"prev-phone next-phone speaker', got {len(fields)}: {line.strip()[:80]!r}")
            try:
                onset, offset = float(fields[1]), float(fields[2])
            except ValueError:
                raise DataError(f"{path}:{line_no}: onset and offset must be numbers (seconds), "
                                f"got {fields[1]!r} {fields[2]!r}") from None
            if not 0 <= onset < offset:
                raise DataError(f"{path}:{line_no}: needs 0 <= onset < offset, got {onset} {offset}")
            files.append(fields[0])
            onsets.append(onset)
            offsets.append(offset)
            phones.append(fields[3])
            contexts.append(f"{fields[4]}+{fields[5]}")
            speakers.append(fields[6])
    if not files:
        raise DataError(f"item file {path} holds no item")
    return ItemFile(path=path, file=files, onset=np.array(onsets), offset=np.array(offsets), phone=phones,
                    context=contexts, speaker=speakers)


def _ids(labels: list[str]) -> np.ndarray:
    return np.unique(np.array(labels), return_inverse=True)[1].reshape(-1).astype(np.int64)


def gather_item_frames(items: ItemFile, load: Callable[[str], np.ndarray | torch.Tensor],
                       feature_size: float = 0.01, progress: bool = True
                       ) -> tuple[torch.Tensor, Items, int]:
    """Frames of every item (concatenated), the items as ids, and the number of items skipped
    because they select no frame. ``load(file_id)`` returns a file's ``T x D`` features."""
    by_file: dict[str, list[int]] = {}
    for index, name in enumerate(items.file):
        by_file.setdefault(name, []).append(index)
    chunks, starts, lengths, kept = [], [], [], []
    total, dim = 0, None
    for name, indices in tqdm(by_file.items(), desc="features", unit="file", file=sys.stderr,
                              disable=not progress):
        features = torch.as_tensor(load(name)).float()
        if dim is None:
            dim = features.shape[1]
        elif features.shape[1] != dim:
            raise DataError(f"features of {name} have {features.shape[1]} dimensions, those of "
                            f"the files before it {dim}")
        for index in indices:
            start, end = item_frame_range(items.onset[index], items.offset[index],
                                          features.shape[0], feature_size)
            if end > start:
                chunks.append(features[start:end])
                starts.append(total)
                lengths.append(end - start)
                kept.append(index)
                total += end - start
    if not kept:
        raise DataError(f"no item of {items.path} covers a feature frame (wrong --feature_size, "
                        f"or features of other files?)")
    ids = Items(context=_ids([items.context[i] for i in kept]), phone=_ids([items.phone[i] for i in kept]),
                speaker=_ids([items.speaker[i] for i in kept]), start=np.array(starts),
                length=np.array(lengths))
    return torch.cat(chunks), ids, len(items) - len(kept)


def first_files(items: ItemFile, n_files: int) -> ItemFile:
    """The items of the first ``n_files`` files named in the item file (``--debug``)."""
    return items_of_files(items, set(list(dict.fromkeys(items.file))[:n_files]))


def items_of_files(items: ItemFile, kept_files: set[str]) -> ItemFile:
    """The items of the files ``kept_files``, in their order."""
    keep = [i for i, name in enumerate(items.file) if name in kept_files]
    return ItemFile(path=items.path, file=[items.file[i] for i in keep], onset=items.onset[keep],
                    offset=items.offset[keep], phone=[items.phone[i] for i in keep],
                    context=[items.context[i] for i in keep], speaker=[items.speaker[i] for i in keep])


def _require_files(items: ItemFile, available: Iterable[str], where: str) -> None:
    missing = sorted(set(items.file) - set(available))
    if missing:
        raise DataError(f"{len(missing)} files of {items.path} have no {where} "
                        f"(first: {', '.join(missing[:5])})")


def why_no_cell(items: Items, mode: str) -> str:
    """Why the items form no cell of ``mode``, and what to do (see :mod:`cpc.eval.abx_core`
    for what a cell needs)."""
    if mode == "within":
        groups = np.stack([items.context, items.speaker, items.phone], axis=1)
        if np.unique(groups, axis=0, return_counts=True)[1].max() < 2:
            reason = "no speaker has two items of the same phone in the same context"
        else:
            reason = ("no speaker has two items of one phone and an item of another phone in the "
                      "same context")
        return f"{reason}; use more files per speaker, or --mode across"
    if len(np.unique(items.speaker)) == 1:
        return "all items are of one speaker; use items of two speakers or more, or --mode within"
    return ("no phone is spoken in the same context by two speakers, one of whom also has "
            "another phone in that context; use more files, or --mode within")


def run_modes(frames: torch.Tensor, items: Items, modes: list[str], *, distance: str,
              max_size_group: int, max_x_across: int, seed: int) -> list[ABXResult]:
    """Run :func:`cpc.eval.abx_core.abx` for each mode, printing its score and timing."""
    results = []
    for mode in modes:
        start = time.perf_counter()
        result = abx(frames, items, mode, distance=distance, max_size_group=max_size_group,
                     max_x_across=max_x_across, seed=seed)
        if result.n_cells:
            print(f"ABX {mode}: {100 * result.error:.3f} % ({result.n_cells} cells, "
                  f"{result.n_triplets} triplets, {time.perf_counter() - start:.1f} s)", flush=True)
        results.append(result)
    return results


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = abx_parser(__doc__)
    args = parser.parse_args(argv)
    if args.max_size_group < 2:
        parser.error("--max_size_group must be at least 2")
    if args.num_threads < 1:
        parser.error("--num_threads must be at least 1")
    if args.max_x_across < 1:
        parser.error("--max_x_across must be at least 1")
    if not args.feature_size > 0:
        parser.error(f"--feature_size must be positive (seconds per frame), "
                     f"got {args.feature_size}")
    if args.cuda:
        if args.device == "cpu":
            parser.error("--cuda contradicts --device cpu; give one")
        args.device = "cuda"
    if args.out is None:
        if args.load == "from_pre_computed":
            parser.error("from_pre_computed needs --out")
        run = Path(args.path_checkpoint)
        args.out = str(run if run.is_dir() else run.parent)
    return args


def _feature_loader(args: argparse.Namespace, items: ItemFile, device: torch.device
                    ) -> tuple[Callable[[str], np.ndarray | torch.Tensor], ItemFile]:
    """How to load a file's features, and the items left to score: from_checkpoint checks
    the audio of the item file's files first, and ``--bad_audio skip`` drops the items of
    files holding NaN or infinite samples."""
    from cpc.audio_check import screen_by_stem
    from cpc.eval.build_zeroSpeech_features import (build_feature_maker, list_files_by_stem,
                                                    read_features)
    from cpc.feature_loader import buildFeature

    if args.load == "from_pre_computed":
        files = list_files_by_stem(args.path_features, args.file_extension)
        _require_files(items, files, f"{args.file_extension} features in {args.path_features}")
        return (lambda name: read_features(files[name])), items
    files = list_files_by_stem(args.path_dataset, args.file_extension)
    _require_files(items, files, f"{args.file_extension} audio in {args.path_dataset}")
    files = screen_by_stem({name: files[name] for name in dict.fromkeys(items.file)},
                           args.bad_audio)
    maker = build_feature_maker(args.path_checkpoint, get_encoded=args.get_encoded, device=device)
    return (lambda name: buildFeature(maker, files[name], strict=args.strict,
                                      maxSizeSeq=args.max_size_seq, seqNorm=args.seq_norm)[0]
            ), items_of_files(items, set(files))


def main(argv: list[str] | None = None) -> int:
    from cpc.utils.memory import keep_freed_memory
    from cpc.utils.devices import select_device

    args = parse_args(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    modes = list(MODES) if args.mode == "all" else [args.mode]
    try:
        check_output_dir(args.out, "--out")
        with exclusive_lock(args.out, "ABX evaluation", output="ABX_scores.json"):
            device = select_device(args.device)
            items = read_item_file(args.path_item_file)
            if args.debug:
                items = first_files(items, 1000)
            load, items = _feature_loader(args, items, device)
            frames, item_ids, skipped = gather_item_frames(items, load, args.feature_size)
            print(f"{len(item_ids)} items, {frames.shape[0]} frames of dimension "
                  f"{frames.shape[1]}"
                  + (f"; {skipped} items cover no frame and are skipped" if skipped else ""))
            threads = torch.get_num_threads()
            torch.set_num_threads(args.num_threads)
            try:
                results = run_modes(frames.to(device), item_ids, modes, distance=args.distance,
                                    max_size_group=args.max_size_group,
                                    max_x_across=args.max_x_across, seed=args.seed)
            finally:
                torch.set_num_threads(threads)
            empty = {r.mode: why_no_cell(item_ids, r.mode) for r in results if not r.n_cells}
            if len(empty) == len(results):
                raise DataError(f"{items.path}: no ABX cell: "
                                + "; ".join(f"{mode}: {why}" for mode, why in empty.items()))
            for mode, why in empty.items():
                print(f"ABX {mode}: no cell: {why}")
            out = Path(args.out)
            # A mode without any cell scores NaN, written as null (JSON has no NaN).
            ckpt.write_json(out / "ABX_scores.json",
                            {r.mode: None if np.isnan(r.error) else r.error for r in results})
            ckpt.write_json(out / "ABX_args.json", vars(args))
    except (CPCError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
