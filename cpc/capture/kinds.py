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
CRITERION_KINDS = ("pred", "cpcctc_align", "cpcctc_log_scores")


def valid_kinds(cpcctc: bool, has_phones: bool, has_criterion: bool = True) -> list[str]:
    """Capture kinds that exist in a run: phone alignments need labels, predictions a CPC
    criterion (not PASE workers), CPC-CTC alignments and scores CPC-CTC."""
    return [kind for kind in CAPTURE_KINDS
            if not (kind == "phone_align" and not has_phones)
            and not (kind in CRITERION_KINDS and not has_criterion)
            and not (kind.startswith("cpcctc") and not cpcctc)]


def requested_kinds(flags: dict[str, bool], everything: bool, cpcctc: bool,
                    has_phones: bool, has_criterion: bool = True) -> list[str]:
    """The kinds asked for by the capture flags; an explicit flag for a kind the run cannot
    produce is an error naming it, while ``--captureEverything`` takes every valid kind."""
    valid = valid_kinds(cpcctc, has_phones, has_criterion)
    if everything:
        return valid
    kinds = [kind for kind, (flag, _) in CAPTURE_KINDS.items() if flags.get(flag)]
    for kind in kinds:
        if kind not in valid:
            need = "--path_phone_data" if kind == "phone_align" else \
                "--CPCCTC" if kind.startswith("cpcctc") else "a CPC criterion (not PASE workers)"
            raise ConfigError(f"--{CAPTURE_KINDS[kind][0]} needs {need}")
    return kinds
