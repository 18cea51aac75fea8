"""Streaming k-means in torch (CPU or CUDA), for corpora whose features do not fit in memory.

Lloyd's algorithm where each iteration reads the frames once, in fixed order and in
mini-batches (from a tensor on the device when ``block_frames`` holds them all, else block by
block from the array or memmap), accumulating per-cluster sums (float64) and counts; the new centroids are the
sums over the counts after the whole pass. The result therefore does not depend on the batch
size, beyond float summation order. Initialisation is seeded k-means++ (or seeded random
picks, CPC_audio's choice) on a random sample of frames. A cluster left empty by a pass is
reseeded, deterministically, with the frames farthest from their centroid in that pass.
Optionally (``normalize``, CPC_audio's ``--norm_vec_len``) frames and centroids are scaled to
unit length, which makes the squared distance ``2 - 2 cos``: spherical k-means.

The state after every iteration (:class:`KMeansState`) is a plain dict of tensors and numbers,
so a run can be saved and resumed; a resumed run ends where the uninterrupted one would.
"""
from __future__ import annotations

import math
import sys
from dataclasses import KW_ONLY, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from cpc.units.options import INITS


class ArrayFrames:
    """Frames (``N x D``) held by a numpy array or memmap, read in row ranges or by index."""

    def __init__(self, array: np.ndarray):
        if array.ndim != 2:
            raise ValueError(f"frames must be N x D, got shape {array.shape}")
        self.array = array

    @property
    def n_frames(self) -> int:
        return self.array.shape[0]

    @property
    def dim(self) -> int:
        return self.array.shape[1]

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as a float32 CPU tensor."""
        return torch.from_numpy(np.array(self.array[start:stop], dtype=np.float32))

    def gather(self, indices: np.ndarray) -> torch.Tensor:
        """Rows at sorted ``indices`` as a float32 CPU tensor."""
        return torch.from_numpy(np.array(self.array[indices], dtype=np.float32))


class ResidentFrames(ArrayFrames):
    """Frames read once into a tensor on the device, for data within ``block_frames``: every
    pass then slices it in place instead of reading and copying the storage again."""

    def __init__(self, frames: ArrayFrames, device: str | torch.device):
        self.array = frames.array
        self.tensor = frames.read(0, frames.n_frames).to(device)

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self.tensor[start:stop]

    def gather(self, indices: np.ndarray) -> torch.Tensor:
        return self.tensor[torch.from_numpy(indices).to(self.tensor.device)]


def resident_if_it_fits(frames: ArrayFrames, config: "KMeansConfig") -> ArrayFrames:
    """``frames`` held on the device when one block holds them all (the passes then read no
    storage); otherwise ``frames``, streamed block by block."""
    if isinstance(frames, ResidentFrames) or frames.n_frames > config.block_frames:
        return frames
    return ResidentFrames(frames, config.device)


@dataclass
class KMeansConfig:
    """What to fit: ``batch_size`` frames per distance computation, ``block_frames`` frames
    read from storage at once (a multiple of ``batch_size`` is best), ``batches_per_iter``
    mini-batches per iteration (None: all; CPC_audio's ``--perIterSize``, cycling through the
    data), ``init_sample`` frames for the initialisation (None: ``max(10000, 64 k)``)."""

    n_clusters: int
    _: KW_ONLY
    max_iter: int = 100
    tol: float = 1e-4
    seed: int = 0
    init: str = "k-means++"
    init_sample: int | None = None
    normalize: bool = False
    batch_size: int = 8192
    block_frames: int = 1 << 20
    batches_per_iter: int | None = None
    device: str | torch.device = "cpu"
    progress: bool = True


@dataclass
class KMeansState:
    """Centroids after ``iteration`` Lloyd iterations; ``last_diff`` is the largest centroid
    move of the last iteration, ``inertia[i]`` the sum of squared distances of the frames
    (seen in iteration i) to the centroids they were assigned to in that iteration (before
    its update), ``counts`` the frames per cluster of the last iteration, ``position`` the
    mini-batch where the next iteration starts."""

    centroids: torch.Tensor
    _: KW_ONLY
    iteration: int = 0
    last_diff: float = math.inf
    inertia: list[float] = field(default_factory=list)
    counts: torch.Tensor | None = None
    position: int = 0
    reseeded: int = 0

    def to_dict(self) -> dict:
        return {"centroids": self.centroids.cpu(), "iteration": self.iteration,
                "last_diff": self.last_diff, "inertia": list(self.inertia),
                "counts": None if self.counts is None else self.counts.cpu(),
                "position": self.position, "reseeded": self.reseeded}

    @classmethod
    def from_dict(cls, content: dict) -> "KMeansState":
        return cls(content["centroids"].float(), iteration=int(content["iteration"]),
                   last_diff=float(content["last_diff"]), inertia=[float(v) for v in content["inertia"]],
                   counts=content["counts"], position=int(content["position"]),
                   reseeded=int(content["reseeded"]))


# ------------------------------------------------------------------------------------ math

def normalise_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (zero rows stay zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``N x K`` squared Euclidean distances, as ``|x|^2 - 2 x.c + |c|^2`` (one matmul)."""
    x_sq = (x * x).sum(dim=1, keepdim=True)
    c_sq = (centroids * centroids).sum(dim=1)
    return torch.addmm(x_sq + c_sq, x, centroids.t(), alpha=-2).clamp_min_(0)


def assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row and the squared distance to it. The row's own ``|x|^2``
    does not change which centroid is nearest, so it is added to the minimum only."""
    c_sq = (centroids * centroids).sum(dim=1)
    partial, labels = torch.addmm(c_sq, x, centroids.t(), alpha=-2).min(dim=1)
    return labels, (partial + (x * x).sum(dim=1)).clamp_min_(0)


def kmeans_plusplus(sample: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centroid is a sample row
    drawn with probability proportional to its squared distance to the nearest one so far.
    Draws use ``generator`` (a CPU generator) so the seed fixes the picks."""
    first = int(torch.randint(sample.shape[0], (1,), generator=generator))
    chosen = [first]
    nearest = squared_distances(sample, sample[first:first + 1])[:, 0].double()
    for _ in range(1, k):
        total = float(nearest.sum())
        if total <= 0:  # fewer distinct rows than clusters: take any row not chosen yet
            free = torch.ones(sample.shape[0], dtype=torch.bool)
            free[chosen] = False
            index = int(torch.nonzero(free)[0])
        else:
            index = int(torch.multinomial((nearest / total).cpu(), 1, generator=generator))
        chosen.append(index)
        new = squared_distances(sample, sample[index:index + 1])[:, 0].double()
        nearest = torch.minimum(nearest, new)
    return sample[chosen].clone()


