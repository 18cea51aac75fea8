"""The options of the shipped criteria, one dataclass per criterion and one field per flag
(:mod:`cpc.utils.option_classes`); their lines in :mod:`cpc.registries` name them; and which
registered criterion a command line trains (:func:`criterion_name`).

Torch-free, beside the criteria, so that the parser and ``--help`` need no torch.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import ClassVar

from cpc.registries import CRITERIA, HEADS
from cpc.utils.errors import ConfigError
from cpc.utils.option_classes import option


@dataclass(frozen=True)
class CPCOptions:
    """CPC's InfoNCE criterion (:mod:`cpc.criterion.cpc`); ``criterion`` chooses the one to
    train."""

    title: ClassVar[str] = "CPC criterion"

    criterion: str = option(
        "cpc", "What the contexts and encoded frames are trained on (--CPCCTC is the fork's "
               "spelling of --criterion cpcctc; speaker, phone and phone_ctc are chosen by "
               "--supervised).", choices=CRITERIA.names)
    nPredicts: int = option(12, "Future steps predicted from each context frame.")
    negativeSamplingExt: int = option(128, "Negatives per anchor, shared by all predicted steps.")
    rnnMode: str = option("transformer", "Prediction heads.", choices=HEADS.names)
    dropout: bool = option(False, "Dropout on the contexts before the prediction heads.")
    limitNegsInBatch: int = option(0, "Draw an anchor's negatives only from its group of this "
                                      "many consecutive batch items (0: the whole batch).")


@dataclass(frozen=True)
class CPCCTCOptions(CPCOptions):
    """CPC-CTC (:mod:`cpc.criterion.cpc_ctc`): CPC's options and its own."""

    title: ClassVar[str] = "CPC-CTC"
    description: ClassVar[str] = (
        "Aligned CPC (Chorowski et al., Interspeech 2021): the --nPredicts ordered predictions "
        "of c_t are aligned monotonically to the next --CPCCTCNumMatched encoded frames, "
        "summing over all alignments.")

    CPCCTC: bool = option(False, "Use the CPC-CTC criterion instead of CPC.")
    CPCCTCNumMatched: int = option(16, "Future frames M matched by the predictions (M >= "
                                       "nPredicts).")
    CPCCTCSkipBeg: int = option(0, "Zero-cost rows before the matched frames: leading "
                                   "predictions may be skipped. With skips the loss can be "
                                   "negative.")
    CPCCTCSkipEnd: int = option(0, "Zero-cost rows after the matched frames: trailing "
                                   "predictions may be skipped. With skips the loss can be "
                                   "negative.")
    CPCCTCSelfLoop: bool = option(False, "Prepend z_t as an extra first prediction ('nothing "
                                         "new yet').")
    CPCCTCLearnBlank: bool = option(False, "Prepend a learned blank vector as an extra first "
                                           "prediction.")
    CPCCTCNoNegsMatchWin: bool = option(False, "Never draw negatives from frames t .. t+M of "
                                               "the anchor's window.")
    CPCCTCMasq: str = option("", "Rules forbidding (window frame, prediction) cells; see "
                                 "cpc/criterion/cpc_ctc.py for the syntax.")
    CPCCTCLossTemp: float = option(1.0, "Divide the cell log-scores by T and multiply the loss "
                                        "by T.")
    CPCCTCNormalizeEncs: bool = option(False, "Layer-normalise the encoded frames (over "
                                              "features) before scoring.")
    CPCCTCNormalizePreds: bool = option(False, "Layer-normalise the predictions (over "
                                               "features) before scoring.")


@dataclass(frozen=True)
class SupervisedOptions:
    """The supervised criteria of ``--supervised`` (:mod:`cpc.criterion.supervised`)."""

    title: ClassVar[str] = "Supervised training"
    description: ClassVar[str] = (
        "CPC_audio's supervised mode: encoder and context network trained on labels instead of "
        "the CPC loss (usually with --cpc_mode none), with the same loop, checkpoints, probes "
        "and logs.")

    supervised: bool = option(False, "Train on speaker labels (last context frame, linear "
                                     "classifier), or on the phone labels of --path_phone_data "
                                     "(frame-wise).")
    CTC: bool = option(False, "With --supervised and --path_phone_data: CTC on the window's "
                              "phone sequence instead of frame-wise classification.")
    onEncoder: bool = option(False, "With --supervised: classify the encoder output z instead "
                                    "of the contexts c.")
    nLevelsPhone: int = option(1, "With --supervised and --path_phone_data: layers of the phone "
                                  "classifier (more than 1: an MLP whose hidden width is the "
                                  "phone count).")


def criterion_name(args: argparse.Namespace) -> str:
    """The registered criterion to train: --criterion, cpcctc for the fork's --CPCCTC, or for
    --supervised (as CPC_audio) phone_ctc with --CTC, phone with --path_phone_data, else
    speaker."""
    if args.supervised:
        return ("phone_ctc" if args.CTC else "phone") if args.path_phone_data else "speaker"
    if args.CPCCTC and args.criterion not in ("cpc", "cpcctc"):
        raise ConfigError(f"--CPCCTC selects the cpcctc criterion; it contradicts --criterion "
                          f"{args.criterion}")
    return "cpcctc" if args.CPCCTC else args.criterion
