"""CPC-CTC, aligned CPC (Chorowski et al., Interspeech 2021): K ordered predictions of each
context are aligned monotonically to the next M encoded frames, summing over all alignments.

For contexts ``c (B, S, Dc)`` and encoded frames ``z (B, S, D)``:

* anchors are the first ``W = S - M`` contexts; the heads map ``c_t`` to predictions
  ``P_1..P_K``; the aligned columns are ``[blank] [z_t] P_1 .. P_K`` (K' of them): the learned
  blank vector with ``learn_blank``, the self-loop ``z_t`` ("nothing new yet") with
  ``self_loop``, both before the heads' predictions and the blank first;
* each anchor draws N negatives (:func:`~cpc.criterion.cpc.sample_negative_indices`), shared by
  all its cells; with ``no_negs_in_match_window`` none comes from frames ``t .. t+M`` of its
  own item;
* cell ``(m, k)``: ``l[m, k]`` = log-softmax probability of the positive ``z_{t+1+m}`` among
  itself and the N negatives, each scored by ``dot(column k, frame) / D``; masked cells are -inf;
* cost per anchor = ``T * soft_align(l / T, skip_beg, skip_end)`` (T = ``loss_temp``);
  loss = mean cost over the ``B * W`` anchors (negative costs are possible with skip rows).

Logged per matched frame m (as the CPC-CTC fork does): the accuracy of the aligned column
(positive scores at least as high as every negative, a negative drawn at the positive's own
frame left out of the comparison, as in CPC) and the step loss ``loss * r_m / sum(r)``, where
``r_m`` is the mean of ``-l[m, a(m)]`` under the posterior-argmax alignment ``a``, so the
step losses sum to the loss.

Masks (``--CPCCTCMasq``): comma-separated rules ``r0:r1:c0:c1``, each forbidding the cells
``[r0:r1, c0:c1]`` (Python slices; an empty bound or ``none`` is open, negative bounds count
from the end) of the M x K grid of matched frames (row m: ``z_{t+1+m}``) by heads' predictions
(column j: ``P_{j+1}``). As in the fork, the extra blank / self-loop columns take the mask of
``P_1``'s column. A rule that selects no cell, or a mask that leaves no alignment, is refused.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..precision import float32_island
from ..utils.constants import FRAME_SIZE
from ..utils.errors import ConfigError
from ..utils.option_classes import flag
from .base import CriterionOutput
from .cpc import PredictionHeads, candidate_scores, sample_negative_indices
from .options import CPCCTCOptions
from .soft_align import soft_align


# --------------------------------------------------------------------------- masks

def parse_masq_rules(rules: str, n_matched: int, n_predicts: int) -> torch.Tensor | None:
    """``(M, K)`` bool mask of forbidden (matched frame, head) cells from ``--CPCCTCMasq``
    rules (syntax in the module docstring); None for no rule."""
    if not rules.strip():
        return None
    forbidden = torch.zeros(n_matched, n_predicts, dtype=torch.bool)
    for rule in rules.split(","):
        fields = rule.strip().split(":")
        if len(fields) != 4:
            raise ConfigError(f"--CPCCTCMasq rule {rule!r}: expected rowStart:rowEnd:colStart:colEnd")
        try:
            r0, r1, c0, c1 = [None if f.strip().lower() in ("", "none") else int(f) for f in fields]
        except ValueError:
            raise ConfigError(f"--CPCCTCMasq rule {rule!r}: bounds must be integers or 'none'") from None
        cells = forbidden[r0:r1, c0:c1]
        if cells.numel() == 0:
            raise ConfigError(f"--CPCCTCMasq rule {rule!r} selects no cell of the "
                              f"{n_matched} x {n_predicts} (--CPCCTCNumMatched x --nPredicts) grid")
        cells.fill_(True)
    return forbidden


def extend_mask(head_mask: torch.Tensor, n_extra: int) -> torch.Tensor:
    """``(M, K)`` head mask -> ``(M, n_extra + K)``: the extra columns copy head 1's column."""
    return torch.cat([head_mask[:, :1].expand(-1, n_extra), head_mask], dim=1)


