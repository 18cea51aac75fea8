"""Criteria: CPC InfoNCE, CPC-CTC and supervised ones, all returning :class:`CriterionOutput`.

The training criteria are registered by name in ``CRITERIA`` (a line each in
:mod:`cpc.registries`): "cpc", "cpcctc", and the supervised "speaker", "phone", "phone_ctc" of
``--supervised``; build one with ``build_criterion(name, args, ...)``. The probes of
:mod:`cpc.probes` build the supervised classes directly.
"""
from .base import CriterionOutput
from .cpc import CPCCriterion, PredictionHeads, info_nce_logits, sample_negative_indices
from .cpc_ctc import CPCCTCCriterion
from .registry import CRITERIA, build_criterion
from .supervised import (CTCPhoneCriterion, PhoneCriterion, SpeakerCriterion, edit_distance,
                         phone_error_rate)

__all__ = [
    "CPCCTCCriterion", "CPCCriterion", "CRITERIA", "CTCPhoneCriterion", "CriterionOutput", "PhoneCriterion",
    "PredictionHeads", "SpeakerCriterion", "build_criterion", "edit_distance", "info_nce_logits",
    "phone_error_rate", "sample_negative_indices",
]
