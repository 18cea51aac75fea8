"""Binary classification workers (BCE on logits, half positive and half negative pairs): LIM, GIM, SPC.

PASE feeds each utterance as three chunks (an anchor, another chunk of the same utterance, a
chunk of another utterance). Our batches hold one window per row, so:

- LIM (local info max): an anchor chunk and a positive chunk are drawn at random positions of
  the same window, a negative chunk in a window of the batch with another speaker label; an MLP
  scores the concatenation ``[anchor_t, other_t]`` of every aligned frame pair (PASE's per-frame
  pairing). ``chunk_frames`` defaults to half the window.
- GIM (global info max): the same chunks, averaged over time before the MLP: one pair per row.
- SPC (sequence predictive coding, PASE): from a random frame ``t`` of a window, a positive
  sequence of ``context_frames`` frames starting at least ``gap_frames`` after ``t`` and a
  negative one ending at least ``gap_frames`` before ``t``, both from the same window; an MLP
  scores ``[frame_t, sequence]``: does the sequence follow the frame?

LIM and GIM need at least two speakers in every batch: a batch of a single speaker (as
``--samplingType samespeaker`` gives) is a :class:`~.base.WorkerBatchError`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cpc.precision import float32_island
from cpc.utils.errors import ConfigError

from .base import Worker, WorkerBatchError, WorkerOutput, mlp_head
from .registry import WORKERS, WorkerSpec, keyword_settings


def other_speaker_rows(speaker: torch.Tensor) -> torch.Tensor:
    """For each row, a random row of the batch with a different speaker label: ``(B,)``, on
    the device of ``speaker`` (training passes the labels on the host: checking them there
    does not stall a GPU)."""
    differs = speaker[:, None] != speaker[None, :]
    if not bool(differs.any(dim=1).all()):
        raise WorkerBatchError(
            "LIM / GIM workers draw negatives from windows of other speakers, but this batch "
            f"holds a single speaker ({speaker.numel()} window(s)): train with --samplingType uniform")
    return torch.multinomial(differs.to(torch.float), 1).squeeze(1)


def random_between(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Uniform random integers in ``[low, high]`` (inclusive), elementwise."""
    draw = (torch.rand(low.shape, device=low.device) * (high - low + 1).to(torch.float)).long()
    return low + torch.minimum(draw, high - low)


