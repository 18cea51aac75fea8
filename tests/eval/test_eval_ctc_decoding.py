"""CTC decodings and the edit distance behind the phone error rate, against slow references."""
from __future__ import annotations

import functools
import itertools
import math
import random

import pytest
import torch

from cpc.criterion.supervised import edit_distance, phone_error_rate
from cpc.eval.ctc_decoding import decode, prefix_beam_search


def reference_edit_distance(a: tuple, b: tuple) -> int:
    """Levenshtein distance straight from its recursive definition."""
    @functools.lru_cache(maxsize=None)
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
    return d(len(a), len(b))


def test_edit_distance_matches_the_recursive_definition():
    rng = random.Random(0)
    for _ in range(300):
        a = tuple(rng.randrange(4) for _ in range(rng.randrange(9)))
        b = tuple(rng.randrange(4) for _ in range(rng.randrange(9)))
        assert edit_distance(a, b) == reference_edit_distance(a, b)
    assert phone_error_rate([[1, 2, 3], []], [[1, 3], [4, 4]]) == pytest.approx(3 / 4)


def collapse(path: tuple[int, ...], blank: int) -> tuple[int, ...]:
    return tuple(label for i, label in enumerate(path)
                 if label != blank and (i == 0 or path[i - 1] != label))


def exhaustive_best_labelling(log_probs: torch.Tensor, blank: int) -> tuple[list[int], float]:
    """The labelling of highest probability, summing every frame path that collapses onto it."""
    totals: dict[tuple[int, ...], float] = {}
    T, C = log_probs.shape
    for path in itertools.product(range(C), repeat=T):
        p = math.exp(sum(log_probs[t, c].item() for t, c in enumerate(path)))
        key = collapse(path, blank)
        totals[key] = totals.get(key, 0.0) + p
    best = max(totals, key=totals.get)
    return list(best), totals[best]


def test_unpruned_beam_search_finds_the_most_probable_labelling():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        log_probs = torch.randn(5, 3, generator=generator).mul(2).log_softmax(dim=-1)
        expected, _ = exhaustive_best_labelling(log_probs, blank=2)
        assert prefix_beam_search(log_probs, blank=2, beam_width=1000) == expected


def test_beam_search_beats_the_best_path_where_paths_add_up():
    # best path: blank, blank -> []; but 'a' has 0.4*0.6 + 0.6*0.4 + 0.4*0.4 = 0.64 > 0.36
    probs = torch.tensor([[0.4, 0.6], [0.4, 0.6]])
    log_probs = probs.log()
    assert decode(log_probs, 2, blank=1, decoding="greedy") == []
    assert decode(log_probs, 2, blank=1, decoding="beam") == [0]


def test_greedy_collapses_repeats_then_drops_blanks_within_the_length():
    frames = [0, 0, 3, 1, 1, 3, 1, 2, 2]  # blank = 3; the last two frames are padding
    log_probs = torch.nn.functional.one_hot(torch.tensor(frames), 4).float().mul(9).log_softmax(-1)
    assert decode(log_probs, 7, blank=3, decoding="greedy") == [0, 1, 1]
    assert decode(log_probs, 7, blank=3, decoding="beam", beam_width=4) == [0, 1, 1]
    with pytest.raises(ValueError, match="unknown decoding 'viterbi'"):
        decode(log_probs, 7, blank=3, decoding="viterbi")
