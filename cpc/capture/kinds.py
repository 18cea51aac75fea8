"""What can be captured: each kind's flag and shape, and which kinds exist in a run.

Torch-free, so that the parser builds the capture flags from here.
"""
from __future__ import annotations

from cpc.utils.errors import ConfigError

# kind -> (flag, shape note)
CAPTURE_KINDS = {
    "conv_repr": ("captureConvRepr", "(B, T, De) encoder output z"),
    "ctx_repr": ("captureCtxRepr", "(B, T, Dc) context network output c"),
    "speaker_align": ("captureSpeakerAlign", "(B, T) speaker index of every frame"),
    "phone_align": ("capturePhoneAlign", "(B, T) phone label of every frame"),
    "pred": ("capturePred", "(B, W, K, De) predictions of the criterion"),
    "cpcctc_align": ("captureCPCCTCalign", "(B, W, M) CPC-CTC alignment (prediction per frame)"),
    "cpcctc_log_scores": ("captureCPCCTClogScores", "(B, W, M, K) CPC-CTC cell log-scores"),
}
# The kinds the training objective produces (the others come from the model and the data),
# and what a run needs to produce each kind it may lack.
CRITERION_KINDS = ("pred", "cpcctc_align", "cpcctc_log_scores")
NEEDS = {"phone_align": "--path_phone_data", "pred": "a CPC criterion (not PASE workers)",
         "cpcctc_align": "--CPCCTC", "cpcctc_log_scores": "--CPCCTC"}


def valid_kinds(criterion_kinds: tuple[str, ...], has_phones: bool) -> list[str]:
    """Capture kinds that exist in a run: phone alignments need labels, and of the criterion
    kinds only those its objective produces (``criterion_kinds``) exist."""
    return [kind for kind in CAPTURE_KINDS
            if not (kind == "phone_align" and not has_phones)
            and not (kind in CRITERION_KINDS and kind not in criterion_kinds)]


def requested_kinds(flags: dict[str, bool], everything: bool, criterion_kinds: tuple[str, ...],
                    has_phones: bool) -> list[str]:
    """The kinds asked for by the capture flags; an explicit flag for a kind the run cannot
    produce is an error naming it, while ``--captureEverything`` takes every valid kind."""
    valid = valid_kinds(criterion_kinds, has_phones)
    if everything:
        return valid
    kinds = [kind for kind, (flag, _) in CAPTURE_KINDS.items() if flags.get(flag)]
    for kind in kinds:
        if kind not in valid:
            raise ConfigError(f"--{CAPTURE_KINDS[kind][0]} needs {NEEDS[kind]}")
    return kinds
