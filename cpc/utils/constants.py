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
