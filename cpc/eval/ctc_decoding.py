"""Decoding of CTC outputs into phone sequences (pure math, no I/O).

Two named decodings of one sequence's ``(T, C)`` log-probabilities, the blank being a class:

* ``greedy`` (best path): the most probable class of each frame, repeats collapsed, blanks
  dropped. Fast and deterministic; what :func:`cpc.criterion.supervised.ctc_greedy_decode` does
  for a batch.
* ``beam`` (prefix beam search, CPC_audio's PER decoding, width 20 there): keeps the
  ``beam_width`` most probable label prefixes, each summed over all the frame paths that
  collapse onto it, so it finds labellings that no single best path shows.
"""
from __future__ import annotations

import math

import torch

from cpc.criterion.supervised import ctc_greedy_decode
from cpc.eval.options import DECODINGS

NEG_INF = float("-inf")


def _log_add(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


def prefix_beam_search(log_probs: torch.Tensor, blank: int, beam_width: int) -> list[int]:
    """Most probable labelling found by CTC prefix beam search over ``(T, C)`` log-probabilities.

    Each prefix carries two log-probabilities: of the frame paths ending in a blank, and of
    those ending in its last label (a repeated label extends the prefix only after a blank).
    Without pruning (``beam_width`` at least the number of prefixes) the result is exact.
    """
    if beam_width < 1:
        raise ValueError(f"beam width must be at least 1; got {beam_width}")
    rows = log_probs.detach().double().cpu().tolist()
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}
    for row in rows:
        grown: dict[tuple[int, ...], list[float]] = {}

        def add(prefix: tuple[int, ...], value: float, *, ends_in_blank: bool) -> None:
            entry = grown.setdefault(prefix, [NEG_INF, NEG_INF])
            slot = 0 if ends_in_blank else 1
            entry[slot] = _log_add(entry[slot], value)

        for prefix, (p_blank, p_label) in beams.items():
            total = _log_add(p_blank, p_label)
            add(prefix, total + row[blank], ends_in_blank=True)
            for label, p in enumerate(row):
                if label == blank:
                    continue
                if prefix and prefix[-1] == label:
                    add(prefix, p_label + p, ends_in_blank=False)  # the same label, not yet separated
                    add(prefix + (label,), p_blank + p, ends_in_blank=False)  # a new one after a blank
                else:
                    add(prefix + (label,), total + p, ends_in_blank=False)
        ranked = sorted(grown.items(), key=lambda item: -_log_add(*item[1]))
        beams = {prefix: (scores[0], scores[1]) for prefix, scores in ranked[:beam_width]}
    best = max(beams.items(), key=lambda item: _log_add(*item[1]))
    return list(best[0])


def decode(log_probs: torch.Tensor, length: int, blank: int, decoding: str,
           beam_width: int = 20) -> list[int]:
    """Phone ids of one sequence: its first ``length`` frames of ``(T, C)`` log-probabilities."""
    frames = log_probs[:length]
    if decoding == "greedy":
        return ctc_greedy_decode(frames[None], blank)[0]
    if decoding == "beam":
        return prefix_beam_search(frames, blank, beam_width)
    raise ValueError(f"unknown decoding {decoding!r}; available: {', '.join(DECODINGS)}")
