"""soft_align against brute-force enumeration of every monotone alignment."""
from __future__ import annotations

import itertools

import pytest
import torch

from cpc.criterion.soft_align import soft_align

SIZES = [(m, k, sb, se) for m in range(1, 6) for k in range(1, 6) for sb in range(3) for se in range(3)
         if m + sb + se >= k]


def alignments(n_rows: int, n_cols: int):
    """Every column sequence a with a(0) = 0, a(R-1) = K-1 and steps 0 or +1."""
    for advances in itertools.combinations(range(1, n_rows), n_cols - 1):
        path, column = [], 0
        for row in range(n_rows):
            column += row in advances
            path.append(column)
        yield path


def brute_force(log_scores: torch.Tensor, skip_beg: int, skip_end: int):
    """(cost, posterior occupancy of the real rows) of one ``(M, K)`` score matrix."""
    n_rows, n_cols = log_scores.shape
    padded = torch.cat([log_scores.new_zeros(skip_beg, n_cols), log_scores,
                        log_scores.new_zeros(skip_end, n_cols)])
    paths = list(alignments(len(padded), n_cols))
    totals = torch.stack([sum(padded[r, a] for r, a in enumerate(path)) for path in paths])
    weights = torch.softmax(totals, dim=0)
    posterior = torch.zeros_like(padded)
    for weight, path in zip(weights, paths):
        for r, a in enumerate(path):
            posterior[r, a] += weight
    return -torch.logsumexp(totals, dim=0), posterior[skip_beg:skip_beg + n_rows]


@pytest.mark.parametrize("n_rows, n_cols, skip_beg, skip_end", SIZES)
def test_cost_gradient_and_alignment_equal_brute_force(n_rows, n_cols, skip_beg, skip_end):
    generator = torch.Generator().manual_seed(n_rows * 100 + n_cols * 10 + skip_beg * 3 + skip_end)
    log_scores = (3 * torch.randn(4, n_rows, n_cols, generator=generator, dtype=torch.float64)
                  - 2).requires_grad_()
    cost, alignment = soft_align(log_scores, skip_beg, skip_end)
    assert cost.shape == (4,) and alignment.shape == (4, n_rows) and alignment.dtype == torch.long
    weights = torch.rand(4, generator=generator, dtype=torch.float64)
    (grad,) = torch.autograd.grad((cost * weights).sum(), log_scores)
    for i in range(4):
        expected_cost, posterior = brute_force(log_scores[i].detach(), skip_beg, skip_end)
        torch.testing.assert_close(cost[i], expected_cost)
        torch.testing.assert_close(grad[i], -weights[i] * posterior)
        assert alignment[i].tolist() == posterior.argmax(dim=-1).tolist()


@pytest.mark.parametrize("n_rows, n_cols, skip_beg, skip_end", [(4, 3, 0, 0), (5, 3, 1, 2), (2, 4, 1, 1)])
def test_gradient_equals_finite_differences(n_rows, n_cols, skip_beg, skip_end):
    log_scores = torch.randn(3, n_rows, n_cols, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: soft_align(x, skip_beg, skip_end)[0], (log_scores,))


def test_single_alignment_and_skip_rows():
    log_scores = torch.tensor([[[-1.0, -5.0], [-7.0, -2.0]]])
    assert soft_align(log_scores)[0].item() == pytest.approx(3.0)  # the only path: (0, 0), (1, 1)
    # M = K = 1 with one zero row on each side: the row and the two zero rows all in column 0
    assert soft_align(torch.tensor([[[-4.0]]]), 1, 1)[0].item() == pytest.approx(4.0)
    # skip rows let a cost go negative: many zero-cost alignments
    assert soft_align(torch.zeros(1, 6, 2), 2, 2)[0].item() < 0


def test_forbidden_cells_get_zero_posterior_and_no_nan():
    log_scores = torch.randn(2, 5, 3, dtype=torch.float64)
    forbidden = torch.zeros(5, 3, dtype=torch.bool)
    forbidden[0:2, 1] = True
    forbidden[4, 0] = True
    masked = log_scores.masked_fill(forbidden, float("-inf")).requires_grad_()
    cost, alignment = soft_align(masked, 1, 0)
    cost.sum().backward()
    assert torch.isfinite(cost).all() and torch.isfinite(masked.grad).all()
    assert (masked.grad[:, forbidden] == 0).all()
    assert not forbidden[torch.arange(5), alignment].any()
    for i in range(2):
        expected_cost, posterior = brute_force(masked[i].detach(), 1, 0)
        torch.testing.assert_close(cost[i], expected_cost)
        torch.testing.assert_close(masked.grad[i], -posterior)


def test_no_allowed_alignment_gives_infinite_cost_and_zero_gradient():
    log_scores = torch.zeros(2, 3, 2)
    log_scores[0, :, 1] = float("-inf")  # the last column can never be reached: anchor 0 impossible
    log_scores.requires_grad_()
    cost, _ = soft_align(log_scores)
    cost.sum().backward()
    assert cost[0].item() == float("inf") and torch.isfinite(cost[1])
    assert (log_scores.grad[0] == 0).all() and torch.isfinite(log_scores.grad).all()


def test_too_few_rows_is_a_clear_error():
    with pytest.raises(ValueError, match=r"K=5 .* M=3 .* 1 \+ 0"):
        soft_align(torch.zeros(2, 3, 5), 1, 0)
    with pytest.raises(ValueError, match="N x M x K"):
        soft_align(torch.zeros(3, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    log_scores = torch.randn(64, 12, 9, requires_grad=True)
    on_gpu = log_scores.detach().cuda().requires_grad_()
    cost, alignment = soft_align(log_scores, 1, 2)
    cost_gpu, alignment_gpu = soft_align(on_gpu, 1, 2)
    cost.sum().backward()
    cost_gpu.sum().backward()
    torch.testing.assert_close(cost_gpu.cpu(), cost)
    torch.testing.assert_close(on_gpu.grad.cpu(), log_scores.grad)
    assert (alignment_gpu.cpu() == alignment).all()
