"""CPC's InfoNCE criterion (CPC_audio semantics) and its per-step prediction heads.

For contexts ``c (B, T, Dc)`` and encoded frames ``z (B, T, De)`` with ``K`` prediction steps:

* anchors are the first ``W = T - K`` contexts; head ``k`` (k = 1..K) maps ``c_t`` to a
  prediction of ``z_{t+k}`` (the positive);
* each anchor ``(b, t)`` gets ``N`` negatives, shared by all K steps, drawn uniformly among the
  batch's encoded frames: batch item uniform over the batch (or over the anchor's group of
  ``limitNegsInBatch`` consecutive items), time index ``(t + r) mod T`` with ``r`` uniform in
  ``[1, T - 1]`` -- CPC_audio's scheme, which never draws the anchor's own time index;
* score = dot(prediction, candidate) / De; cross-entropy with the positive at index 0;
  accuracy = the positive scores highest, ties with a negative drawn at the positive's own
  frame counting as successes (see :func:`info_nce_step_stats`);
* loss = sum over steps of the step's mean loss over the ``B * W`` anchors.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registries import HEADS
from ..dropout import Dropout
from ..precision import float32_island
from ..transformers import CausalTransformer
from ..utils.constants import FRAME_SIZE
from .base import CriterionOutput
from .options import CPCOptions


# --------------------------------------------------------------------------- InfoNCE math

def sample_negative_indices(batch_size: int, seq_len: int, window: int, n_negatives: int,
                            group_size: int = 0, generator: torch.Generator | None = None,
                            device: torch.device | str | None = None,
                            min_shift: int = 1) -> torch.Tensor:
    """Draw CPC negatives: ``(B, W, N)`` flat indices ``b' * T + t'`` into the ``B * T`` frames.

    Anchor ``(b, t)`` draws ``b'`` uniformly in the batch, or in its group
    ``[g, min(g + group_size, B))`` with ``g = group_size * (b // group_size)`` when
    ``group_size > 0`` (the last group is smaller if ``B`` is not a multiple), and
    ``t' = (t + r) mod T`` with ``r`` uniform in ``[min_shift, T - 1]``: ``min_shift = 1``
    avoids the anchor's own time index, ``M + 1`` also its next M frames (CPC-CTC).
    """
    if seq_len <= min_shift:
        raise ValueError(f"negative sampling with min_shift {min_shift} needs more than "
                         f"{min_shift} frames per sequence, got {seq_len}")
    shape = (batch_size, window, n_negatives)
    items = torch.arange(batch_size, device=device)
    if group_size > 0:
        start = items - items % group_size
        size = torch.clamp(batch_size - start, max=group_size)
    else:
        start, size = torch.zeros_like(items), torch.full_like(items, batch_size)
    draws = torch.randint(0, 2**62, shape, generator=generator, device=device)  # modulo bias < 1e-16
    batch_idx = start[:, None, None] + draws % size[:, None, None]
    shift = torch.randint(min_shift, seq_len, shape, generator=generator, device=device)
    time_idx = (torch.arange(window, device=device)[None, :, None] + shift) % seq_len
    return batch_idx * seq_len + time_idx


def info_nce_logits(predictions: torch.Tensor, encoded: torch.Tensor,
                    negative_indices: torch.Tensor, group_size: int = 0,
                    strategy: str = "auto") -> torch.Tensor:
    """Scores of the positive (index 0) and the negatives for every anchor and step.

    predictions ``(B, W, K, D)`` (step k+1 in slot k), encoded ``(B, T, D)`` with ``T = W + K``,
    negative_indices ``(B, W, N)`` -> logits ``(B, W, K, 1 + N)`` = dot products / D. All steps
    are scored against the shared negatives at once (see :func:`candidate_scores`).
    """
    batch, window, n_steps, dim = predictions.shape
    seq_len = encoded.shape[1]
    if seq_len != window + n_steps:
        raise ValueError(f"{seq_len} encoded frames for a window of {window} and {n_steps} steps")
    positives = encoded[:, 1:].unfold(1, n_steps, 1).transpose(2, 3)  # (B, W, K, D): z[t + k]
    positive_scores = (predictions * positives).sum(dim=-1, keepdim=True)
    negative_scores = candidate_scores(predictions, encoded, negative_indices, group_size, strategy)
    return torch.cat([positive_scores, negative_scores], dim=-1) / dim


def candidate_scores(predictions: torch.Tensor, encoded: torch.Tensor,
                     candidate_indices: torch.Tensor, group_size: int = 0,
                     strategy: str = "auto") -> torch.Tensor:
    """Dot products ``(B, W, K, C)`` of all K predictions of each anchor with its C candidates.

    predictions ``(B, W, K, D)``, encoded ``(B, T, D)``, candidate_indices ``(B, W, C)`` flat
    indices ``b' * T + t'`` into the ``B * T`` frames, each in the anchor's ``group_size``
    group when ``group_size > 0``. Two equal ways:

    * ``"dense"``: one matmul of every prediction against every frame its candidates may come
      from (the batch, or the anchor's group), then a gather of the C scores;
    * ``"gather"``: gather the ``(B, W, C, D)`` candidates, then one batched matmul.

    ``"auto"`` takes dense when its score tensor (K x G x T per anchor) is no larger than the
    gathered candidates (C x D per anchor): measured on 2 CPU cores at B=8, T=128, K=12,
    C=128, D=256 it is 2.5x faster, because the gather and its scatter-add backward dominate.
    """
    batch, _, n_steps, dim = predictions.shape
    group = group_size if 0 < group_size < batch and batch % group_size == 0 else batch
    if strategy == "auto":
        strategy = "dense" if n_steps * group * encoded.shape[1] <= candidate_indices.shape[-1] * dim \
            else "gather"
    if strategy == "dense":
        return _dense_candidate_scores(predictions, encoded, candidate_indices, group)
    if strategy == "gather":
        candidates = F.embedding(candidate_indices, encoded.reshape(-1, dim))  # (B, W, C, D)
        return torch.matmul(predictions, candidates.transpose(-1, -2))
    raise ValueError(f"unknown scoring strategy {strategy!r}")


def _dense_candidate_scores(predictions: torch.Tensor, encoded: torch.Tensor,
                            candidate_indices: torch.Tensor, group: int) -> torch.Tensor:
    """(B, W, K, C) scores: predictions of each group of ``group`` items against all its frames."""
    batch, window, n_steps, dim = predictions.shape
    seq_len = encoded.shape[1]
    n_groups = batch // group
    scores = torch.bmm(predictions.reshape(n_groups, group * window * n_steps, dim),
                       encoded.reshape(n_groups, group * seq_len, dim).transpose(1, 2))
    scores = scores.view(batch, window, n_steps, group * seq_len)
    group_start = (torch.arange(batch, device=encoded.device) // group * group * seq_len)
    local = (candidate_indices - group_start[:, None, None])[:, :, None, :]
    return torch.gather(scores, 3, local.expand(-1, -1, n_steps, -1))


def info_nce_step_stats(logits: torch.Tensor, negative_indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step mean cross-entropy (positive at index 0) and accuracy from ``(B, W, K, 1 + N)`` logits.

    Accuracy counts the anchors whose positive scores at least as high as every negative. A
    negative drawn at the positive's own frame (same item, time ``t + k``; about
    ``N / (B * T)`` of the anchors) ties with it exactly; it is left out of the comparison, so
    that tie counts as a success on every device (CPC_audio's first-index argmax on CPU)
    instead of being decided by rounding. Such negatives stay in the loss, as in CPC_audio.
    """
    losses = -torch.log_softmax(logits, dim=-1)[..., 0].mean(dim=(0, 1))
    batch, window, n_steps, _ = logits.shape
    seq_len = window + n_steps
    device = logits.device
    own_frame = (torch.arange(batch, device=device)[:, None, None] * seq_len
                 + torch.arange(window, device=device)[None, :, None]
                 + torch.arange(1, n_steps + 1, device=device)[None, None, :])  # (B, W, K)
    is_positive_frame = negative_indices[:, :, None, :] == own_frame[..., None]  # (B, W, K, N)
    scores = logits.detach()
    best_negative = scores[..., 1:].masked_fill(is_positive_frame, float("-inf")).amax(dim=-1)
    accuracies = (scores[..., 0] >= best_negative).float().mean(dim=(0, 1))
    return losses, accuracies


# --------------------------------------------------------------------------- prediction heads

class PredictionHead(nn.Module):
    """Predictor for one step: ``(B, W, Dc) -> (B, W, De)``.

    ``forward_all`` evaluates a list of same-type heads and stacks them into ``(B, W, K, De)``;
    the default loops (recurrent and transformer heads: for 12 transformer heads on 2 CPU cores,
    ``vmap`` over stacked weights was 1.4x slower than this loop and a hand-batched form no
    faster); the other heads override it with one fused computation.
    """

    @staticmethod
    def forward_all(heads: Sequence[PredictionHead], c: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(c) for head in heads], dim=2)


class LinearHead(PredictionHead):
    """Bias-free linear map; CPC_audio's init when De > Dc (first Dc output rows N(0,1), the rest 0.01 N(0,1))."""

    RESIDUAL_STD = 0.01

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out, bias=False)
        if dim_out > dim_in:
            with torch.no_grad():
                self.linear.weight.copy_(torch.cat([torch.randn(dim_in, dim_in),
                                                    self.RESIDUAL_STD * torch.randn(dim_out - dim_in, dim_in)]))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.linear(c)

    @staticmethod
    def forward_all(heads: Sequence[LinearHead], c: torch.Tensor) -> torch.Tensor:
        weight = torch.cat([head.linear.weight for head in heads])  # one Linear to K * De
        return F.linear(c, weight).unflatten(-1, (len(heads), -1))