def take_chunks(encoded: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """``encoded[rows[i], starts[i]:starts[i] + length]`` for each i: ``(B, length, D)``."""
    steps = starts[:, None] + torch.arange(length, device=encoded.device)
    return encoded[rows[:, None], steps]


def pair_logits_loss(head: nn.Module, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """BCE of ``head`` scoring positive pairs 1 and negative pairs 0 (inputs ``(..., 2D)``)."""
    logits = head(torch.cat([positive, negative], dim=0)).squeeze(-1)
    island, (logits,) = float32_island(logits)
    with island:
        labels = torch.cat([logits.new_ones(positive.shape[:-1]),
                            logits.new_zeros(negative.shape[:-1])])
        return F.binary_cross_entropy_with_logits(logits, labels)


class InfoMaxDiscriminator(Worker):
    """LIM (``pooled=False``, frame pairs) or GIM (``pooled=True``, chunk averages); see module doc."""

    kind = "classifier"
    needs_other_speakers = True

    def __init__(self, name: str, dim_encoded: int, pooled: bool, chunk_frames: int | None = None,
                 hidden_size: int = 256, hidden_layers: int = 1, dropout: float = 0.0, weight: float = 1.0):
        super().__init__(name, weight)
        if chunk_frames is not None and chunk_frames < 1:
            raise ValueError(f"chunk_frames must be positive; got {chunk_frames}")
        self.pooled = pooled
        self.chunk_frames = chunk_frames
        self.head = mlp_head(2 * dim_encoded, 1, hidden_size=hidden_size, hidden_layers=hidden_layers,
                             dropout=dropout)

    def forward(self, encoded: torch.Tensor, audio: torch.Tensor, speaker: torch.Tensor) -> WorkerOutput:
        batch, n_frames, _ = encoded.shape
        length = self.chunk_frames or max(1, n_frames // 2)
        if length > n_frames:
            raise ConfigError(f"worker {self.name}: chunk_frames {length} exceeds the {n_frames} "
                                   f"frames of a window (--sizeWindow / chunk_size)")
        rows = torch.arange(batch, device=encoded.device)
        others = other_speaker_rows(speaker).to(encoded.device, non_blocking=True)
        starts = torch.randint(0, n_frames - length + 1, (3, batch), device=encoded.device)
        anchor, positive, negative = (take_chunks(encoded, r, s, length)
                                      for r, s in zip((rows, rows, others), starts))
        if self.pooled:
            anchor, positive, negative = (x.mean(dim=1) for x in (anchor, positive, negative))
        loss = pair_logits_loss(self.head, torch.cat([anchor, positive], dim=-1),
                                torch.cat([anchor, negative], dim=-1))
        return WorkerOutput(loss, self.name)


class SequencePredictiveCoding(Worker):
    """SPC: does a ``context_frames`` sequence come after (positive) or before (negative) a frame?"""

    kind = "classifier"
    needs_other_speakers = False

    def __init__(self, name: str, dim_encoded: int, context_frames: int = 5, gap_frames: int = 16,
                 hidden_size: int = 256, hidden_layers: int = 1, dropout: float = 0.0, weight: float = 1.0):
        super().__init__(name, weight)
        if context_frames < 1 or gap_frames < 1:
            raise ValueError(f"context_frames and gap_frames must be positive; got {context_frames}, {gap_frames}")
        self.context_frames = context_frames
        self.gap_frames = gap_frames
        self.head = mlp_head((context_frames + 1) * dim_encoded, 1, hidden_size=hidden_size,
                             hidden_layers=hidden_layers, dropout=dropout)

    def forward(self, encoded: torch.Tensor, audio: torch.Tensor, speaker: torch.Tensor) -> WorkerOutput:
        batch, n_frames, _ = encoded.shape
        context, gap = self.context_frames, self.gap_frames
        if n_frames < 2 * (context + gap):
            raise ConfigError(f"worker {self.name} needs windows of at least {2 * (context + gap)} "
                                   f"frames (2 x (context_frames + gap_frames)); got {n_frames}: raise "
                                   f"--sizeWindow / chunk_size")
        rows = torch.arange(batch, device=encoded.device)
        full = lambda value: torch.full((batch,), value, device=encoded.device)  # noqa: E731
        current = random_between(full(context + gap), full(n_frames - context - gap))
        future_start = random_between(current + gap, full(n_frames - context))
        past_start = random_between(full(0), current - gap - context)
        frame = encoded[rows, current]
        future = take_chunks(encoded, rows, future_start, context).flatten(1)
        past = take_chunks(encoded, rows, past_start, context).flatten(1)
        loss = pair_logits_loss(self.head, torch.cat([frame, future], dim=-1), torch.cat([frame, past], dim=-1))
        return WorkerOutput(loss, self.name)


def register_classifier(name: str, worker_class: type[Worker], **fixed) -> None:
    """Register ``worker_class(name, dim_encoded, **fixed, **settings)``; its other keyword
    arguments are the accepted settings."""
    settings = keyword_settings(worker_class.__init__, tuple(fixed))

    def build(worker_name: str, values: dict, dim_encoded: int, sample_rate: int) -> Worker:
        return worker_class(worker_name, dim_encoded, **fixed, **values)

    WORKERS.add(name, WorkerSpec("classifier", build, settings))


register_classifier("lim", InfoMaxDiscriminator, pooled=False)
register_classifier("gim", InfoMaxDiscriminator, pooled=True)
register_classifier("spc", SequencePredictiveCoding)
