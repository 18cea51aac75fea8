"""Criteria: CPC InfoNCE, CPC-CTC and supervised probes, all returning :class:`CriterionOutput`.

Importing this package imports every criterion module, which registers its names
("cpc", "cpcctc", "speaker", "phone", "ctc_phone"); build one with ``build_criterion(name, args, ...)``.
A new criterion module must be imported here too.
"""
from .base import CriterionOutput
from .cpc import CPCCriterion, PredictionHeads, info_nce_logits, sample_negative_indices
from .cpc_ctc import CPCCTCCriterion
from .registry import available_criteria, build_criterion, register_criterion
from .supervised import (CTCPhoneCriterion, PhoneCriterion, SpeakerCriterion, edit_distance,
                         phone_error_rate)

__all__ = [
    "CPCCTCCriterion", "CPCCriterion", "CTCPhoneCriterion", "CriterionOutput", "PhoneCriterion", "PredictionHeads",
    "SpeakerCriterion", "available_criteria", "build_criterion", "edit_distance", "info_nce_logits",
    "phone_error_rate", "register_criterion", "sample_negative_indices",
]