class FeedForwardHead(PredictionHead):
    """Two-layer feed-forward predictor ``Dc -> De -> De`` with a ReLU (CPC_audio's ``ffd``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.lin1 = nn.Linear(dim_in, dim_out)
        self.lin2 = nn.Linear(dim_out, dim_out)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(c)))

    @staticmethod
    def forward_all(heads: Sequence[FeedForwardHead], c: torch.Tensor) -> torch.Tensor:
        hidden = F.linear(c, torch.cat([h.lin1.weight for h in heads]), torch.cat([h.lin1.bias for h in heads]))
        hidden = F.relu(hidden.unflatten(-1, (len(heads), -1)))  # (B, W, K, De)
        weight2 = torch.stack([h.lin2.weight for h in heads])  # (K, De, De)
        bias2 = torch.stack([h.lin2.bias for h in heads])  # (K, De)
        return torch.einsum("bwkh,kdh->bwkd", hidden, weight2) + bias2


class ShiftedConvHead(PredictionHead):
    """Causal convolution of width ``kernel``: the prediction at ``t`` sees contexts ``t-kernel+1..t``."""

    def __init__(self, dim_in: int, dim_out: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(dim_in, dim_out, kernel)

    @staticmethod
    def _causal_conv(c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, kernel: int) -> torch.Tensor:
        x = F.pad(c.transpose(1, 2), (kernel - 1, 0))
        return F.conv1d(x, weight, bias).transpose(1, 2)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self._causal_conv(c, self.conv.weight, self.conv.bias, self.kernel)

    @staticmethod
    def forward_all(heads: Sequence[ShiftedConvHead], c: torch.Tensor) -> torch.Tensor:
        weight = torch.cat([h.conv.weight for h in heads])  # one conv with K * De channels
        bias = torch.cat([h.conv.bias for h in heads])
        return ShiftedConvHead._causal_conv(c, weight, bias, heads[0].kernel).unflatten(-1, (len(heads), -1))


class RecurrentHead(PredictionHead):
    """One-layer LSTM / RNN predictor (batch-first; CPC_audio's RNN head forgot batch_first)."""

    def __init__(self, dim_in: int, dim_out: int, rnn_type: type[nn.RNNBase]):
        super().__init__()
        self.rnn = rnn_type(dim_in, dim_out, batch_first=True)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.rnn(c)[0]


class TransformerHead(PredictionHead):
    """One causal transformer layer of width De (8 heads, relative positions), as CPC_audio's
    ``transformer`` head; a bias-free input projection is added only when Dc != De."""

    def __init__(self, dim_in: int, dim_out: int, max_rel_distance: int):
        super().__init__()
        self.project = nn.Linear(dim_in, dim_out, bias=False) if dim_in != dim_out else None
        self.transformer = CausalTransformer(dim_out, n_layers=1, max_rel_distance=max_rel_distance)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.transformer(c if self.project is None else self.project(c))


# The head factories that HEADS (cpc/registries.py) refers to, by --rnnMode; TransformerHead is one.

def linear_head(din: int, dout: int, max_rel: int) -> PredictionHead:
    return LinearHead(din, dout)


def feed_forward_head(din: int, dout: int, max_rel: int) -> PredictionHead:
    return FeedForwardHead(din, dout)


def conv4_head(din: int, dout: int, max_rel: int) -> PredictionHead:
    return ShiftedConvHead(din, dout, 4)


def conv8_head(din: int, dout: int, max_rel: int) -> PredictionHead:
    return ShiftedConvHead(din, dout, 8)


def conv12_head(din: int, dout: int, max_rel: int) -> PredictionHead:
    return ShiftedConvHead(din, dout, 12)


def lstm_head(din: int, dout: int, max_rel: int) -> PredictionHead:
    return RecurrentHead(din, dout, nn.LSTM)


def rnn_head(din: int, dout: int, max_rel: int) -> PredictionHead:
    return RecurrentHead(din, dout, nn.RNN)


class PredictionHeads(nn.Module):
    """K independent heads (``predictors[k]`` predicts step k+1): ``(B, W, Dc) -> (B, W, K, De)``.

    With ``dropout``, Dropout(0.5) is applied to the predictions, where CPC_audio applies it
    (on each head's output).
    """

    def __init__(self, n_predicts: int, dim_context: int, dim_encoded: int, mode: str = "transformer",
                 dropout: bool = False, max_rel_distance: int = 128):
        super().__init__()
        head = HEADS.get(mode)
        self.predictors = nn.ModuleList(head(dim_context, dim_encoded, max_rel_distance)
                                        for _ in range(n_predicts))
        self.dropout = Dropout(p=0.5) if dropout else None

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        predictions = type(self.predictors[0]).forward_all(list(self.predictors), c)
        return predictions if self.dropout is None else self.dropout(predictions)


# --------------------------------------------------------------------------- criterion

class CPCCriterion(nn.Module):
    """InfoNCE over ``n_predicts`` future steps (see the module docstring for the exact semantics).

    ``forward(cFeature (B, T, Dc), encodedData (B, T, De), label=None, capture=False)``; the label
    is ignored. Captures: ``"pred"`` ``(B, W, K, De)`` and ``"negative_indices"`` ``(B, W, N)``
    (flat indices into ``encodedData.reshape(B * T, De)``, in the reversed time order under
    ``reverse``).
    """

    def __init__(self, n_predicts: int, dim_context: int, dim_encoded: int, n_negatives: int,
                 rnn_mode: str = "transformer", dropout: bool = False, reverse: bool = False,
                 limit_negs_in_batch: int = 0, max_rel_distance: int = 128):
        super().__init__()
        self.n_predicts = n_predicts
        self.n_negatives = n_negatives
        self.reverse = reverse
        self.limit_negs_in_batch = limit_negs_in_batch
        self.wPrediction = PredictionHeads(n_predicts, dim_context, dim_encoded, rnn_mode, dropout,
                                           max_rel_distance)

    def chance_loss(self) -> float:
        """The loss when every candidate scores the same: K * ln(1 + N)."""
        return self.n_predicts * math.log(1 + self.n_negatives)

    def forward(self, cFeature: torch.Tensor, encodedData: torch.Tensor, label: torch.Tensor | None = None,
                capture: bool = False) -> CriterionOutput:
        if self.reverse:
            cFeature, encodedData = torch.flip(cFeature, [1]), torch.flip(encodedData, [1])
        batch, seq_len, _ = cFeature.shape
        window = seq_len - self.n_predicts
        if window < 1:
            raise ValueError(f"sequence of {seq_len} frames is too short for {self.n_predicts} prediction steps")
        predictions = self.wPrediction(cFeature[:, :window])
        negative_indices = sample_negative_indices(batch, seq_len, window, self.n_negatives,
                                                   self.limit_negs_in_batch, device=encodedData.device)
        island, (predictions32, encoded32) = float32_island(predictions, encodedData)
        with island:  # scores and their log-softmax in float32 under any --precision
            logits = info_nce_logits(predictions32, encoded32, negative_indices,
                                     self.limit_negs_in_batch)
            step_losses, step_accuracies = info_nce_step_stats(logits, negative_indices)
        captures = {"pred": predictions, "negative_indices": negative_indices} if capture else {}
        scores = logits.detach()
        margin = (scores[..., 0] - scores[..., 1:].mean(dim=-1)).mean()
        return CriterionOutput(step_losses.sum(), step_losses, step_accuracies, captures, margin)


def build(options: CPCOptions, *, dim_context: int, dim_encoded: int, size_window: int,
          reverse: bool, **_: object) -> CPCCriterion:
    """CPC criterion from its options, for windows of ``size_window`` samples (the heads'
    longest distance) read backwards when ``reverse``."""
    return CPCCriterion(options.nPredicts, dim_context, dim_encoded, options.negativeSamplingExt,
                        rnn_mode=options.rnnMode, dropout=options.dropout, reverse=reverse,
                        limit_negs_in_batch=options.limitNegsInBatch,
                        max_rel_distance=max(1, size_window // FRAME_SIZE - options.nPredicts))
