"""The audio clock every part of the project shares, and how windows make batches.

Audio is 16 kHz mono; every encoder emits one frame per 160 samples (10 ms), and phone labels
(CPC_audio's format) and worker targets come one per frame. Windows are whole frames.
"""
SAMPLE_RATE = 16000
FRAME_SIZE = 160  # samples per encoded frame and per label frame
FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE

# --samplingType: how the windows of a pack are grouped into batches (cpc.data.plan's samplers)
SAMPLING_TYPES = ("samespeaker", "samesequence", "uniform", "sequential")

# --precision: the forward's floating-point format (cpc.precision)
PRECISIONS = ("fp32", "bf16", "fp16")

# --bad_audio: what a tool does with a file holding NaN or infinite samples (cpc.audio_check)
BAD_AUDIO_CHOICES = ("refuse", "skip")


def window_size_problem(size: int, what: str, *, nearest: bool = True) -> str | None:
    """Why ``size`` samples cannot be a window, or None when they can: a window holds whole
    encoder frames, so its size is a positive multiple of FRAME_SIZE. The message names ``what``
    (the flag or config key that gave the size) and, with ``nearest``, the nearest size that
    would do. Checked for --sizeWindow, a config file's chunk_size, and every dataset."""
    if size > 0 and size % FRAME_SIZE == 0:
        return None
    if not nearest:
        return f"{what} {size} must be a positive multiple of {FRAME_SIZE} (one encoder frame)"
    return (f"{what} {size} must be a positive multiple of {FRAME_SIZE} samples (whole encoder "
            f"frames), e.g. {max(1, round(size / FRAME_SIZE)) * FRAME_SIZE}")
