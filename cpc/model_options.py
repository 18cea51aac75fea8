"""The options of the model (:mod:`cpc.model`): its own, and those of its context networks that
have more; one field per flag (:mod:`cpc.utils.option_classes`).

Torch-free, beside the torch module, so that the parser and ``--help`` need no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cpc.registries import ARS, ENCODERS, NORM_LAYERS
from cpc.utils.option_classes import option


@dataclass(frozen=True)
class ModelOptions:
    """What every encoder and context network is built from (the encoders and context networks
    that declare no options of their own receive these)."""

    title: ClassVar[str] = "Architecture"

    encoder_type: str = option("cpc", "Encoder of the waveform (cpc: 5 strided convolutions).",
                               choices=ENCODERS.names)
    hiddenEncoder: int = option(256, "Channels of the encoder (its output dimension).")
    normMode: str = option("layerNorm", "Normalisation after each encoder convolution.",
                           choices=NORM_LAYERS.names)
    arMode: str = option("LSTM", "Context network.", choices=ARS.names)
    hiddenGar: int = option(256, "Output dimension of the context network.")
    nLevelsGRU: int = option(1, "Layers of the context network.")
    cpc_mode: str | None = option(
        None, "reverse: predict the past instead of the future (the context network reads the "
              "window backwards); none: no CPC loss, for --supervised; bert (CPC_audio before "
              "its release) is refused.", choices=[None, "reverse", "none", "bert"])

    @property
    def reverse(self) -> bool:
        """``--cpc_mode reverse``; CPC_audio's args files may also hold "none"."""
        if self.cpc_mode not in (None, "none", "reverse"):
            raise ValueError(f"unsupported cpc_mode {self.cpc_mode!r}; supported: None, 'none', "
                             f"'reverse'")
        return self.cpc_mode == "reverse"


@dataclass(frozen=True)
class TransformerContextOptions(ModelOptions):
    """``--arMode transformer``."""

    title: ClassVar[str] = "Architecture"

    abspos: bool = option(False, "Absolute (sinusoidal) positions in the transformer context "
                                 "network.")
