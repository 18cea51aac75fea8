"""Unit quality figures against slow, literal transcriptions of their definitions."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from cpc.units.quality import (bitrate, cluster_purity, joint_counts, merge_repeats, phone_purity,
                               pnmi)


def pairs(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    phones = rng.integers(0, 7, n)
    units = np.where(rng.random(n) < 0.6, phones * 2 % 11, rng.integers(0, 11, n))
    return phones, units


def reference(phones, units):
    """Probabilities counted pair by pair, then the paper's formulas with explicit loops."""
    n = len(phones)
    joint = Counter(zip(phones.tolist(), units.tolist()))
    px, pz = Counter(phones.tolist()), Counter(units.tolist())
    p = {key: c / n for key, c in joint.items()}
    phone_pur = sum(pz[j] / n * max(p.get((i, j), 0) / (pz[j] / n) for i in px) for j in pz)
    cluster_pur = sum(px[i] / n * max(p.get((i, j), 0) / (px[i] / n) for j in pz) for i in px)
    mutual = sum(v * math.log(v / (px[i] / n * pz[j] / n)) for (i, j), v in p.items())
    h_phone = -sum(c / n * math.log(c / n) for c in px.values())
    return phone_pur, cluster_pur, mutual / h_phone


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_purities_and_pnmi_match_the_definitions(seed):
    phones, units = pairs(seed=seed)
    counts = joint_counts(phones, units)
    expected = reference(phones, units)
    assert phone_purity(counts) == pytest.approx(expected[0], rel=1e-12)
    assert cluster_purity(counts) == pytest.approx(expected[1], rel=1e-12)
    assert pnmi(counts) == pytest.approx(expected[2], rel=1e-12)


def test_extreme_cases():
    phones = np.array([0, 0, 1, 1, 2, 2])
    same = joint_counts(phones, phones)
    assert phone_purity(same) == cluster_purity(same) == pytest.approx(1.0)
    assert pnmi(same) == pytest.approx(1.0)
    one_unit = joint_counts(phones, np.zeros(6, int))
    assert pnmi(one_unit) == pytest.approx(0.0, abs=1e-12)
    assert phone_purity(one_unit) == pytest.approx(1 / 3) and cluster_purity(one_unit) == 1.0
    fine = joint_counts(phones, np.arange(6))  # one unit per frame: phone-pure, cluster-impure
    assert phone_purity(fine) == 1.0 and cluster_purity(fine) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="6 phone labels but 5 units"):
        joint_counts(phones, np.arange(5))
    with pytest.raises(ValueError, match="PNMI is undefined"):
        pnmi(joint_counts(np.zeros(4, int), np.arange(4)))


def test_bitrate_is_symbols_per_second_times_entropy():
    seqs = [np.array([1, 1, 2, 3]), np.array([3, 3, 3, 1])]
    # N = 8 symbols in 0.08 s; p = (3/8, 1/8, 4/8)
    entropy = -sum(p * math.log2(p) for p in (3 / 8, 1 / 8, 4 / 8))
    assert bitrate(seqs, 0.08) == pytest.approx(8 / 0.08 * entropy)
    # merged: [1 2 3] [3 1] -> N = 5, p = (2/5, 1/5, 2/5)
    merged = -sum(p * math.log2(p) for p in (2 / 5, 1 / 5, 2 / 5))
    assert bitrate(seqs, 0.08, merge=True) == pytest.approx(5 / 0.08 * merged)
    assert bitrate([np.zeros(100, int)], 1.0) == 0.0
    assert list(merge_repeats(np.array([4, 4, 5, 4, 4]))) == [4, 5, 4]
    with pytest.raises(ValueError, match="positive"):
        bitrate(seqs, 0.0)
