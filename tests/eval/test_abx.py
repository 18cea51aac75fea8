"""ABX: DTW, cells and averaging against plain re-implementations, item files, command line."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from cpc.data.labels import parseSeqLabels
from cpc.data.splits import read_split_list
from cpc.utils.errors import DataError
from cpc.eval import ABX
from cpc.eval.abx_core import (FrameData, Items, abx, across_cells, cell_chunks, dtw,
                               frame_distances, item_frame_range, normalise_frames, score_cells,
                               within_cells)
from cpc.eval.make_abx_items import (HEADER, make_items, phone_runs, read_phone_symbols,
                                     write_item_file)
from cpc.eval.make_abx_items import main as make_items_main
from tests.model.test_feature_loader import save_random_run

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ plain references


def reference_dtw(dist: np.ndarray) -> np.float32:
    """Textbook DP in float32, then Libri-light's backtracking for the path length."""
    dist = dist.astype(np.float32)
    n, m = dist.shape
    cost = np.empty((n, m), np.float32)
    cost[0, 0] = dist[0, 0]
    for i in range(1, n):
        cost[i, 0] = dist[i, 0] + cost[i - 1, 0]
    for j in range(1, m):
        cost[0, j] = dist[0, j] + cost[0, j - 1]
    for i in range(1, n):
        for j in range(1, m):
            cost[i, j] = dist[i, j] + min(cost[i - 1, j], cost[i - 1, j - 1], cost[i, j - 1])
    length, i, j = 1, n - 1, m - 1
    while i > 0 and j > 0:
        up, left, diag = cost[i - 1, j], cost[i, j - 1], cost[i - 1, j - 1]
        if diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        length += 1
    length += i + j  # walk along the first row or column
    return np.float32(cost[-1, -1]) / np.float32(length)


