"""Quasi-recurrent neural network (Bradbury et al., 2017), with an ``nn.LSTM``-like interface.

Each layer maps its input window with one linear layer to candidate values ``Z`` (tanh), forget
gates ``F`` (sigmoid) and, with ``output_gate``, output gates ``O`` (sigmoid); then
``c_t = f_t * c_{t-1} + (1 - f_t) * z_t`` (:func:`~cpc.qrnn.forget_mult.forget_mult`) and
``h_t = o_t * c_t`` (``c_t`` without output gate). Only the cheap elementwise recurrence is
sequential, which is what makes the QRNN faster than an LSTM.

As in the salesforce reference: window 2 feeds ``[x_{t-1}, x_t]`` with ``x_{-1} = 0``; zoneout
keeps each state element's previous value with probability ``zoneout`` in training (it zeroes the
update weight ``1 - f_t``) and uses its expectation in eval (``1 - f_t`` scaled by
``1 - zoneout``); ``h_n`` holds each layer's last recurrent state ``c_T``, so feeding it back as
``hidden`` continues the sequence.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..dropout import dropout
from .forget_mult import forget_mult


def window_input(x: torch.Tensor, window: int) -> torch.Tensor:
    """``x`` (T, B, D) for window 1, else ``[x_{t-1}, x_t]`` (T, B, 2D) with ``x_{-1} = 0``."""
    if window == 1:
        return x
    previous = F.pad(x, (0, 0, 0, 0, 1, 0))[:-1]
    return torch.cat([previous, x], dim=-1)


def zoneout_forget(f: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Forget gates with zoneout: in training ``f_t = 1`` (keep the state) with probability ``p``;
    in eval the update weight ``1 - f_t`` is scaled by its expectation ``1 - p``."""
    if p == 0:
        return f
    if training:
        keep_update = torch.empty_like(f).bernoulli_(1 - p)
        return 1 - (1 - f) * keep_update
    return 1 - (1 - f) * (1 - p)


class QRNNLayer(nn.Module):
    """One QRNN layer on time-major input: ``(T, B, input_size) -> (T, B, hidden_size)``."""

    def __init__(self, input_size: int, hidden_size: int, window: int = 1, output_gate: bool = True,
                 zoneout: float = 0.0):
        super().__init__()
        if window not in (1, 2):
            raise ValueError(f"window must be 1 or 2; got {window}")
        if not 0 <= zoneout <= 1:
            raise ValueError(f"zoneout must be in [0, 1]; got {zoneout}")
        self.hidden_size = hidden_size
        self.window = window
        self.output_gate = output_gate
        self.zoneout = zoneout
        n_gates = 3 if output_gate else 2
        self.linear = nn.Linear(window * input_size, n_gates * hidden_size)

    def forward(self, x: torch.Tensor, hidden: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (T, B, D), ``hidden`` = ``c_{-1}`` (B, H) or None -> (``h`` (T, B, H), ``c_T`` (B, H))."""
        # split (not slicing): its backward is one cat instead of a zero-filled buffer per slice
        gates = self.linear(window_input(x, self.window)).split(self.hidden_size, dim=-1)
        f = zoneout_forget(torch.sigmoid(gates[1]), self.zoneout, self.training)
        c = forget_mult(f, torch.tanh(gates[0]), hidden)
        h = torch.sigmoid(gates[2]) * c if self.output_gate else c
        return h, c[-1]


class QRNN(nn.Module):
    """Stack of :class:`QRNNLayer` with dropout between layers (training only), like ``nn.LSTM``.

    ``forward(x, hidden=None) -> (output, h_n)``: ``x`` is (T, B, input_size), or (B, T, input_size)
    with ``batch_first``; ``output`` is the last layer's ``h`` in the same layout; ``hidden`` and
    ``h_n`` are (num_layers, B, hidden_size), the recurrent state ``c`` of each layer.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, window: int = 1,
                 output_gate: bool = True, zoneout: float = 0.0, dropout: float = 0.0,
                 batch_first: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1; got {num_layers}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.batch_first = batch_first
        self.layers = nn.ModuleList(
            QRNNLayer(input_size if i == 0 else hidden_size, hidden_size, window, output_gate, zoneout)
            for i in range(num_layers))

    def forward_all_layers(self, x: torch.Tensor, hidden: Optional[torch.Tensor] = None
                           ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Like :meth:`forward` but returns every layer's output (before inter-layer dropout)."""
        if self.batch_first:
            x = x.transpose(0, 1)
        outputs, last_states = [], []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = dropout(x, self.dropout, self.training)
            x, c_last = layer(x, None if hidden is None else hidden[i])
            outputs.append(x.transpose(0, 1) if self.batch_first else x)
            last_states.append(c_last)
        return outputs, torch.stack(last_states)

    def forward(self, x: torch.Tensor, hidden: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output, h_n)``: the last layer's outputs and every layer's final state."""
        outputs, h_n = self.forward_all_layers(x, hidden)
        return outputs[-1], h_n
