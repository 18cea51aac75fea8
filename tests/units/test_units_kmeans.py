"""Streaming k-means against an obvious in-memory Lloyd; batch size, seeding, resume, edge cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cpc.units.kmeans import (ArrayFrames, KMeansConfig, KMeansState, fit, inertia_of,
                              initial_centroids, update_centroids)


def mixture(n: int = 3000, dim: int = 8, k: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (k, dim))
    return (centres[rng.integers(k, size=n)] + rng.normal(0, 1, (n, dim))).astype(np.float32)


def reference_lloyd(x: np.ndarray, centroids: np.ndarray, n_iter: int, normalize: bool = False
                    ) -> tuple[np.ndarray, list[float]]:
    """Textbook Lloyd in float64, every distance computed explicitly, frame by frame."""
    x = x.astype(np.float64)
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = centroids.astype(np.float64)
    inertias = []
    for _ in range(n_iter):
        labels, inertia = [], 0.0
        for row in x:
            d = [float(np.sum((row - centre) ** 2)) for centre in c]
            labels.append(int(np.argmin(d)))
            inertia += min(d)
        labels = np.array(labels)
        assert len(set(labels)) == len(c), "the reference does not handle empty clusters"
        c = np.stack([x[labels == j].mean(axis=0) for j in range(len(c))])
        if normalize:
            c = c / np.linalg.norm(c, axis=1, keepdims=True)
        inertias.append(inertia)
    return c, inertias


def config(**overrides) -> KMeansConfig:
    values = dict(n_clusters=6, max_iter=5, tol=0.0, batch_size=256, block_frames=1024,
                  progress=False)
    values.update(overrides)
    return KMeansConfig(**values)


@pytest.mark.parametrize("normalize", [False, True])
def test_streamed_lloyd_matches_the_reference(normalize):
    x = mixture(600)
    cfg = config(normalize=normalize)
    start = initial_centroids(ArrayFrames(x), cfg)
    state = fit(ArrayFrames(x), cfg, KMeansState(start))
    expected, inertias = reference_lloyd(x, start.numpy(), 5, normalize)
    np.testing.assert_allclose(state.centroids.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.inertia, inertias, rtol=1e-5)
    assert state.iteration == 5 and int(state.counts.sum()) == 600


def test_result_does_not_depend_on_batch_or_block_size():
    frames = ArrayFrames(mixture())
    results = [fit(frames, config(batch_size=b, block_frames=f, max_iter=8))
               for b, f in ((3000, 3000), (7, 100), (256, 256), (1000, 1))]
    for other in results[1:]:
        torch.testing.assert_close(other.centroids, results[0].centroids, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(other.inertia, results[0].inertia, rtol=1e-9)


def test_seed_fixes_the_result_and_kmeanspp_beats_a_bad_start():
    frames = ArrayFrames(mixture())
    a, b = fit(frames, config(seed=3)), fit(frames, config(seed=3))
    assert torch.equal(a.centroids, b.centroids)
    assert not torch.equal(a.centroids, fit(frames, config(seed=4)).centroids)
    for init in ("k-means++", "random"):
        start = initial_centroids(frames, config(init=init, seed=1))
        assert start.shape == (6, 8) and len(torch.unique(start, dim=0)) == 6
    # on a well-separated mixture, k-means++ finds the six blobs: inertia ~ N * dim * sigma^2
    assert fit(frames, config(max_iter=30)).inertia[-1] < 1.2 * 3000 * 8


def test_resume_ends_where_the_uninterrupted_run_ends():
    frames = ArrayFrames(mixture())
    whole = fit(frames, config(max_iter=6, batches_per_iter=5))
    saved = []
    fit(frames, config(max_iter=3, batches_per_iter=5), on_iteration=lambda s: saved.append(s.to_dict()))
    resumed = fit(frames, config(max_iter=6, batches_per_iter=5), KMeansState.from_dict(saved[-1]))
    assert resumed.iteration == 6 and resumed.position == whole.position
    assert torch.equal(resumed.centroids, whole.centroids)
    assert resumed.inertia == whole.inertia


def test_convergence_stops_early_and_inertia_of_agrees():
    frames = ArrayFrames(mixture())
    state = fit(frames, config(max_iter=100, tol=1e-4))
    assert state.iteration < 100 and state.last_diff < 1e-4
    assert inertia_of(frames, state.centroids, config()) == pytest.approx(state.inertia[-1], rel=1e-5)


def test_empty_clusters_take_the_farthest_frames():
    sums = torch.tensor([[2.0, 2.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    counts = torch.tensor([2, 0, 0])
    far = torch.tensor([[9.0, 9.0], [5.0, 5.0], [1.0, 1.0]])
    centroids, n = update_centroids(sums, counts, far, normalize=False)
    assert n == 2
    torch.testing.assert_close(centroids, torch.tensor([[1.0, 1.0], [9.0, 9.0], [5.0, 5.0]]))
    # duplicated frames: more clusters than distinct points still gives k finite centroids
    x = np.repeat(mixture(20, k=2), 3, axis=0)
    states = [fit(ArrayFrames(x), config(n_clusters=25, max_iter=3, batch_size=b)) for b in (7, 60)]
    assert states[0].reseeded > 0 and torch.isfinite(states[0].centroids).all()
    assert torch.equal(states[0].centroids, states[1].centroids)  # reseeding ignores batching


def test_bad_requests_are_refused():
    frames = ArrayFrames(mixture(10))
    with pytest.raises(ValueError, match="10 frames cannot make 20 clusters"):
        fit(frames, config(n_clusters=20))
    with pytest.raises(ValueError, match="unknown init"):
        fit(frames, config(n_clusters=2, init="forgy"))
    with pytest.raises(ValueError, match="shape"):
        fit(frames, config(n_clusters=2), KMeansState(torch.zeros(3, 8)))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    frames = ArrayFrames(mixture())
    start = initial_centroids(frames, config())
    cpu = fit(frames, config(), KMeansState(start))
    gpu = fit(frames, config(device="cuda"), KMeansState(start))
    torch.testing.assert_close(gpu.centroids, cpu.centroids, rtol=1e-4, atol=1e-4)
