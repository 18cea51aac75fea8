"""Soft monotone alignment of K ordered predictions to M frames (the CPC-CTC cost).

For one anchor, ``log_scores[m, k]`` is the log-probability that frame m is explained by
prediction k. The rows are padded with ``skip_beg`` zero rows before and ``skip_end`` after
(a zero row costs nothing, so leading / trailing predictions may be "skipped"), giving
``R = skip_beg + M + skip_end`` rows. An alignment maps row r to column a(r) with a(0) = 0,
a(R - 1) = K - 1 and a(r + 1) - a(r) in {0, 1}: every prediction covers at least one row, in
order. The cost is ``-log sum_a exp(sum_r l'[r, a(r)])``, computed by the forward recursion

    alpha[0, 0] = l'[0, 0],   alpha[r, k] = l'[r, k] + logaddexp(alpha[r-1, k], alpha[r-1, k-1])

and ``cost = -alpha[R-1, K-1]``. Its gradient with respect to ``l'[r, k]`` is minus the
posterior probability that an alignment passes through (r, k); the backward recursion beta
gives that posterior directly, so the gradient costs one more pass and no autograd graph.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

NEG_INF = float("-inf")


def pad_rows(log_scores: torch.Tensor, skip_beg: int, skip_end: int) -> torch.Tensor:
    """``(N, M, K)`` scores -> ``(R, K, N)`` with the zero skip rows added.

    Anchors go last so that every row and every column range of a row is one contiguous
    block: the recursions then run on contiguous ``(K, N)`` slices (no shifted copies).
    """
    n, n_rows, n_cols = log_scores.shape
    padded = log_scores.new_zeros(skip_beg + n_rows + skip_end, n_cols, n)
    padded[skip_beg:skip_beg + n_rows] = log_scores.permute(1, 2, 0)
    return padded


def alignment_forward(padded: torch.Tensor) -> torch.Tensor:
    """alpha ``(R, K, N)`` of padded scores ``(R, K, N)``: log-sum over the partial alignments
    of rows 0..r that end in column k, cell (r, k) included."""
    n_rows, n_cols, n = padded.shape
    alpha = padded.new_full((n_rows, n_cols + 1, n), NEG_INF)  # column 0: before the first
    alpha[0, 1] = padded[0, 0]
    for r in range(1, n_rows):  # stay in column k or advance from k - 1
        torch.add(torch.logaddexp(alpha[r - 1, 1:], alpha[r - 1, :-1]), padded[r],
                  out=alpha[r, 1:])
    return alpha[:, 1:]


def alignment_backward(padded: torch.Tensor) -> torch.Tensor:
    """beta ``(R, K, N)``: log-sum over the completions of rows r+1..R-1 from column k at row
    r (cell (r, k) excluded) that end in column K - 1."""
    n_rows, n_cols, n = padded.shape
    beta = padded.new_full((n_rows, n_cols, n), NEG_INF)
    beta[-1, -1] = 0.0
    step = padded.new_full((n_cols + 1, n), NEG_INF)  # row K: after the last column
    for r in range(n_rows - 2, -1, -1):  # stay in column k or advance to k + 1
        torch.add(beta[r + 1], padded[r + 1], out=step[:n_cols])
        torch.logaddexp(step[:n_cols], step[1:], out=beta[r])
    return beta


def _check_sizes(log_scores: torch.Tensor, skip_beg: int, skip_end: int) -> None:
    if log_scores.dim() != 3:
        raise ValueError(f"log_scores must be N x M x K, got shape {tuple(log_scores.shape)}")
    if skip_beg < 0 or skip_end < 0:
        raise ValueError(f"skips must be non-negative, got skip_beg={skip_beg}, skip_end={skip_end}")
    _, n_rows, n_cols = log_scores.shape
    if n_cols < 1 or n_rows + skip_beg + skip_end < n_cols:
        raise ValueError(f"no monotone alignment of K={n_cols} predictions to M={n_rows} frames "
                         f"+ {skip_beg} + {skip_end} skip rows: need M + skips >= K >= 1")


class _SoftAlign(torch.autograd.Function):
    """Cost and posterior-argmax alignment; backward returns minus the saved posterior."""

    @staticmethod
    def forward(ctx, log_scores: torch.Tensor, skip_beg: int, skip_end: int):
        padded = pad_rows(log_scores.detach(), skip_beg, skip_end)
        alpha = alignment_forward(padded)
        beta = alignment_backward(padded)
        log_total = alpha[-1, -1]  # (N,)
        # -inf total (every alignment forbidden): zero posterior instead of NaN
        safe_total = torch.where(torch.isfinite(log_total), log_total, torch.zeros_like(log_total))
        n_rows = log_scores.shape[1]
        occupancy = alpha[skip_beg:skip_beg + n_rows] + beta[skip_beg:skip_beg + n_rows]
        posterior = torch.exp(occupancy - safe_total).permute(2, 0, 1).contiguous()  # (N, M, K)
        ctx.save_for_backward(posterior)
        alignment = posterior.argmax(dim=-1)
        ctx.mark_non_differentiable(alignment)
        return -log_total, alignment

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_cost: torch.Tensor, grad_alignment: torch.Tensor | None):
        posterior, = ctx.saved_tensors
        return -posterior * grad_cost[:, None, None], None, None


def soft_align(log_scores: torch.Tensor, skip_beg: int = 0,
               skip_end: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over monotone alignments of K predictions to M frames (see the module docstring).

    log_scores ``(N, M, K)`` float; returns ``cost (N,)`` = -log of the summed alignment scores
    (differentiable: its gradient is minus the posterior occupancy of each cell) and
    ``alignment (N, M)`` long, the posterior-argmax column of each real (unpadded) frame.
    ``-inf`` scores forbid cells; an anchor with no allowed alignment gets an infinite cost and
    a zero gradient. ValueError when ``M + skip_beg + skip_end < K``.
    """
    _check_sizes(log_scores, skip_beg, skip_end)
    return _SoftAlign.apply(log_scores, skip_beg, skip_end)
