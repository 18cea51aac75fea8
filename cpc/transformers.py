"""Causal transformer for any sequence length (context network and CPC prediction heads).

Layout follows CPC_audio's transformer: post-norm layers ``y = LN(x + MHA(x)); out = LN(y + FFN(y))``
with bias-free Q/K/V/O projections, a ReLU feed-forward block, dropout 0.1 and a causal mask.

Positions. CPC_audio sized its attention for one fixed sequence length (a registered mask and a
``(d_k, sizeSeq)`` relative-key matrix). Here nothing depends on the length:

* ``abspos=True``: sinusoidal absolute positions (CPC_audio's formula) are computed for the
  actual length and added to the input.
* ``abspos=False`` (default): clipped relative keys (Shaw et al., 2018), the length-free form of
  CPC_audio's relative scheme. Each layer learns one key vector ``r_d`` per distance
  ``d = i - j`` in ``[0, max_distance)``, shared by the heads, and adds ``q_i . r_min(d, max-1)``
  to the attention logit of query ``i`` on key ``j``. Distances past the table reuse its last
  entry, so any length works; CPC_audio's matrix is the special case ``max_distance = sizeSeq``.
  Relative keys were preferred over ALiBi-like fixed biases because they keep CPC_audio's
  learned, content-dependent positional term.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dropout import Dropout


def sinusoidal_positions(length: int, dim: int, dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """``(length, dim)`` table: sin on even features, cos on odd ones, wavelengths up to 1e4."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    pair = torch.div(torch.arange(dim, device=device), 2, rounding_mode="floor")
    angle = position * torch.exp(-math.log(10000.0) * (2.0 * pair / dim))
    table = torch.where(torch.arange(dim, device=device) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(dtype)


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``(length, length)`` mask, True where key ``j`` lies in the future of query ``i``."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


def relative_distances(length: int, max_distance: int,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """``(length, length)`` indices ``clamp(i - j, 0, max_distance - 1)`` into the relative keys."""
    steps = torch.arange(length, device=device)
    return (steps[:, None] - steps[None, :]).clamp(0, max_distance - 1)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where frame ``i`` only sees frames ``j <= i``."""

    def __init__(self, dim: int, n_heads: int, dropout: float, max_rel_distance: int | None):
        super().__init__()
        if dim % n_heads != 0:
            raise ValueError(f"model dim {dim} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.dim_head = dim // n_heads
        self.Wq = nn.Linear(dim, dim, bias=False)
        self.Wk = nn.Linear(dim, dim, bias=False)
        self.Wv = nn.Linear(dim, dim, bias=False)
        self.Wo = nn.Linear(dim, dim, bias=False)
        self.drop = Dropout(dropout)
        if max_rel_distance is None:
            self.rel_keys = None
        else:
            bound = 1.0 / math.sqrt(self.dim_head)
            self.rel_keys = nn.Parameter(torch.empty(max_rel_distance, self.dim_head).uniform_(-bound, bound))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.dim_head).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = (self._split_heads(proj(x)) for proj in (self.Wq, self.Wk, self.Wv))
        logits = torch.matmul(q, k.transpose(-1, -2))
        if self.rel_keys is not None:
            per_distance = torch.matmul(q, self.rel_keys.t())  # (B, H, T, max_distance)
            index = relative_distances(length, self.rel_keys.shape[0], x.device)
            logits = logits + torch.gather(per_distance, 3, index.expand(batch, self.n_heads, -1, -1))
        logits = (logits / math.sqrt(self.dim_head)).masked_fill(causal_mask(length, x.device), float("-inf"))
        attended = torch.matmul(self.drop(torch.softmax(logits, dim=-1)), v)
        return self.Wo(attended.transpose(1, 2).reshape(batch, length, dim))


class FeedForward(nn.Module):
    """Two linear layers with a ReLU (and dropout) in between."""

    def __init__(self, dim: int, dim_ff: int, dropout: float):
        super().__init__()
        self.lin1 = nn.Linear(dim, dim_ff)
        self.lin2 = nn.Linear(dim_ff, dim)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.drop(F.relu(self.lin1(x))))


class TransformerLayer(nn.Module):
    """Post-norm layer: causal attention block then feed-forward block, each residual + LayerNorm."""

    def __init__(self, dim: int, n_heads: int, dim_ff: int, dropout: float, max_rel_distance: int | None):
        super().__init__()
        self.multihead = CausalSelfAttention(dim, n_heads, dropout, max_rel_distance)
        self.ln_multihead = nn.LayerNorm(dim)
        self.ffnetwork = FeedForward(dim, dim_ff, dropout)
        self.ln_ffnetwork = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_multihead(x + self.multihead(x))
        return self.ln_ffnetwork(y + self.ffnetwork(y))


class CausalTransformer(nn.Module):
    """Stack of causal :class:`TransformerLayer` s, ``(B, T, dim) -> (B, T, dim)`` for any ``T``.

    See the module docstring for the position schemes (``abspos`` / clipped relative keys).
    """

    def __init__(self, dim: int, n_layers: int = 1, n_heads: int = 8, dim_ff: int = 2048,
                 dropout: float = 0.1, abspos: bool = False, max_rel_distance: int = 128):
        super().__init__()
        self.abspos = abspos
        self.layers = nn.ModuleList(
            TransformerLayer(dim, n_heads, dim_ff, dropout, None if abspos else max_rel_distance)
            for _ in range(n_layers))

    def forward(self, x: torch.Tensor, return_all_layers: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Last layer's output, or the list of every layer's output when ``return_all_layers``."""
        if self.abspos:
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.dtype, x.device)
        outputs = []
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        return outputs if return_all_layers else x