def random_init(sample: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` distinct sample rows drawn uniformly."""
    return sample[torch.randperm(sample.shape[0], generator=generator)[:k].to(sample.device)].clone()


# ------------------------------------------------------------------------------- streaming

def _batches(frames: ArrayFrames, config: KMeansConfig, first: int, count: int
             ) -> Iterator[torch.Tensor]:
    """``count`` mini-batches starting at mini-batch ``first`` (cycling), on the device.
    Storage is read in blocks of ``block_frames`` rows that start on batch boundaries."""
    total = n_batches(frames, config)
    per_block = max(1, config.block_frames // config.batch_size)
    done, index = 0, first % total
    while done < count:
        block_end = min(total, index + per_block, index + count - done)
        start, stop = index * config.batch_size, min(block_end * config.batch_size, frames.n_frames)
        block = frames.read(start, stop).to(config.device)
        if config.normalize:
            block = normalise_rows(block)
        for offset in range(0, stop - start, config.batch_size):
            yield block[offset:offset + config.batch_size]
        done += block_end - index
        index = block_end % total


def n_batches(frames: ArrayFrames, config: KMeansConfig) -> int:
    """Mini-batches of one full pass over the frames."""
    return math.ceil(frames.n_frames / config.batch_size)


def initial_centroids(frames: ArrayFrames, config: KMeansConfig) -> torch.Tensor:
    """Seeded initial centroids from a random sample of the frames (read in index order)."""
    k = config.n_clusters
    if frames.n_frames < k:
        raise ValueError(f"{frames.n_frames} frames cannot make {k} clusters")
    if config.init not in INITS:
        raise ValueError(f"unknown init {config.init!r}; choose from {INITS}")
    generator = torch.Generator().manual_seed(config.seed)
    size = min(frames.n_frames, config.init_sample or max(10_000, 64 * k))
    indices = torch.randperm(frames.n_frames, generator=generator)[:size].sort().values.numpy()
    sample = frames.gather(indices).to(config.device)
    if config.normalize:
        sample = normalise_rows(sample)
    pick = kmeans_plusplus if config.init == "k-means++" else random_init
    return pick(sample, k, generator)


def lloyd_pass(frames: ArrayFrames, centroids: torch.Tensor, config: KMeansConfig, first: int,
               count: int) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """One streamed assignment pass: per-cluster float64 sums and counts, the inertia, and
    the ``k`` frames farthest from their centroid (farthest first; on ties, earliest first)."""
    k, dim = centroids.shape
    sums = torch.zeros(k, dim, dtype=torch.float64, device=centroids.device)
    counts = torch.zeros(k, dtype=torch.int64, device=centroids.device)
    inertia = torch.zeros((), dtype=torch.float64, device=centroids.device)
    far_d = torch.empty(0, device=centroids.device)
    far_x = torch.empty(0, dim, device=centroids.device)
    for x in _batches(frames, config, first, count):
        labels, distances = assign(x, centroids)
        sums.index_add_(0, labels, x.double())
        counts += torch.bincount(labels, minlength=k)
        inertia += distances.double().sum()
        candidates = torch.sort(distances, descending=True, stable=True).indices[:k]
        far_d, far_x = torch.cat([far_d, distances[candidates]]), torch.cat([far_x, x[candidates]])
        order = torch.sort(far_d, descending=True, stable=True).indices[:k]
        far_d, far_x = far_d[order], far_x[order]
    return sums, counts, float(inertia), far_x


def update_centroids(sums: torch.Tensor, counts: torch.Tensor, far: torch.Tensor, *,
                     normalize: bool) -> tuple[torch.Tensor, int]:
    """Means of the clusters; the empty ones (in index order) take the farthest frames in
    turn (which also stay in their own cluster's mean until the next pass). Returns the centroids (float32) and the number of clusters reseeded."""
    centroids = (sums / counts.clamp_min(1).unsqueeze(1).double()).float()
    empty = torch.nonzero(counts == 0).flatten()
    n_reseeded = min(len(empty), far.shape[0])
    if n_reseeded:
        centroids[empty[:n_reseeded]] = far[:n_reseeded].float()
    if normalize:
        centroids = normalise_rows(centroids)
    return centroids, n_reseeded


def fit(frames: ArrayFrames, config: KMeansConfig, state: KMeansState | None = None,
        on_iteration: Callable[[KMeansState], None] | None = None) -> KMeansState:
    """Run Lloyd iterations until ``max_iter`` or a largest centroid move below ``tol``.

    ``state`` resumes a saved run; ``on_iteration(state)`` is called after each iteration
    (to save it). The returned state's centroids are on the CPU.
    """
    if config.batch_size < 1 or config.block_frames < 1:
        raise ValueError("batch_size and block_frames must be positive")
    frames = resident_if_it_fits(frames, config)
    if state is None:
        state = KMeansState(initial_centroids(frames, config))
    elif state.centroids.shape != (config.n_clusters, frames.dim):
        raise ValueError(f"the saved state has centroids of shape {tuple(state.centroids.shape)}, "
                         f"not {config.n_clusters} x {frames.dim}")
    total = n_batches(frames, config)
    per_iter = total if config.batches_per_iter is None else min(config.batches_per_iter, total)
    centroids = state.centroids.to(config.device)
    bar = tqdm(total=config.max_iter, initial=state.iteration, desc="k-means", unit="iter",
               file=sys.stderr, disable=not config.progress)
    while state.iteration < config.max_iter and state.last_diff >= config.tol:
        sums, counts, inertia, far = lloyd_pass(frames, centroids, config, state.position, per_iter)
        updated, n_reseeded = update_centroids(sums, counts, far, normalize=config.normalize)
        state = KMeansState(updated.cpu(), iteration=state.iteration + 1,
                            last_diff=float((updated - centroids).norm(dim=1).max()),
                            inertia=state.inertia + [inertia], counts=counts.cpu(),
                            position=(state.position + per_iter) % total,
                            reseeded=state.reseeded + n_reseeded)
        centroids = updated
        bar.update(1)
        bar.set_postfix(inertia=f"{inertia:.4g}", move=f"{state.last_diff:.2e}")
        if on_iteration is not None:
            on_iteration(state)
    bar.close()
    return state


def inertia_of(frames: ArrayFrames, centroids: torch.Tensor, config: KMeansConfig) -> float:
    """Sum of squared distances of all frames to their nearest centroid (one pass)."""
    centroids = centroids.to(config.device)
    frames = resident_if_it_fits(frames, config)
    total = 0.0
    for x in _batches(frames, config, 0, n_batches(frames, config)):
        total += float(assign(x, centroids)[1].double().sum())
    return total
