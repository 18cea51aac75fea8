"""Phone-aligned speech synthesis through a small ctypes binding to libespeak-ng.

The library and its data come from the `espeakng-loader` wheel, so no system package is needed.

libespeak-ng keeps synthesis state in C globals (pitch-flutter phase, gain control, echo buffer),
so the same text synthesised twice in one process gives different samples, and it seeds the
breath noise of some voice variants (f2, f3, f5) from the clock. To make every call depend only on
its arguments, `synthesize` loads a fresh copy of the library (dlopen), seeds its random numbers,
uses it for one utterance and unloads it again (dlclose); that costs about 3 ms.
"""
from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

import _ctypes
import espeakng_loader
import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_END = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_PARAM_RANGE = 4

_lock = threading.Lock()  # the library is process-global: one synthesis at a time


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: `name` such as "en-us+m1" (language + variant), and prosody settings."""

    name: str
    rate: int = 175  # words per minute (espeak-ng accepts 80-450)
    pitch: int = 50  # 0-99, relative to the variant's own pitch range
    pitch_range: int = 50  # 0-99, intonation excursion; 0 is monotone


@dataclass(frozen=True)
class Synthesis:
    """Synthesised audio with the start sample and espeak-ng mnemonic of every phone, in order."""

    samples: np.ndarray  # int16, mono
    sample_rate: int
    phones: list[tuple[int, str]]


def synthesize(text: str, voice: Voice, seed: int = 0) -> Synthesis:
    """Synthesise `text` with `voice`; the result depends only on the arguments.

    `seed` drives espeak-ng's own noise generator (breathy voice variants)."""
    with _lock:
        lib = _load_fresh_library()
        try:
            return _synthesize_with(lib, text, voice, seed)
        finally:
            lib.espeak_Terminate()
            _ctypes.dlclose(lib._handle)


def _load_fresh_library() -> ctypes.CDLL:
    path = espeakng_loader.get_library_path()
    try:
        ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        pass  # not loaded yet: the dlopen below gets fresh C globals
    else:
        raise RuntimeError(
            f"{path} is already loaded in this process by other code; espeak-ng output would "
            "depend on that code's earlier use of it"
        )
    lib = ctypes.CDLL(path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]
    return lib


def _synthesize_with(lib: ctypes.CDLL, text: str, voice: Voice, seed: int) -> Synthesis:
    data_path = espeakng_loader.get_data_path().encode()
    sample_rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_PHONEME_EVENTS
    )
    if sample_rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed with data at {data_path.decode()}")
    lib.espeak_ng_SetRandSeed(seed)
    if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
        raise ValueError(f"espeak-ng has no voice named {voice.name!r}")
    for param, value in ((_PARAM_RATE, voice.rate), (_PARAM_PITCH, voice.pitch),
                         (_PARAM_RANGE, voice.pitch_range)):
        if lib.espeak_SetParameter(param, value, 0) != 0:
            raise ValueError(f"espeak-ng rejected parameter {param}={value}")

    chunks: list[np.ndarray] = []
    phones: list[tuple[int, str]] = []

    def on_audio(wav, n_samples, events):
        if n_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_END:
            if events[i].type == _EVENT_PHONEME:
                phones.append((events[i].sample, events[i].id.string.decode()))
            i += 1
        return 0

    callback = _SynthCallback(on_audio)  # kept referenced until synthesis is over
    lib.espeak_SetSynthCallback(callback)
    encoded = text.encode()
    status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                              None, None)
    if status != 0 or lib.espeak_Synchronize() != 0:
        raise RuntimeError(f"espeak_Synth failed (status {status}) on {text!r}")
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return Synthesis(samples=samples.astype(np.int16, copy=False), sample_rate=sample_rate,
                     phones=phones)
