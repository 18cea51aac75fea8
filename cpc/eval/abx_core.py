"""Math of the ABX phone-discriminability test, with Libri-light's (ZeroSpeech 2021's) semantics.

No file I/O here: items arrive as integer ids and frame ranges into one tensor of frames.

* **Frames of an item** (:func:`item_frame_range`): frame ``i`` covers ``[i, i + 1) * step``
  seconds; an item ``[onset, offset]`` keeps frames ``ceil(onset / step - 0.5) <= i <
  floor(offset / step - 0.5)``, clipped to the file: the frames whose centre is at or after
  the onset and whose *next* frame's centre is at or before the offset (Libri-light's rule; it
  drops the last frame whose centre lies in the interval). Items keeping no frame are skipped.
* **Frame distance** (:func:`frame_distances`): frames are L2-normalised; ``angular`` is
  ``arccos(cos) / pi`` (what Libri-light and CPC_audio call "cosine"), ``cosine`` is
  ``1 - cos``. A null frame is at distance 0 from a null frame and at the maximal distance
  (1, resp. 2) from any other frame, as Libri-light's "singularity" normalisation arranges.
* **Sequence distance** (:func:`dtw`): DTW with steps (1, 0), (0, 1), (1, 1) summing frame
  distances, divided by the number of cells of the optimal path; the path is the one
  Libri-light's backtracking picks (on ties: diagonal, then ``(i, j-1)``, then ``(i-1, j)``).
* **Cells** (:func:`within_cells`, :func:`across_cells`): items are grouped by (context,
  speaker, phone). *Within*: for each context and speaker, each phone group A of at least two
  items and each other phone group B; X runs over A (X != A). *Across*: A and B as within (A
  may be a single item), X from the group of A's context and phone spoken by another speaker,
  at most ``max_x`` such speakers drawn per A group. Groups larger than ``max_size_group``
  are subsampled, independently for each cell. Cells are padded to the largest group drawn,
  and scored in chunks of similar width (:func:`cell_chunks`), each padded to its own largest
  group: the cost follows the real group sizes, not ``max_size_group``.
* **Score of a cell**: the fraction of its (X, A, B) triplets where ``d(X, A) < d(X, B)``,
  ties counting one half; its error is 1 minus that.
* **Averaging** (:func:`average_cells`): within, cell errors are
  averaged over contexts, then over speakers, then over (phone A, phone B) pairs; across,
  over (context, X speaker) jointly, then over A speakers, then over phone pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from cpc.eval.options import DISTANCES, MODES  # the flags' choices, defined once (torch-free)


# --------------------------------------------------------------------------------------------
# Frames and distances
# --------------------------------------------------------------------------------------------

def item_frame_range(onset: float, offset: float, n_frames: int, step: float = 0.01
                     ) -> tuple[int, int]:
    """``(start, end)`` frame slice of an item (Libri-light's rule, see the module docstring)."""
    rate = 1 / step
    start = max(0, int(math.ceil(rate * onset - 0.5)))
    end = min(n_frames, int(math.floor(rate * offset - 0.5)))
    return start, max(start, end)


def normalise_frames(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unit-norm frames, null mask)`` of ``(..., D)`` frames; null frames stay zero."""
    squared = (frames * frames).sum(dim=-1, keepdim=True)
    null = squared[..., 0] == 0
    unit = frames / torch.sqrt(torch.where(squared == 0, torch.ones_like(squared), squared))
    return unit, null


def frame_distances(x: torch.Tensor, y: torch.Tensor, x_null: torch.Tensor, y_null: torch.Tensor,
                    distance: str = "angular") -> torch.Tensor:
    """Distances ``(B, Lx, Ly)`` between unit frames ``x (B, Lx, D)`` and ``y (B, Ly, D)``."""
    cos = torch.bmm(x, y.transpose(1, 2)).clamp_(-1, 1)
    if distance == "angular":
        dist, worst = torch.acos(cos) / math.pi, 1.0
    elif distance == "cosine":
        dist, worst = 1 - cos, 2.0
    else:
        raise ValueError(f"unknown distance {distance!r}; choose from {DISTANCES}")
    x_null, y_null = x_null[:, :, None], y_null[:, None, :]
    dist = torch.where(x_null | y_null, torch.full_like(dist, worst), dist)
    return torch.where(x_null & y_null, torch.zeros_like(dist), dist)


def dtw(dist: torch.Tensor, len_x: torch.Tensor, len_y: torch.Tensor) -> torch.Tensor:
    """Path-length-normalised DTW of a batch of padded distance matrices ``(B, Lx, Ly)``.

    Pair ``b`` uses ``dist[b, :len_x[b], :len_y[b]]``; padding never influences it. The
    dynamic programme runs over anti-diagonals, all pairs at once: ``Lx + Ly - 1`` steps of
    vectorised work. Costs are accumulated in float32 like Libri-light's Cython code.
    """
    batch, n_x, n_y = dist.shape
    device = dist.device
    # Cell (i, j) sits at padded coordinates (i' = i + 1, j' = j + 1), on anti-diagonal
    # k = i' + j', in column i' + 1 of that diagonal's row: column 0 and the cells with i' = 0
    # or j' = 0 are an infinite border, except the origin (k = 0, i' = 0) whose cost is 0.
    diagonals = torch.arange(n_x + n_y + 1, device=device)[:, None]
    rows = torch.arange(n_x + 1, device=device)[None, :]
    cols = diagonals - rows
    inside = (rows >= 1) & (cols >= 1) & (cols <= n_y)
    index = ((rows - 1) * n_y + cols - 1).clamp(0, n_x * n_y - 1)
    inf = torch.tensor(float("inf"), device=device)
    # (diagonal, pair, column) so that each step reads and writes contiguous rows.
    cost = torch.where(inside, dist.float().reshape(batch, -1)[:, index], inf).transpose(0, 1)
    cost = torch.cat([inf.expand(cost.shape[0], batch, 1), cost], dim=2)
    cost[0, :, 1] = 0.0
    length = torch.zeros_like(cost)
    for k in range(2, n_x + n_y + 1):
        up, left = cost[k - 1, :, :-1], cost[k - 1, :, 1:]
        diag = cost[k - 2, :, :-1]
        up_or_left = torch.minimum(left, up)
        # Libri-light's backtracking order on ties: diagonal, then left (i, j-1), then up.
        step_length = torch.where(diag <= up_or_left, length[k - 2, :, :-1],
                                  torch.where(left <= up, length[k - 1, :, 1:], length[k - 1, :, :-1]))
        cost[k, :, 1:] += torch.minimum(diag, up_or_left)
        length[k, :, 1:] = step_length + 1
    ends = (len_x + len_y).to(device).long()
    column = len_x.to(device).long() + 1
    pairs = torch.arange(batch, device=device)
    return cost[ends, pairs, column] / length[ends, pairs, column]


# --------------------------------------------------------------------------------------------
# Items, groups and cells
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Items:
    """ABX items as integer ids (any labelling) and their frames in a concatenated tensor."""

    context: np.ndarray
    phone: np.ndarray
    speaker: np.ndarray
    start: np.ndarray  # first frame of each item in the frame tensor
    length: np.ndarray  # frames per item, >= 1

    def __len__(self) -> int:
        return len(self.phone)


@dataclass(frozen=True)
class Cells:
    """Triplet cells: item indices of X, A and B per cell, left-aligned, -1 padded to the
    largest group of each role.

    ``coords`` holds (context, speaker, phone A, phone B) within, (context, speaker A,
    phone A, phone B, speaker X) across. ``symmetric``: X is A (within), pairs X == A excluded.
    """

    x: np.ndarray
    a: np.ndarray
    b: np.ndarray
    coords: np.ndarray
    symmetric: bool

    def __len__(self) -> int:
        return len(self.coords)

    def widths(self) -> np.ndarray:
        """Per cell: the largest of its X, A and B groups (as drawn)."""
        return np.maximum.reduce([_sizes(self.x), _sizes(self.a), _sizes(self.b)])

    def subset(self, rows: np.ndarray | slice) -> "Cells":
        """The cells ``rows``, padded to their own largest groups."""
        return Cells(_trim(self.x[rows]), _trim(self.a[rows]), _trim(self.b[rows]),
                     self.coords[rows], self.symmetric)


def _sizes(members: np.ndarray) -> np.ndarray:
    """Items per row of -1 padded members."""
    return (members >= 0).sum(axis=1)


def _trim(members: np.ndarray) -> np.ndarray:
    """Left-aligned members without the padding columns that no row uses."""
    return members[:, :int(_sizes(members).max(initial=0))]


@dataclass(frozen=True)
class _Groups:
    """Items sorted by (context, speaker, phone); one group per distinct triple."""

    order: np.ndarray  # sorted position -> item index
    start: np.ndarray  # per group: first sorted position
    size: np.ndarray
    context: np.ndarray
    speaker: np.ndarray
    phone: np.ndarray


def _groups(items: Items) -> _Groups:
    order = np.lexsort((items.phone, items.speaker, items.context))
    keys = np.stack([items.context[order], items.speaker[order], items.phone[order]], axis=1)
    new = np.ones(len(order), dtype=bool)
    new[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    start = np.flatnonzero(new)
    size = np.diff(np.append(start, len(order)))
    first = keys[start]
    return _Groups(order, start, size, first[:, 0], first[:, 1], first[:, 2])


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts ``n_i``: (parent ``i`` repeated ``n_i`` times, position ``0..n_i-1``)."""
    parent = np.repeat(np.arange(len(counts)), counts)
    position = np.arange(len(parent)) - np.repeat(np.cumsum(counts) - counts, counts)
    return parent, position


def _ordered_pairs(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ``(i, j)``, ``i != j``, with ``block[i] == block[j]``; ``block`` must be sorted."""
    first = np.searchsorted(block, block, side="left")
    count = np.searchsorted(block, block, side="right") - first
    i, position = _expand(count)
    j = first[i] + position
    keep = i != j
    return i[keep], j[keep]


def _block_ids(*keys: np.ndarray) -> np.ndarray:
    """Consecutive equal key tuples -> same id (keys already sorted)."""
    stacked = np.stack(keys, axis=1)
    new = np.ones(len(stacked), dtype=np.int64)
    new[0] = 0
    new[1:] = (stacked[1:] != stacked[:-1]).any(axis=1)
    return np.cumsum(new)


def _members(groups: _Groups, group_ids: np.ndarray, max_size: int, rng: np.random.Generator
             ) -> np.ndarray:
    """``(C, W)`` item indices of each cell's sample of a group, -1 padded to the largest
    sample ``W <= max_size``."""
    size = groups.size[group_ids]
    width = int(min(max_size, size.max(initial=0)))
    positions = groups.start[group_ids][:, None] + np.arange(width)[None, :]
    valid = np.arange(width)[None, :] < size[:, None]
    for row in np.flatnonzero(size > max_size):
        positions[row] = groups.start[group_ids[row]] + rng.choice(size[row], max_size, replace=False)
    return np.where(valid, groups.order[np.minimum(positions, len(groups.order) - 1)], -1)


def _phone_pairs(groups: _Groups) -> tuple[np.ndarray, np.ndarray]:
    """Ordered pairs (group A, group B) of different phones, same context and speaker."""
    return _ordered_pairs(_block_ids(groups.context, groups.speaker))


def within_cells(items: Items, max_size_group: int, rng: np.random.Generator) -> Cells:
    """Within-speaker cells (context, speaker, phone A, phone B); see the module docstring."""
    groups = _groups(items)
    group_a, group_b = _phone_pairs(groups)
    keep = groups.size[group_a] >= 2
    group_a, group_b = group_a[keep], group_b[keep]
    a = _members(groups, group_a, max_size_group, rng)
    b = _members(groups, group_b, max_size_group, rng)
    coords = np.stack([groups.context[group_a], groups.speaker[group_a], groups.phone[group_a],
                       groups.phone[group_b]], axis=1)
    return Cells(a, a, b, coords, symmetric=True)


def across_cells(items: Items, max_size_group: int, max_x: int, rng: np.random.Generator) -> Cells:
    """Across-speaker cells (context, speaker A, phone A, phone B, speaker X)."""
    groups = _groups(items)
    ab_a, ab_b = _phone_pairs(groups)
    # X candidates: groups of the same (context, phone), other speaker; at most max_x per A.
    by_cp = np.lexsort((groups.speaker, groups.phone, groups.context))
    pos_a, pos_x = _ordered_pairs(_block_ids(groups.context[by_cp], groups.phone[by_cp]))
    ax_a, ax_x = by_cp[pos_a], by_cp[pos_x]
    shuffle = np.lexsort((rng.random(len(ax_a)), ax_a))
    ax_a, ax_x = ax_a[shuffle], ax_x[shuffle]
    first = np.searchsorted(ax_a, ax_a, side="left")
    keep = np.arange(len(ax_a)) - first < max_x
    ax_a, ax_x = ax_a[keep], ax_x[keep]
    # Join (A, B) with (A, X) on A.
    x_first = np.searchsorted(ax_a, ab_a, side="left")
    x_count = np.searchsorted(ax_a, ab_a, side="right") - x_first
    parent, position = _expand(x_count)
    group_a, group_b = ab_a[parent], ab_b[parent]
    group_x = ax_x[x_first[parent] + position]
    coords = np.stack([groups.context[group_a], groups.speaker[group_a], groups.phone[group_a],
                       groups.phone[group_b], groups.speaker[group_x]], axis=1)
    return Cells(_members(groups, group_x, max_size_group, rng),
                 _members(groups, group_a, max_size_group, rng),
                 _members(groups, group_b, max_size_group, rng), coords, symmetric=False)


# --------------------------------------------------------------------------------------------
# Distances of item pairs and scores of cells
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameData:
    """Unit-norm frames of all items (on the compute device) and their null mask."""

    unit: torch.Tensor  # (N_frames, D)
    null: torch.Tensor  # (N_frames,)

    @classmethod
    def from_frames(cls, frames: torch.Tensor) -> "FrameData":
        unit, null = normalise_frames(frames.float())
        return cls(unit, null)


def pair_distances(frames: FrameData, items: Items, u: np.ndarray, v: np.ndarray,
                   distance: str = "angular", bucket: int = 8,
                   max_elements: int = 1 << 23) -> np.ndarray:
    """DTW distance of items ``u[k]`` (rows) and ``v[k]`` (columns), for every k.

    Pairs are bucketed by length (``bucket`` frames) so that padding stays small, and batched
    so that the gathered frames hold at most ``max_elements`` values.
    """
    out = np.empty(len(u), dtype=np.float32)
    if len(u) == 0:
        return out
    device = frames.unit.device
    len_u, len_v = items.length[u], items.length[v]
    order = np.lexsort((len_v, len_u // bucket, len_v // bucket))
    key_u, key_v = (len_u // bucket)[order], (len_v // bucket)[order]
    bounds = np.flatnonzero(np.diff(key_u) | np.diff(key_v)) + 1
    dim = frames.unit.shape[1]
    for chunk in np.split(order, bounds):
        n_x, n_y = int(len_u[chunk].max()), int(len_v[chunk].max())
        per_pair = (n_x + n_y) * dim + n_x * n_y + 2 * (n_x + n_y + 1) * (n_x + 2)
        per_batch = max(1, max_elements // per_pair)
        for part in np.split(chunk, np.arange(per_batch, len(chunk), per_batch)):
            x, x_null = _gather(frames, items, u[part], n_x, device)
            y, y_null = _gather(frames, items, v[part], n_y, device)
            dist = frame_distances(x, y, x_null, y_null, distance)
            lengths_u = torch.from_numpy(len_u[part])
            lengths_v = torch.from_numpy(len_v[part])
            out[part] = dtw(dist, lengths_u, lengths_v).cpu().numpy()
    return out


def _gather(frames: FrameData, items: Items, which: np.ndarray, n_max: int, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ``(B, n_max, D)`` frames of items (padding repeats the last frame)."""
    offsets = np.minimum(np.arange(n_max)[None, :], items.length[which][:, None] - 1)
    index = torch.from_numpy(items.start[which][:, None] + offsets).to(device)
    return frames.unit[index], frames.null[index]


@dataclass(frozen=True)
class CellScores:
    """Error of each cell and its number of (X, A, B) triplets."""

    error: np.ndarray
    n_triplets: np.ndarray


def score_cells(frames: FrameData, items: Items, cells: Cells, distance: str = "angular",
                max_pairs: int = 1 << 22) -> CellScores:
    """Error rate of every cell: pairs are deduplicated per chunk of cells, DTW'd, compared.

    Chunks come from :func:`cell_chunks`: at most ``max_pairs`` (X, A) and as many (X, B)
    slots each, padding included.
    """
    error = np.zeros(len(cells))
    n_triplets = np.zeros(len(cells), dtype=np.int64)
    for rows in cell_chunks(cells.widths(), max_pairs):
        error[rows], n_triplets[rows] = _score_chunk(frames, items, cells.subset(rows), distance)
    return CellScores(error, n_triplets)


def cell_chunks(width: np.ndarray, max_slots: int) -> Iterator[np.ndarray]:
    """Row indices of chunks of cells, taken by ascending ``width`` (>= 1; stable), each as
    long as ``n_cells * largest width ** 2 <= max_slots`` allows, and one cell at least."""
    order = np.argsort(width, kind="stable")
    slots = width[order].astype(np.int64) ** 2
    start = 0
    while start < len(order):
        # The chunk cannot outgrow the cells its first (narrowest) width would allow.
        window = slots[start:start + max(1, max_slots // int(slots[start]))]
        fits = np.arange(1, len(window) + 1) * window <= max_slots  # True, then False
        end = start + max(1, int(fits.sum()))
        yield order[start:end]
        start = end


def _score_chunk(frames: FrameData, items: Items, cells: Cells, distance: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    n_items = np.int64(len(items))
    x, a, b = cells.x[:, :, None], cells.a[:, None, :], cells.b[:, None, :]
    valid_xa = (x >= 0) & (a >= 0)
    if cells.symmetric:  # X and A are the same sample: skip X == A, compute each pair once
        size = cells.x.shape[1]
        valid_xa &= ~np.eye(size, dtype=bool)[None]
        key_xa = np.minimum(x, a) * n_items + np.maximum(x, a)
    else:
        key_xa = x * n_items + a
    valid_xb = (x >= 0) & (b >= 0)
    key_xb = x * n_items + b
    keys = np.concatenate([key_xa[valid_xa], key_xb[valid_xb]])
    unique, inverse = np.unique(keys, return_inverse=True)
    dist = pair_distances(frames, items, unique // n_items, unique % n_items, distance)
    # For each (cell, X), the distances to B sorted, padding as +inf (after every real one):
    # the B beyond and level with each d(X, A) are counted by two binary searches.
    d_xa = np.zeros(key_xa.shape, dtype=np.float32)
    d_xb = np.full(key_xb.shape, np.inf, dtype=np.float32)
    n_xa = int(valid_xa.sum())
    d_xa[valid_xa] = dist[inverse[:n_xa]]
    d_xb[valid_xb] = dist[inverse[n_xa:]]
    sorted_xb = torch.from_numpy(d_xb).sort(dim=2).values
    query = torch.from_numpy(d_xa)
    below = torch.searchsorted(sorted_xb, query).numpy()
    below_or_level = torch.searchsorted(sorted_xb, query, right=True).numpy()
    n_b = (cells.b >= 0).sum(axis=1)
    wins_xa = n_b[:, None, None] - below_or_level + 0.5 * (below_or_level - below)
    wins = (wins_xa * valid_xa).sum(axis=(1, 2))
    n_triplets = valid_xa.sum(axis=(1, 2)) * n_b
    return 1 - wins / n_triplets, n_triplets


# --------------------------------------------------------------------------------------------
# Averaging
# --------------------------------------------------------------------------------------------

def _group_mean(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``keys`` and the mean of ``values`` over each."""
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return unique, np.bincount(inverse, weights=values) / np.bincount(inverse)


def average_cells(coords: np.ndarray, errors: np.ndarray) -> float:
    """Libri-light's average of cell errors; columns 1-3 of ``coords`` are (speaker A, phone A,
    phone B), the others (context, and speaker X across) are averaged over first.

    Within: mean over contexts, then over speakers, then over phone pairs. Across: mean over
    (context, speaker X) jointly, then over speakers A, then over phone pairs. NaN when there
    is no cell.
    """
    if len(errors) == 0:
        return float("nan")
    per_speaker, error = _group_mean(coords[:, 1:4], errors)
    _, error = _group_mean(per_speaker[:, 1:3], error)
    return float(error.mean())


# --------------------------------------------------------------------------------------------
# Whole test
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ABXResult:
    """Error rate of one mode (a fraction; NaN when the items form no triplet)."""

    mode: str
    error: float
    n_cells: int
    n_triplets: int


def abx(frames: torch.Tensor, items: Items, mode: str, *, distance: str = "angular",
        max_size_group: int = 10, max_x_across: int = 5, seed: int = 0) -> ABXResult:
    """ABX error of ``items`` whose frames are rows of ``frames`` (computed on its device)."""
    if mode not in MODES:
        raise ValueError(f"unknown ABX mode {mode!r}; choose from {MODES}")
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose from {DISTANCES}")
    rng = np.random.default_rng(seed)
    if mode == "within":
        cells = within_cells(items, max_size_group, rng)
    else:
        cells = across_cells(items, max_size_group, max_x_across, rng)
    with torch.no_grad():
        scores = score_cells(FrameData.from_frames(frames), items, cells, distance)
    return ABXResult(mode, average_cells(cells.coords, scores.error), len(cells),
                     int(scores.n_triplets.sum()))