def reference_sequence_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frame distances of the tested code (checked separately), then the plain DTW."""
    (ux, nx), (uy, ny) = normalise_frames(torch.from_numpy(x)[None]), normalise_frames(torch.from_numpy(y)[None])
    return float(reference_dtw(frame_distances(ux, uy, nx, ny)[0].numpy()))


def reference_abx(features: list[np.ndarray], context, phone, speaker, mode: str) -> float:
    """Loop-by-loop Libri-light ABX without subsampling."""
    groups = defaultdict(list)
    for index, key in enumerate(zip(context, speaker, phone)):
        groups[key].append(index)
    cache = {}

    def dist(u: int, v: int) -> float:
        if (u, v) not in cache:
            cache[u, v] = reference_sequence_distance(features[u], features[v])
        return cache[u, v]

    def cell_error(xs, as_, bs, same):
        wins = total = 0
        for x, a, b in itertools.product(xs, as_, bs):
            if same and x == a:
                continue
            d_xa = dist(min(x, a), max(x, a)) if same else dist(x, a)
            d_xb = dist(x, b)
            wins += (d_xa < d_xb) + 0.5 * (d_xa == d_xb)
            total += 1
        return 1 - wins / total

    cells = {}
    for (c, s, p), members_a in groups.items():
        for (c_b, s_b, q), members_b in groups.items():
            if (c_b, s_b) != (c, s) or q == p:
                continue
            if mode == "within":
                if len(members_a) >= 2:
                    cells[(c, s, p, q, None)] = cell_error(members_a, members_a, members_b, True)
                continue
            for (c_x, s_x, p_x), members_x in groups.items():
                if c_x == c and p_x == p and s_x != s:
                    cells[(c, s, p, q, s_x)] = cell_error(members_x, members_a, members_b, False)
    by_speaker = defaultdict(list)
    for (c, s, p, q, s_x), error in cells.items():
        by_speaker[(s, p, q)].append(error)
    by_pair = defaultdict(list)
    for (s, p, q), errors in by_speaker.items():
        by_pair[(p, q)].append(np.mean(errors))
    return float(np.mean([np.mean(errors) for errors in by_pair.values()]))


def synthetic_items(rng, n_context=3, n_speaker=3, n_phone=3, max_items=3, max_len=7,
                    min_len=1, dim=5):
    """Random items (random group sizes and lengths) and their random frames."""
    rows, features = [], []
    for c, s, p in itertools.product(range(n_context), range(n_speaker), range(n_phone)):
        for _ in range(rng.integers(0, max_items + 1)):
            rows.append((c, s, p))
            features.append(rng.standard_normal((rng.integers(min_len, max_len + 1), dim)).astype(np.float32))
    return np.array(rows), features


def as_items(rows: np.ndarray, features: list[np.ndarray]) -> tuple[torch.Tensor, Items]:
    lengths = np.array([len(f) for f in features])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    items = Items(context=rows[:, 0], phone=rows[:, 2], speaker=rows[:, 1], start=starts, length=lengths)
    return torch.from_numpy(np.concatenate(features)), items


# ------------------------------------------------------------------ math


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (4, 4), (3, 9), (11, 5), (17, 13)])
def test_dtw_equals_plain_dynamic_programming(shape):
    rng = np.random.default_rng(sum(shape))
    batch = 40
    n_x, n_y = shape
    len_x = rng.integers(1, n_x + 1, batch)
    len_y = rng.integers(1, n_y + 1, batch)
    dist = rng.random((batch, n_x, n_y)).astype(np.float32)
    dist[: batch // 2] = np.round(dist[: batch // 2] * 2) / 2  # many ties: tie-breaks matter
    got = dtw(torch.from_numpy(dist), torch.from_numpy(len_x), torch.from_numpy(len_y)).numpy()
    expected = [reference_dtw(dist[b, :len_x[b], :len_y[b]]) for b in range(batch)]
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.float32))


def test_dtw_path_length_normalisation():
    # Identical diagonal: cost 0. Constant distances: cost / length is that constant.
    assert dtw(torch.ones(1, 3, 5) * 0.25, torch.tensor([3]), torch.tensor([5])).item() == 0.25
    eye = 1 - torch.eye(4)[None]
    assert dtw(eye, torch.tensor([4]), torch.tensor([4])).item() == 0.0


def test_frame_distances_and_null_frames():
    x = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    y = torch.tensor([[[0.0, 2.0], [-3.0, 0.0], [0.0, 0.0]]])
    (ux, nx), (uy, ny) = normalise_frames(x), normalise_frames(y)
    angular = frame_distances(ux, uy, nx, ny, "angular")[0]
    cosine = frame_distances(ux, uy, nx, ny, "cosine")[0]
    torch.testing.assert_close(angular, torch.tensor([[0.5, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    torch.testing.assert_close(cosine, torch.tensor([[1.0, 2.0, 2.0], [2.0, 2.0, 0.0]]))


def test_item_frame_range_follows_libri_light():
    # Frame i is kept when ceil(100 onset - 0.5) <= i < floor(100 offset - 0.5).
    assert item_frame_range(0.2925, 0.4725, 100) == (29, 46)
    assert item_frame_range(0.0, 0.2, 100) == (0, 19)
    assert item_frame_range(0.30, 0.60, 50) == (30, 50)  # clipped to the file
    assert item_frame_range(0.10, 0.11, 100) == (10, 10)  # one frame: nothing kept
    assert item_frame_range(0.02, 0.06, 100, step=0.02) == (1, 2)


@pytest.mark.parametrize("mode", ["within", "across"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_abx_equals_loop_reference(mode, seed):
    rng = np.random.default_rng(seed)
    rows, features = synthetic_items(rng)
    frames, items = as_items(rows, features)
    result = abx(frames, items, mode, max_size_group=100, max_x_across=100)
    expected = reference_abx(features, rows[:, 0], rows[:, 2], rows[:, 1], mode)
    assert result.error == pytest.approx(expected, abs=1e-9)
    assert result.n_cells >= 5


def test_one_hot_phone_features_give_zero_error():
    rng = np.random.default_rng(0)
    rows, features = synthetic_items(rng, n_phone=4, dim=4)
    features = [np.tile(np.eye(4, dtype=np.float32)[p], (len(f), 1)) for (_, _, p), f in zip(rows, features)]
    frames, items = as_items(rows, features)
    for mode in ("within", "across"):
        assert abx(frames, items, mode).error == 0.0


@pytest.mark.parametrize("distance", ["angular", "cosine"])
def test_random_features_give_chance_error(distance):
    # Equal lengths: DTW favours pairs of different lengths, which would bias the error.
    rng = np.random.default_rng(0)
    rows, features = synthetic_items(rng, n_context=4, n_speaker=4, n_phone=4, max_items=4,
                                     min_len=5, max_len=5, dim=8)
    frames, items = as_items(rows, features)
    for mode in ("within", "across"):
        result = abx(frames, items, mode, distance=distance)
        assert result.n_triplets > 1000
        assert abs(result.error - 0.5) < 0.05, (mode, result)


def test_subsampling_is_seeded_and_bounded():
    rng = np.random.default_rng(3)
    rows, features = synthetic_items(rng, n_context=2, max_items=6, max_len=4)
    frames, items = as_items(rows, features)
    for mode in ("within", "across"):
        small = abx(frames, items, mode, max_size_group=2, max_x_across=1, seed=5)
        assert small == abx(frames, items, mode, max_size_group=2, max_x_across=1, seed=5)
        full = abx(frames, items, mode, max_size_group=100, max_x_across=100)
        assert small.n_triplets < full.n_triplets


def largest_group(rows: np.ndarray) -> int:
    return int(np.unique(rows, axis=0, return_counts=True)[1].max())


@pytest.mark.parametrize("max_size_group", [2, 3, 10, 1000])
def test_cells_are_padded_to_the_largest_group_drawn(max_size_group):
    # Groups of at most 3 items: padding to --max_size_group would make 1000-wide cells.
    rows, features = synthetic_items(np.random.default_rng(4), max_items=3)
    _, items = as_items(rows, features)
    width = min(max_size_group, largest_group(rows))
    assert width == min(max_size_group, 3)
    for cells in (within_cells(items, max_size_group, np.random.default_rng(0)),
                  across_cells(items, max_size_group, 5, np.random.default_rng(0))):
        for members in (cells.x, cells.a, cells.b):
            assert members.shape == (len(cells), width)
            assert (members >= 0).sum(axis=1).max() == width  # no column of padding only


@pytest.mark.parametrize("mode", ["within", "across"])
def test_scores_do_not_depend_on_max_size_group_beyond_the_largest_group(mode):
    rows, features = synthetic_items(np.random.default_rng(5), n_context=4, max_items=3)
    frames, items = as_items(rows, features)
    results = [abx(frames, items, mode, max_size_group=size) for size in (3, 10, 100, 1000)]
    assert results[0].n_cells >= 5
    assert all(result == results[0] for result in results[1:])


def test_cell_chunks_cover_cells_in_ascending_width_within_the_budget():
    width = np.array([3, 1, 2, 2, 9, 1, 3, 2, 1, 4])
    chunks = list(cell_chunks(width, max_slots=18))
    assert np.array_equal(np.sort(np.concatenate(chunks)), np.arange(len(width)))
    # a chunk of n cells padded to width w holds n * w ** 2 <= 18 slots, or is one cell
    assert [list(width[chunk]) for chunk in chunks] == [[1, 1, 1, 2], [2, 2], [3, 3], [4], [9]]
    [whole] = cell_chunks(width, max_slots=1000)
    assert list(whole) == list(np.argsort(width, kind="stable"))


def test_scores_do_not_depend_on_chunking():
    # Mixed group sizes (1 to 6): chunks of a few cells, each padded to its own largest group.
    rows, features = synthetic_items(np.random.default_rng(6), n_context=2, max_items=6)
    frames, items = as_items(rows, features)
    data = FrameData.from_frames(frames)
    for cells in (within_cells(items, 100, np.random.default_rng(0)),
                  across_cells(items, 100, 100, np.random.default_rng(0))):
        whole = score_cells(data, items, cells)
        chunked = score_cells(data, items, cells, max_pairs=40)
        assert len(list(cell_chunks(cells.widths(), 40))) > 5
        np.testing.assert_array_equal(chunked.error, whole.error)
        np.testing.assert_array_equal(chunked.n_triplets, whole.n_triplets)


# ------------------------------------------------------------------ item files


def test_make_items_from_labels():
    symbols = {0: "SIL", 1: "A", 2: "B", 3: "C"}
    labels = {"12-3-0001": np.array([0, 0, 1, 1, 2, 2, 2, 3, 1, 0, 2, 3, 3])}
    items = make_items(labels, symbols, ["12-3-0001"])
    # Runs: SIL A B C A SIL B C; kept: B (A, C), C (B, A). Edges and silence neighbours dropped.
    assert [(i.phone, i.prev, i.next, i.onset, i.offset, i.speaker) for i in items] == [
        ("B", "A", "C", pytest.approx(0.04), pytest.approx(0.07), "12"),
        ("C", "B", "A", pytest.approx(0.07), pytest.approx(0.08), "12")]
    starts, ends, ids = phone_runs(labels["12-3-0001"])
    assert list(ids) == [0, 1, 2, 3, 1, 0, 2, 3] and list(ends - starts) == [2, 2, 3, 1, 1, 1, 1, 2]
    with pytest.raises(DataError, match="have no labels"):
        make_items(labels, symbols, ["12-3-0002"])
    with pytest.raises(DataError, match=r"phone ids \[3\]"):
        make_items(labels, {0: "SIL", 1: "A", 2: "B"}, ["12-3-0001"])


def test_item_file_generation_and_parsing_on_the_tiny_corpus(tiny_corpus, tmp_path):
    out = tmp_path / "all.item"
    stems = tmp_path / "all.txt"
    stems.write_text((tiny_corpus / "train_split.txt").read_text() + (tiny_corpus / "val_split.txt").read_text())
    assert make_items_main([str(tiny_corpus / "converted_aligned_phones.txt"),
                            str(tiny_corpus / "phones.txt"), str(stems), "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] == HEADER
    parsed = ABX.read_item_file(out)
    labels, _ = parseSeqLabels(tiny_corpus / "converted_aligned_phones.txt")
    symbols = read_phone_symbols(tiny_corpus / "phones.txt")
    assert len(parsed) > 300 and set(parsed.file) == set(read_split_list(stems))
    assert "SIL" not in set(parsed.phone) and not any("SIL" in c for c in parsed.context)
    for k in range(0, len(parsed), 7):  # every item is one whole run of its phone
        frames = labels[parsed.file[k]]
        start, end = round(parsed.onset[k] * 100), round(parsed.offset[k] * 100)
        assert {symbols[i] for i in frames[start:end]} == {parsed.phone[k]}
        assert symbols[frames[start - 1]] != parsed.phone[k] != symbols[frames[end]]
        assert parsed.context[k] == f"{symbols[frames[start - 1]]}+{symbols[frames[end]]}"
        assert parsed.speaker[k] == parsed.file[k].split("-")[0]


@pytest.mark.parametrize("content, message", [
    ("#header\nf 0.1 0.2 a b c\n", "expected 7 fields"),
    ("#header\nf 0.1 x a b c s\n", "must be numbers"),
    ("#header\nf 0.3 0.2 a b c s\n", "onset < offset"),
    ("#header\n", "holds no item"),
])
def test_malformed_item_files_are_reported_with_their_line(tmp_path, content, message):
    path = tmp_path / "bad.item"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        ABX.read_item_file(path)
    with pytest.raises(DataError, match="does not exist"):
        ABX.read_item_file(tmp_path / "missing.item")


# ------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def tiny_abx(tiny_corpus, tmp_path_factory):
    """Item file of all tiny-corpus files and one-hot phone features for them."""
    root = tmp_path_factory.mktemp("tiny_abx")
    stems = read_split_list(tiny_corpus / "train_split.txt") + read_split_list(tiny_corpus / "val_split.txt")
    labels, n_phones = parseSeqLabels(tiny_corpus / "converted_aligned_phones.txt")
    symbols = read_phone_symbols(tiny_corpus / "phones.txt")
    write_item_file(root / "all.item", make_items(labels, symbols, stems))
    write_item_file(root / "few.item", make_items(labels, symbols, stems[:6]))
    (root / "onehot" / "sub").mkdir(parents=True)
    for i, stem in enumerate(stems):  # nested directories are searched too
        folder = root / "onehot" / ("sub" if i % 2 else "")
        np.save(folder / f"{stem}.npy", np.eye(n_phones, dtype=np.float32)[labels[stem]])
    return root


def test_cli_from_pre_computed_one_hot_is_perfect(tiny_abx, capsys):
    out = tiny_abx / "out_onehot"
    assert ABX.main(["from_pre_computed", str(tiny_abx / "onehot"), str(tiny_abx / "all.item"),
                     "--out", str(out), "--device", "cpu"]) == 0
    assert json.loads((out / "ABX_scores.json").read_text()) == {"within": 0.0, "across": 0.0}
    args = json.loads((out / "ABX_args.json").read_text())
    assert args["load"] == "from_pre_computed" and args["distance"] == "angular"
    assert "ABX within: 0.000 %" in capsys.readouterr().out


def test_cli_reports_missing_features(tiny_abx, tmp_path, capsys):
    (tmp_path / "few").mkdir()
    np.save(tmp_path / "few" / "other.npy", np.zeros((5, 3), np.float32))
    assert ABX.main(["from_pre_computed", str(tmp_path / "few"), str(tiny_abx / "all.item"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "have no .npy features in" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return save_random_run(tmp_path_factory.mktemp("abx_run") / "run", 3, nLevelsGRU=2)


def test_cli_from_checkpoint_as_a_script(tiny_abx, tiny_corpus, tiny_run, tmp_path):
    out = tmp_path / "scores"
    result = subprocess.run(
        [sys.executable, str(REPO / "cpc" / "eval" / "ABX.py"), "from_checkpoint", str(tiny_run),
         str(tiny_abx / "few.item"), str(tiny_corpus), "--file_extension", ".flac", "--mode", "within",
         "--device", "cpu", "--out", str(out)], capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    scores = json.loads((out / "ABX_scores.json").read_text())
    assert list(scores) == ["within"] and 0.0 <= scores["within"] <= 1.0


def test_module_help_runs():
    result = subprocess.run([sys.executable, "-m", "cpc.eval.ABX", "from_pre_computed", "--help"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "--max_size_group" in result.stdout


def _items_of(tiny_corpus: Path, stems: list[str], path: Path) -> Path:
    labels, _ = parseSeqLabels(tiny_corpus / "converted_aligned_phones.txt")
    write_item_file(path, make_items(labels, read_phone_symbols(tiny_corpus / "phones.txt"), stems))
    return path


def test_cli_refuses_items_forming_no_cell(tiny_abx, tiny_corpus, tmp_path, capsys):
    item = _items_of(tiny_corpus, read_split_list(tiny_corpus / "train_split.txt")[:1],
                     tmp_path / "one.item")
    command = ["from_pre_computed", str(tiny_abx / "onehot"), str(item),
               "--out", str(tmp_path / "o")]
    assert ABX.main(command) == 2
    out, err = capsys.readouterr()
    assert "nan" not in out
    [error] = [line for line in err.splitlines() if "error:" in line]  # after tqdm's progress
    assert error.startswith(f"error: {item}: no ABX cell: within: no speaker has two items of "
                            f"the same phone in the same context")
    assert "more files per speaker" in error and "across: all items are of one speaker" in error
    assert not (tmp_path / "o").exists()
    assert ABX.main(command + ["--mode", "across"]) == 2
    assert "across: all items are of one speaker; use items of two" in capsys.readouterr().err


def test_cli_reports_the_mode_with_cells_and_explains_the_other(tiny_abx, tiny_corpus, tmp_path,
                                                                capsys):
    stems = [s for s in read_split_list(tiny_corpus / "train_split.txt") if s.startswith("1133-")]
    item = _items_of(tiny_corpus, stems, tmp_path / "speaker.item")
    assert ABX.main(["from_pre_computed", str(tiny_abx / "onehot"), str(item),
                     "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "ABX within: 0.000 %" in out and "nan" not in out
    assert "ABX across: no cell: all items are of one speaker; use items of two speakers " \
           "or more, or --mode within" in out
    assert json.loads((tmp_path / "o" / "ABX_scores.json").read_text()) == {"within": 0.0,
                                                                            "across": None}


def test_why_no_cell_names_what_is_missing():
    def items(rows: list[tuple[int, int, int]]) -> Items:  # (context, speaker, phone) per item
        rows = np.array(rows)
        ones = np.ones(len(rows), dtype=np.int64)
        return Items(context=rows[:, 0], speaker=rows[:, 1], phone=rows[:, 2], start=ones,
                     length=ones)

    cases = [([(0, 0, 0), (0, 0, 1), (1, 0, 0)], "within", "no speaker has two items of the same"),
             ([(0, 0, 0), (0, 0, 0), (1, 0, 1)], "within", "no speaker has two items of one phone "
                                                           "and an item of another"),
             ([(0, 0, 0), (0, 0, 1)], "across", "all items are of one speaker"),
             ([(0, 0, 0), (0, 0, 1), (0, 1, 2), (1, 1, 0)], "across", "no phone is spoken in the "
                                                                      "same context by two")]
    for rows, mode, reason in cases:
        frames = torch.ones(2, 3)
        assert abx(frames, items(rows), mode).n_cells == 0
        assert ABX.why_no_cell(items(rows), mode).startswith(reason)


def test_cpc_audio_flags_debug_and_num_processes(tiny_abx, tiny_corpus, tmp_path):
    """CPC_audio's --debug keeps the first 1000 files' items; -n maps onto --num_threads."""
    items = ABX.read_item_file(tiny_abx / "all.item")
    first = ABX.first_files(items, 2)
    assert list(dict.fromkeys(first.file)) == list(dict.fromkeys(items.file))[:2]
    assert len(first) == sum(name in set(first.file) for name in items.file)
    args = ABX.parse_args(["from_pre_computed", str(tiny_abx / "onehot"),
                           str(tiny_abx / "all.item"), "--out", str(tmp_path), "-n", "3"])
    assert args.num_threads == 3 and args.device == "auto"
    assert ABX.main(["from_pre_computed", str(tiny_abx / "onehot"), str(tiny_abx / "all.item"),
                     "--out", str(tmp_path / "o"), "--debug", "--num_processes", "1"]) == 0


def test_cpc_audio_cuda_flag_is_device_cuda(tiny_abx, tmp_path, capsys):
    base = ["from_pre_computed", str(tiny_abx / "onehot"), str(tiny_abx / "all.item"),
            "--out", str(tmp_path)]
    assert ABX.parse_args(base + ["--cuda"]).device == "cuda"
    with pytest.raises(SystemExit):
        ABX.parse_args(base + ["--cuda", "--device", "cpu"])
    assert "--cuda contradicts --device cpu" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert ABX.main(base + ["--cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err
