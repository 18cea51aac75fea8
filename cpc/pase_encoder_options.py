"""The options of the PASE encoder (:mod:`cpc.pase_encoder`, ``--encoder_type pase``), one field
per flag (:mod:`cpc.utils.option_classes`).

Torch-free, beside the torch module, so that the parser and ``--help`` need no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cpc.model_options import ModelOptions
from cpc.utils.option_classes import option


@dataclass(frozen=True)
class PaseEncoderOptions(ModelOptions):
    """PASE's encoder setups: plain, with a QRNN (PASE's second), with skips (PASE+)."""

    title: ClassVar[str] = "Architecture"

    pase_qrnn: bool = option(False, "PASE encoder: a QRNN over the convolutions (PASE's second "
                                    "setup).")
    pase_qrnn_layers: int = option(1, "PASE encoder: layers of that QRNN.")
    pase_skip: bool = option(False, "PASE encoder: skip connections from the intermediate "
                                    "blocks (PASE+).")
