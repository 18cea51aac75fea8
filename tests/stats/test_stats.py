"""Stats: reprDiff against numpy, merging across batches, spec parsing and its errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cpc.stats import STATS, StatError, StatsCollector, parse_stats_spec
from cpc.stats.repr_diff import histogram


def numpy_distances(x: np.ndarray, metric: str) -> np.ndarray:
    out = []
    for window in x:
        for t in range(len(window) - 1):
            a, b = window[t + 1].astype(np.float64), window[t].astype(np.float64)
            cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
            out.append({"euclid": np.linalg.norm(a - b), "euclidsq": np.sum((a - b) ** 2),
                        "cosine": 1 - cos, "coscorr": abs(cos)}[metric])
    return np.array(out)


@pytest.mark.parametrize("metric", ["cosine", "euclid", "euclidsq", "coscorr"])
def test_repr_diff_equals_numpy_over_merged_batches(metric, tmp_path):
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(3, 6, 5)).astype(np.float32) for _ in range(3)]
    (stat,) = parse_stats_spec(f"reprDiff:{metric},ctx_repr,0.1,{tmp_path}")
    collector = StatsCollector([stat])
    for batch in batches:
        collector.update({"ctx_repr": torch.from_numpy(batch)})
    results = collector.finalize(epoch=3)
    expected = np.concatenate([numpy_distances(b, metric) for b in batches])
    prefix = f"reprDiff_ctx_repr_{metric}_by0.1_"
    assert results[prefix + "count"] == len(expected) == 3 * 3 * 5
    assert results[prefix + "mean"] == pytest.approx(expected.mean(), rel=1e-5)
    assert results[prefix + "q50"] == pytest.approx(np.median(expected), rel=1e-5)
    assert results[prefix + "q95"] == pytest.approx(np.quantile(expected, 0.95), rel=1e-5)
    assert (tmp_path / f"reprDiff_ctx_repr_{metric}_by0.1_3.png").is_file()
    assert collector.finalize(epoch=4) == {}  # reset after finalising


def test_histogram_bins():
    edges, counts = histogram(np.array([0.01, 0.04, 0.05, 0.11, 0.29]), 0.05)
    assert edges.tolist() == pytest.approx([0.0, 0.05, 0.1, 0.25])
    assert counts.tolist() == [2, 1, 1, 1]


def test_spec_keeps_underscores_in_arguments(tmp_path):
    spec = f"reprDiff:cosine,ctx_repr,0.05,{tmp_path}/a_b_reprDiff:euclid,repr,1,{tmp_path}/c_d"
    first, second = parse_stats_spec(spec)
    assert first.directory == f"{tmp_path}/a_b" and second.directory == f"{tmp_path}/c_d"
    assert second.representation == "conv_repr" and first.needs == {"ctx_repr"}
    assert parse_stats_spec("") == []


@pytest.mark.parametrize("spec, message", [
    ("histo:1,2", "unknown stat 'histo'.*available: reprDiff"),
    ("reprDiff:cosine,ctx_repr,0.05", r"METRIC,REPR,STEP,DIR \(4 arguments\)"),
    ("reprDiff:manhattan,ctx_repr,0.05,d", "unknown metric 'manhattan'"),
    ("reprDiff:cosine,pred,0.05,d", "unknown representation 'pred'"),
    ("reprDiff:cosine,ctx_repr,wide,d", "STEP must be a number"),
    ("reprDiff:cosine,ctx_repr,0,d", "must be positive"),
    ("reprDiff:cosine,ctx_repr,1,d_reprDiff:cosine,ctx,1,e", "requested twice"),
])
def test_spec_errors_are_clear(spec, message):
    with pytest.raises(StatError, match=message):
        parse_stats_spec(spec)


def test_registry_lists_repr_diff():
    assert "reprDiff" in STATS
