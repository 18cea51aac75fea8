"""The cheap CPU dropout: its drop rate, scaling, gradient, reproducibility and edge cases."""
import math

import pytest
import torch

from cpc.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_is_p_in_both_words_of_each_draw(p):
    torch.manual_seed(0)
    n = 1_000_001  # odd: the last draw's second word is unused
    keep = keep_mask((n,), p)
    sigma = math.sqrt(p * (1 - p) / (n / 2))
    for half in (keep[0::2], keep[1::2]):  # low and high int32 words, thresholded separately
        assert abs((1 - half.float().mean().item()) - p) < 5 * sigma


def test_kept_elements_are_scaled_and_the_gradient_is_the_mask():
    torch.manual_seed(0)
    x = torch.randn(64, 33, requires_grad=True)
    out = dropout(x, 0.25)
    kept = out != 0
    assert torch.allclose(out[kept], x[kept] / 0.75)
    out.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.75)


def test_masks_follow_torch_manual_seed():
    torch.manual_seed(3)
    first = keep_mask((5, 7), 0.3)
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask((5, 7), 0.3))


def test_identity_in_eval_or_at_zero_and_zeros_at_one():
    x = torch.randn(4, 5)
    layer = Dropout(0.5).eval()
    assert layer(x) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_probability_outside_zero_one_is_refused(p):
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(p)
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(torch.ones(3), p)