def has_alignment(forbidden: torch.Tensor, skip_beg: int, skip_end: int) -> bool:
    """Whether some monotone alignment of the ``(M, K')`` grid avoids every forbidden cell."""
    log_scores = torch.zeros(forbidden.shape, dtype=torch.float64).masked_fill(forbidden, float("-inf"))
    cost, _ = soft_align(log_scores[None], skip_beg, skip_end)
    return bool(torch.isfinite(cost).all())


# --------------------------------------------------------------------------- scores

def positive_indices(batch: int, seq_len: int, window: int, n_matched: int,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """``(B, W, M)`` flat indices ``b * T + t + 1 + m`` of the frames matched by anchor (b, t)."""
    base = torch.arange(batch, device=device)[:, None, None] * seq_len
    times = torch.arange(window, device=device)[None, :, None] + torch.arange(1, n_matched + 1, device=device)
    return base + times


def cell_log_scores(scores: torch.Tensor, n_matched: int) -> torch.Tensor:
    """``(B, W, K', M + N)`` scores (the M positives, then the N negatives) -> ``(B, W, M, K')``
    log-softmax probability of each positive among itself and the negatives."""
    positive, negative = scores[..., :n_matched], scores[..., n_matched:]
    negative_total = torch.logsumexp(negative, dim=-1, keepdim=True)
    return (positive - torch.logaddexp(positive, negative_total)).transpose(-1, -2)


def aligned_step_stats(log_scores: torch.Tensor, scores: torch.Tensor, alignment: torch.Tensor,
                       positives: torch.Tensor, negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per matched frame: mean ``-l[m, a(m)]`` and accuracy of the aligned column.

    log_scores ``(B, W, M, K')``, scores ``(B, W, K', M + N)``, alignment ``(B, W, M)``,
    positives ``(B, W, M)`` and negatives ``(B, W, N)`` flat frame indices. A negative drawn at
    the positive's own frame is left out of the accuracy comparison (it ties with it).
    """
    n_matched = alignment.shape[-1]
    log_scores, scores = log_scores.detach(), scores.detach()
    aligned_loss = -torch.gather(log_scores, 3, alignment[..., None])[..., 0]  # (B, W, M)
    column = alignment[..., None]
    positive = torch.gather(scores[..., :n_matched], 2, column.transpose(2, 3))[:, :, 0]  # (B, W, M)
    negative = torch.gather(scores[..., n_matched:], 2,
                            column.expand(-1, -1, -1, negatives.shape[-1]))  # (B, W, M, N)
    own_frame = negatives[:, :, None, :] == positives[..., None]
    best_negative = negative.masked_fill(own_frame, float("-inf")).amax(dim=-1)
    accuracy = (positive >= best_negative).float()
    return aligned_loss.mean(dim=(0, 1)), accuracy.mean(dim=(0, 1))


# --------------------------------------------------------------------------- criterion

class CPCCTCCriterion(nn.Module):
    """Aligned CPC (see the module docstring for the exact semantics).

    ``forward(cFeature (B, S, Dc), encodedData (B, S, D), label=None, capture=False)``; the label
    is ignored. Captures: ``"pred"`` ``(B, W, K', D)`` (the aligned columns as scored),
    ``"cpcctc_align"`` ``(B, W, M)`` long, ``"cpcctc_log_scores"`` ``(B, W, M, K')`` (the cell
    log-scores before the temperature, -inf where masked) and ``"negative_indices"``
    ``(B, W, N)``, all in the reversed time order under ``reverse``.
    """

    def __init__(self, n_predicts: int, n_matched: int, dim_context: int, dim_encoded: int,
                 n_negatives: int, rnn_mode: str = "transformer", dropout: bool = False,
                 reverse: bool = False, limit_negs_in_batch: int = 0, skip_beg: int = 0,
                 skip_end: int = 0, self_loop: bool = False, learn_blank: bool = False,
                 no_negs_in_match_window: bool = False, masq_rules: str = "",
                 loss_temp: float = 1.0, normalize_encs: bool = False,
                 normalize_preds: bool = False, max_rel_distance: int = 128):
        super().__init__()
        if n_matched < n_predicts:
            raise ConfigError(f"--CPCCTCNumMatched {n_matched} must be at least --nPredicts {n_predicts}")
        if skip_beg < 0 or skip_end < 0:
            raise ConfigError(f"--CPCCTCSkipBeg {skip_beg} and --CPCCTCSkipEnd {skip_end} must be >= 0")
        if loss_temp <= 0:
            raise ConfigError(f"--CPCCTCLossTemp {loss_temp} must be positive")
        n_extra = int(learn_blank) + int(self_loop)
        n_columns = n_predicts + n_extra
        if n_matched + skip_beg + skip_end < n_columns:
            raise ConfigError(f"{n_columns} aligned columns (--nPredicts {n_predicts} + "
                              f"--CPCCTCSelfLoop / --CPCCTCLearnBlank) do not fit in --CPCCTCNumMatched "
                              f"{n_matched} + --CPCCTCSkipBeg {skip_beg} + --CPCCTCSkipEnd {skip_end} rows")
        head_mask = parse_masq_rules(masq_rules, n_matched, n_predicts)
        forbidden = None if head_mask is None else extend_mask(head_mask, n_extra)
        if forbidden is not None and not has_alignment(forbidden, skip_beg, skip_end):
            raise ConfigError(f"--CPCCTCMasq {masq_rules!r} forbids every alignment of the "
                              f"{n_matched} x {n_columns} grid (with skips {skip_beg}/{skip_end})")
        self.n_predicts = n_predicts
        self.n_matched = n_matched
        self.n_negatives = n_negatives
        self.reverse = reverse
        self.limit_negs_in_batch = limit_negs_in_batch
        self.skip_beg, self.skip_end = skip_beg, skip_end
        self.self_loop = self_loop
        self.no_negs_in_match_window = no_negs_in_match_window
        self.loss_temp = loss_temp
        self.normalize_encs, self.normalize_preds = normalize_encs, normalize_preds
        self.wPrediction = PredictionHeads(n_predicts, dim_context, dim_encoded, rnn_mode, dropout,
                                           max_rel_distance)
        self.blank = nn.Parameter(torch.zeros(dim_encoded)) if learn_blank else None
        self.register_buffer("forbidden", forbidden, persistent=False)  # derived from the flags

    def chance_loss(self) -> float:
        """The loss when every candidate scores the same (each cell ``-ln(1 + N)``): the same
        soft alignment as training, on uniform cell scores."""
        n_columns = self.n_predicts + int(self.blank is not None) + int(self.self_loop)
        log_scores = torch.full((1, self.n_matched, n_columns), -math.log(1 + self.n_negatives),
                                dtype=torch.float64)
        if self.forbidden is not None:
            log_scores = log_scores.masked_fill(self.forbidden.cpu(), float("-inf"))
        cost, _ = soft_align(log_scores / self.loss_temp, self.skip_beg, self.skip_end)
        return float(cost[0]) * self.loss_temp

    def aligned_columns(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``(B, W, K', D)``: [blank] [z_t] P_1..P_K for the W anchors of ``c (B, W, Dc)``."""
        predictions = self.wPrediction(c)
        batch, window = c.shape[:2]
        extras = []
        if self.blank is not None:
            extras.append(self.blank.expand(batch, window, 1, -1))
        if self.self_loop:
            extras.append(z[:, :window, None])
        if extras:
            predictions = torch.cat(extras + [predictions], dim=2)
        if self.normalize_preds:
            predictions = F.layer_norm(predictions, predictions.shape[-1:])
        return predictions

    def forward(self, cFeature: torch.Tensor, encodedData: torch.Tensor, label: torch.Tensor | None = None,
                capture: bool = False) -> CriterionOutput:
        if self.reverse:
            cFeature, encodedData = torch.flip(cFeature, [1]), torch.flip(encodedData, [1])
        if self.normalize_encs:
            encodedData = F.layer_norm(encodedData, encodedData.shape[-1:])
        batch, seq_len, dim = encodedData.shape
        window = seq_len - self.n_matched
        min_shift = self.n_matched + 1 if self.no_negs_in_match_window else 1
        if window < 1 or seq_len <= min_shift:
            raise ValueError(f"sequence of {seq_len} frames is too short for {self.n_matched} matched frames")
        predictions = self.aligned_columns(cFeature[:, :window], encodedData)
        negatives = sample_negative_indices(batch, seq_len, window, self.n_negatives, self.limit_negs_in_batch,
                                            device=encodedData.device, min_shift=min_shift)
        positives = positive_indices(batch, seq_len, window, self.n_matched, encodedData.device)
        island, (predictions32, encoded32) = float32_island(predictions, encodedData)
        with island:  # cell scores and the soft alignment in float32 under any --precision
            scores = candidate_scores(predictions32, encoded32,
                                      torch.cat([positives, negatives], dim=-1),
                                      self.limit_negs_in_batch) / dim  # (B, W, K', M + N)
            log_scores = cell_log_scores(scores, self.n_matched)  # (B, W, M, K')
            if self.forbidden is not None:
                log_scores = log_scores.masked_fill(self.forbidden, float("-inf"))
            n_columns = log_scores.shape[-1]
            cost, alignment = soft_align(
                (log_scores / self.loss_temp).reshape(-1, self.n_matched, n_columns),
                self.skip_beg, self.skip_end)
            loss = cost.mean() * self.loss_temp
            alignment = alignment.view(batch, window, self.n_matched)
            aligned_losses, step_accuracies = aligned_step_stats(log_scores, scores, alignment,
                                                                 positives, negatives)
        total = aligned_losses.sum()  # 0 only when every aligned cell is certain: share evenly
        share = torch.where(total > 0, aligned_losses / total.clamp(min=torch.finfo(total.dtype).tiny),
                            torch.full_like(aligned_losses, 1 / self.n_matched))
        captures = {}
        if capture:
            captures = {"pred": predictions, "cpcctc_align": alignment,
                        "cpcctc_log_scores": log_scores.detach(), "negative_indices": negatives}
        detached = scores.detach()
        margin = (detached[..., :self.n_matched].mean(dim=-1)
                  - detached[..., self.n_matched:].mean(dim=-1)).mean()
        return CriterionOutput(loss, loss * share, step_accuracies, captures, margin)


def build(options: CPCCTCOptions, *, dim_context: int, dim_encoded: int, size_window: int,
          reverse: bool, **_: object) -> CPCCTCCriterion:
    """CPC-CTC criterion from its options (CPC's and the ``CPCCTC*`` ones), for windows of
    ``size_window`` samples read backwards when ``reverse``; a window too short for
    ``CPCCTCNumMatched`` is a ConfigError naming both options."""
    n_matched, no_negs = options.CPCCTCNumMatched, options.CPCCTCNoNegsMatchWin
    frames = size_window // FRAME_SIZE
    needed = n_matched + (2 if no_negs else 1)
    if frames < needed:
        raise ConfigError(f"{flag('sizeWindow')} {size_window} gives {frames} frames, fewer than "
                          f"the {needed} that {flag('CPCCTCNumMatched')} {n_matched}"
                          f"{' with ' + flag('CPCCTCNoNegsMatchWin') if no_negs else ''} needs")
    return CPCCTCCriterion(
        options.nPredicts, n_matched, dim_context, dim_encoded, options.negativeSamplingExt,
        rnn_mode=options.rnnMode, dropout=options.dropout, reverse=reverse,
        limit_negs_in_batch=options.limitNegsInBatch, skip_beg=options.CPCCTCSkipBeg,
        skip_end=options.CPCCTCSkipEnd, self_loop=options.CPCCTCSelfLoop,
        learn_blank=options.CPCCTCLearnBlank, no_negs_in_match_window=no_negs,
        masq_rules=options.CPCCTCMasq, loss_temp=options.CPCCTCLossTemp,
        normalize_encs=options.CPCCTCNormalizeEncs, normalize_preds=options.CPCCTCNormalizePreds,
        max_rel_distance=max(1, frames - n_matched))
