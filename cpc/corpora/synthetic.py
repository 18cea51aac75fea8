"""Generate a small phone-aligned speech corpus in LibriSpeech layout with espeak-ng, offline.

Tests, the demo and users without data train and evaluate on it. Sentences come from a built-in
grammar, speakers differ by accent, voice variant, pitch, pitch range and rate, and the phone
alignment comes from espeak-ng's own phoneme events, so it is exact. Output in OUT:

    <spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac     16 kHz mono PCM_16
    <spk>/<chapter>/<spk>-<chapter>.trans.txt          "<stem> UPPERCASE TEXT" lines
    train_split.txt, val_split.txt                     one stem per line; every speaker in both
    converted_aligned_phones.txt                       "<stem> id id ..." one id per 10 ms frame
    phones.txt                                         "<id> <symbol>", 0 = silence
    speakers.txt                                       voice settings of every speaker
    corpus_info.json                                   parameters; written last, marks completion

The same parameters give a byte-identical corpus, whatever the number of workers.

    python -m cpc.corpora.synthetic OUT --speakers 20 --chapters 2 --utterances 10 --seed 0
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import multiprocessing
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from cpc.corpora.espeak import Voice, synthesize
from cpc.utils.cli import DefaultsHelpFormatter
from cpc.utils.signals import run_command
from cpc.utils.constants import FRAME_SIZE, SAMPLE_RATE
from cpc.utils.files import atomic_write_text

FORMAT_VERSION = 1  # bump whenever the same parameters would produce different files
ESPEAK_RATE = 22050
SILENCE = 0
VAL_FRACTION = 0.1
MAX_SPEAKERS = 9900  # speaker ids are distinct numbers in [100, 10000)

ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5")

# ARPAbet-like classes: silence plus 39 phones (the CMU dictionary set).
PHONE_CLASSES = (
    "SIL", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
    "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH",
    "UH", "UW", "V", "W", "Y", "Z", "ZH",
)

# Every espeak-ng English phoneme mnemonic the accents above produce (stress marks stripped),
# folded onto PHONE_CLASSES (a survey of ~10k generated utterances over all accents found these
# and no others). Allophones go to the nearest plain phone: flapped, dental and other /t/ variants
# to T, syllabic /l/ to L, reduced vowels to AH, Scottish r-coloured vowels to ER, voiceless "wh"
# to W, and the linking glide ";" between /i/ and a vowel to Y.
ESPEAK_TO_CLASS = {
    # pauses
    "_": "SIL", "_:": "SIL", "_!": "SIL",
    # vowels and diphthongs
    "a": "AE", "aa": "AE", "a#": "AH", "@": "AH", "@2": "AH", "V": "AH",
    "A:": "AA", "A@": "AA", "0": "AA", "O:": "AO", "O2": "AO", "O@": "AO", "o@": "AO",
    "E": "EH", "e@": "EH", "3": "ER", "3:": "ER", "IR": "ER", "VR": "ER",
    "I": "IH", "I2": "IH", "I#": "IH", "i@": "IH", "i@3": "IH", "i": "IY", "i:": "IY",
    "U": "UH", "U@": "UH", "u:": "UW", "oU": "OW", "eI": "EY", "OI": "OY",
    "aI": "AY", "aI2": "AY", "aI3": "AY", "aI@": "AY", "aU": "AW", "@L": "L",
    # consonants
    "p": "P", "b": "B", "t": "T", "t#": "T", "t2": "T", "t[": "T", "d": "D", "k": "K", "g": "G",
    "f": "F", "v": "V", "T": "TH", "D": "DH", "s": "S", "z": "Z", "S": "SH", "Z": "ZH",
    "h": "HH", "tS": "CH", "dZ": "JH", "m": "M", "n": "N", "N": "NG", "l": "L", "r": "R",
    "r-": "R", "w": "W", "w#": "W", "j": "Y", ";": "Y",
}
_STRESS_MARKS = "',"

# Built-in vocabulary for the sentence grammar: common words that espeak-ng pronounces reliably.
DETERMINERS = ("the", "a", "this", "that", "every", "one", "my", "your", "his", "her", "our",
               "their")
ADJECTIVES = (
    "old", "young", "small", "big", "red", "green", "blue", "yellow", "bright", "dark", "quiet",
    "loud", "happy", "sad", "tired", "clever", "gentle", "angry", "brave", "calm", "cold", "warm",
    "heavy", "tiny", "huge", "strange", "famous", "careful", "lazy", "busy", "empty", "golden",
    "silver", "wooden", "broken", "hungry", "friendly", "curious", "patient", "honest", "ancient",
    "narrow", "soft", "proud", "shy", "wild", "thirsty",
)
NOUNS = (
    "man", "woman", "child", "farmer", "teacher", "doctor", "sailor", "painter", "baker",
    "soldier", "king", "queen", "girl", "boy", "dog", "cat", "horse", "bird", "fox", "rabbit",
    "mouse", "lion", "river", "mountain", "garden", "forest", "village", "city", "house",
    "window", "door", "table", "chair", "book", "letter", "lamp", "basket", "apple", "orange",
    "bottle", "ship", "boat", "train", "wagon", "bridge", "road", "field", "island", "castle",
    "tower", "kitchen", "market", "song", "story", "picture", "flower", "stone", "candle",
    "blanket", "mirror", "pocket", "umbrella", "engine", "ocean", "valley", "treasure", "thief",
)
TRANSITIVE_VERBS = (
    "saw", "found", "carried", "painted", "watched", "followed", "opened", "closed", "cleaned",
    "built", "bought", "sold", "pushed", "pulled", "lifted", "dropped", "counted", "visited",
    "remembered", "forgot", "chased", "caught", "brought", "wanted", "touched", "moved",
    "washed", "fixed", "covered", "borrowed", "noticed", "described", "admired", "ignored",
    "discovered", "measured",
)
INTRANSITIVE_VERBS = (
    "slept", "walked", "waited", "danced", "laughed", "smiled", "sang", "jumped", "rested",
    "worked", "played", "wandered", "listened", "whispered", "shouted", "arrived", "stayed",
    "hurried", "paused", "sat", "stood", "ran", "swam", "climbed", "hid",
)
ADVERBS = (
    "slowly", "quickly", "quietly", "loudly", "carefully", "happily", "sadly", "gently",
    "suddenly", "often", "again", "today", "yesterday", "early", "later", "silently", "bravely",
    "patiently", "proudly", "eagerly",
)
PREPOSITIONS = ("in", "on", "under", "near", "behind", "beside", "across", "through", "over",
                "past", "around", "along", "inside", "toward", "above", "below", "beyond")
CONJUNCTIONS = ("and", "but", "while", "because", "after", "before", "when")

# Sentence templates: NP is a noun phrase, the other slots are single words. They span about
# 7-14 words, i.e. roughly 2.5-6 s of speech at the speaking rates used.
TEMPLATES = (
    "NP VT NP PREP NP",
    "NP VI ADV PREP NP",
    "ADV , NP VT NP PREP NP",
    "NP VI ADV , CONJ NP VT NP",
    "NP VT NP , CONJ NP VI PREP NP",
    "CONJ NP VI , NP VT NP ADV",
    "NP PREP NP VT NP ADV",
    "NP VT NP ADV , CONJ NP VI",
)
_WORD_SLOTS = {"VT": TRANSITIVE_VERBS, "VI": INTRANSITIVE_VERBS, "ADV": ADVERBS,
               "PREP": PREPOSITIONS, "CONJ": CONJUNCTIONS}


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: a LibriSpeech-like numeric id and the espeak-ng voice settings."""

    speaker_id: int
    accent: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int

    @property
    def gender(self) -> str:
        return "F" if self.variant.startswith("f") else "M"

    @property
    def voice(self) -> Voice:
        return Voice(f"{self.accent}+{self.variant}", rate=self.rate, pitch=self.pitch,
                     pitch_range=self.pitch_range)


@dataclass(frozen=True)
class Utterance:
    """Everything needed to render one file, fixed up front so workers cannot affect the result."""

    speaker: Speaker
    chapter_id: int
    index: int
    text: str
    lead_pad: int  # samples of silence before the speech, at SAMPLE_RATE
    trail_pad: int  # samples of silence after it
    noise_std: float  # of the added Gaussian noise, full scale = 1
    noise_seed: int
    voice_seed: int  # for espeak-ng's breath noise

    @property
    def stem(self) -> str:
        return f"{self.speaker.speaker_id}-{self.chapter_id}-{self.index:04d}"


@dataclass(frozen=True)
class Rendered:
    """What a worker reports back about a file it wrote."""

    stem: str
    n_samples: int
    labels: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class CorpusSummary:
    """What `generate_corpus` made (or found already made) in `out_dir`."""

    out_dir: Path
    n_speakers: int
    n_files: int
    total_seconds: float
    n_phones: int  # label classes, silence included
    wall_seconds: float
    reused: bool = False  # True: a complete corpus with these parameters was already there


# ----------------------------------------------------------------------------- pure functions


def make_sentence(rng: random.Random) -> str:
    """Draw one sentence from the grammar, capitalised and punctuated for espeak-ng."""
    words: list[str] = []
    for slot in rng.choice(TEMPLATES).split():
        if slot == "NP":
            noun_phrase = [rng.choice(ADJECTIVES)] if rng.random() < 0.7 else []
            noun_phrase.append(rng.choice(NOUNS))
            determiner = rng.choice(DETERMINERS)
            if determiner == "a" and noun_phrase[0][0] in "aeiou":
                determiner = "an"
            words += [determiner, *noun_phrase]
        elif slot == ",":
            words[-1] += ","
        else:
            words.append(rng.choice(_WORD_SLOTS[slot]))
    return " ".join(words).capitalize() + "."


def transcript(text: str) -> str:
    """LibriSpeech transcript form of a sentence: upper case, no punctuation."""
    return " ".join(word.strip(",.").upper() for word in text.split())


def make_speakers(n_speakers: int, rng: random.Random) -> list[Speaker]:
    """Distinct speakers sorted by id; an (accent, variant) pair repeats only once all are used."""
    ids = sorted(rng.sample(range(100, 100 + MAX_SPEAKERS), n_speakers))
    voices = list(itertools.product(ACCENTS, VARIANTS))
    rng.shuffle(voices)
    return [
        Speaker(speaker_id, *voices[i % len(voices)], pitch=rng.randint(25, 75),
                pitch_range=rng.randint(30, 90), rate=rng.randint(140, 195))
        for i, speaker_id in enumerate(ids)
    ]


def plan_corpus(n_speakers: int, n_chapters: int, n_utterances: int, seed: int
                ) -> list[Utterance]:
    """Decide every utterance of the corpus (text, voice, padding, noise) from the seed alone."""
    rng = random.Random(seed)
    speakers = make_speakers(n_speakers, rng)
    chapter_ids = rng.sample(range(1000, 1_000_000), n_speakers * n_chapters)
    plan = []
    for s, speaker in enumerate(speakers):
        for chapter_id in sorted(chapter_ids[s * n_chapters:(s + 1) * n_chapters]):
            for index in range(n_utterances):
                plan.append(Utterance(
                    speaker, chapter_id, index, make_sentence(rng),
                    lead_pad=rng.randint(int(0.15 * SAMPLE_RATE), int(0.4 * SAMPLE_RATE)),
                    trail_pad=rng.randint(int(0.15 * SAMPLE_RATE), int(0.4 * SAMPLE_RATE)),
                    noise_std=rng.uniform(3e-4, 2e-3), noise_seed=rng.getrandbits(64),
                    voice_seed=rng.getrandbits(31)))
    return plan


def collapse_phone(symbol: str) -> int:
    """Class id (index in PHONE_CLASSES) of an espeak-ng phoneme mnemonic, stress marks ignored."""
    plain = symbol.lstrip(_STRESS_MARKS)
    if plain not in ESPEAK_TO_CLASS:
        raise ValueError(f"espeak-ng phone {symbol!r} has no class in ESPEAK_TO_CLASS")
    return PHONE_CLASSES.index(ESPEAK_TO_CLASS[plain])


def to_target_rate(sample: int) -> int:
    """Position in the 16 kHz signal of a sample index of espeak-ng's 22050 Hz output."""
    return round(sample * SAMPLE_RATE / ESPEAK_RATE)


def phone_segments(phones: Sequence[tuple[int, str]], offset: int, speech_len: int
                   ) -> tuple[list[int], list[int]]:
    """Start samples and class ids at 16 kHz of espeak-ng phone events.

    `offset` is where the speech starts in the written file and `speech_len` its length there;
    a final silence segment covers everything after the speech.
    """
    starts = [offset + to_target_rate(sample) for sample, _ in phones] + [offset + speech_len]
    ids = [collapse_phone(symbol) for _, symbol in phones] + [SILENCE]
    return starts, ids


def frame_labels(starts: Sequence[int], ids: Sequence[int], n_samples: int,
                 hop: int = FRAME_SIZE) -> np.ndarray:
    """One class id per `hop` samples: frame i gets the segment holding sample hop*i + hop//2.

    Segment k spans [starts[k], starts[k+1]) (the last one runs to the end); samples before the
    first start are silence. `starts` must be non-decreasing; empty segments get no frame.
    """
    centres = np.arange(n_samples // hop) * hop + hop // 2
    segment = np.searchsorted(np.asarray(starts), centres, side="right") - 1
    labels = np.asarray(ids, dtype=np.int64)[np.maximum(segment, 0)]
    return np.where(segment >= 0, labels, SILENCE)


def finish_audio(speech: np.ndarray, utterance: Utterance) -> np.ndarray:
    """Pad float speech with silence, add the utterance's seeded noise and quantise to int16."""
    padded = np.concatenate([np.zeros(utterance.lead_pad), speech, np.zeros(utterance.trail_pad)])
    noise = np.random.default_rng(utterance.noise_seed).normal(0.0, utterance.noise_std,
                                                               padded.shape)
    return np.round(np.clip(padded + noise, -1.0, 1.0) * 32767).astype(np.int16)


def split_stems(stems: Sequence[str], rng: random.Random) -> tuple[list[str], list[str]]:
    """Train and val stems: per speaker ~VAL_FRACTION of the files in val, at least 1 in each."""
    by_speaker: dict[str, list[str]] = {}
    for stem in sorted(stems):
        by_speaker.setdefault(stem.split("-")[0], []).append(stem)
    train, val = [], []
    for speaker_stems in by_speaker.values():
        if len(speaker_stems) < 2:
            raise ValueError(f"speaker {speaker_stems[0].split('-')[0]} has only one file")
        shuffled = rng.sample(speaker_stems, len(speaker_stems))
        n_val = min(max(1, round(VAL_FRACTION * len(shuffled))), len(shuffled) - 1)
        val += shuffled[:n_val]
        train += shuffled[n_val:]
    return sorted(train), sorted(val)


# ------------------------------------------------------------------------------ rendering, I/O


@functools.cache
def _resampling_filter() -> np.ndarray:
    """resample_poly's default anti-aliasing filter for ESPEAK_RATE -> SAMPLE_RATE, designed once
    instead of once per utterance (that design took ~10% of the generation time)."""
    from scipy.signal import firwin  # scipy.signal takes seconds to import: only rendering needs it

    max_rate = max(SAMPLE_RATE, ESPEAK_RATE) // gcd(SAMPLE_RATE, ESPEAK_RATE)
    return firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def render(utterance: Utterance) -> tuple[np.ndarray, np.ndarray]:
    """Synthesise an utterance: 16 kHz int16 audio and its frame labels."""
    from scipy.signal import resample_poly

    synthesis = synthesize(utterance.text, utterance.speaker.voice, seed=utterance.voice_seed)
    if synthesis.sample_rate != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng produced {synthesis.sample_rate} Hz, not {ESPEAK_RATE}")
    factor = gcd(SAMPLE_RATE, ESPEAK_RATE)
    speech = resample_poly(synthesis.samples / 32768.0, SAMPLE_RATE // factor,
                           ESPEAK_RATE // factor, window=_resampling_filter())
    audio = finish_audio(speech, utterance)
    starts, ids = phone_segments(synthesis.phones, utterance.lead_pad, len(speech))
    return audio, frame_labels(starts, ids, len(audio))


def _render_to_file(utterance: Utterance, out_dir: Path) -> Rendered:
    audio, labels = render(utterance)
    chapter_dir = out_dir / str(utterance.speaker.speaker_id) / str(utterance.chapter_id)
    chapter_dir.mkdir(parents=True, exist_ok=True)
    sf.write(chapter_dir / f"{utterance.stem}.flac", audio, SAMPLE_RATE, subtype="PCM_16")
    return Rendered(utterance.stem, len(audio), tuple(int(x) for x in labels))


def _lines(rows: Sequence[str]) -> str:
    return "".join(f"{row}\n" for row in rows)


def _write_metadata(out_dir: Path, plan: Sequence[Utterance], rendered: Sequence[Rendered],
                    info: dict, seed: int) -> None:
    """Write every text file of the corpus; corpus_info.json last, as the completion mark."""
    chapters: dict[tuple[int, int], list[Utterance]] = {}
    for utterance in plan:
        chapters.setdefault((utterance.speaker.speaker_id, utterance.chapter_id),
                            []).append(utterance)
    for (speaker_id, chapter_id), utterances in chapters.items():
        atomic_write_text(out_dir / str(speaker_id) / str(chapter_id)
                      / f"{speaker_id}-{chapter_id}.trans.txt",
                      _lines(sorted(f"{u.stem} {transcript(u.text)}" for u in utterances)))
    speakers = sorted({u.speaker for u in plan}, key=lambda s: s.speaker_id)
    atomic_write_text(out_dir / "speakers.txt", _lines(
        ["speaker accent variant pitch range rate gender"]
        + [f"{s.speaker_id} {s.accent} {s.variant} {s.pitch} {s.pitch_range} {s.rate} {s.gender}"
           for s in speakers]))
    atomic_write_text(out_dir / "phones.txt",
                  _lines([f"{i} {symbol}" for i, symbol in enumerate(PHONE_CLASSES)]))
    atomic_write_text(out_dir / "converted_aligned_phones.txt", _lines(sorted(
        f"{r.stem} {' '.join(map(str, r.labels))}" for r in rendered)))
    train, val = split_stems([r.stem for r in rendered], random.Random(seed))
    atomic_write_text(out_dir / "train_split.txt", _lines(train))
    atomic_write_text(out_dir / "val_split.txt", _lines(val))
    atomic_write_text(out_dir / "corpus_info.json", json.dumps(info, indent=2, sort_keys=True) + "\n")


def _existing_corpus(out_dir: Path, parameters: dict) -> dict | None:
    """The stored info of a complete corpus with `parameters` in out_dir; None if out_dir is
    missing or empty; an error for anything else, so that no unrelated data gets mixed in."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return None
    info_path = out_dir / "corpus_info.json"
    if not info_path.is_file():
        raise FileExistsError(
            f"{out_dir} is not empty and holds no complete synthetic corpus (an interrupted "
            "run?); remove it or choose another output directory")
    info = json.loads(info_path.read_text())
    if info.get("parameters") != parameters:
        raise FileExistsError(
            f"{out_dir} holds a synthetic corpus made with other parameters "
            f"({json.dumps(info.get('parameters'), sort_keys=True)}, not "
            f"{json.dumps(parameters, sort_keys=True)}); remove it or choose another output "
            "directory")
    return info


def generate_corpus(out_dir: str | os.PathLike, n_speakers: int, n_chapters: int,
                    n_utterances: int, seed: int = 0, workers: int | None = None
                    ) -> CorpusSummary:
    """Generate the corpus in out_dir (n_utterances per chapter), or reuse an identical one.

    workers: synthesis processes (None: os.cpu_count()); the output does not depend on it.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    for name, value in (("n_speakers", n_speakers), ("n_chapters", n_chapters),
                        ("n_utterances", n_utterances)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if n_speakers > MAX_SPEAKERS:
        raise ValueError(f"n_speakers must be at most {MAX_SPEAKERS}, got {n_speakers}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be positive or None, got {workers}")
    if n_chapters * n_utterances < 2:
        raise ValueError("each speaker needs at least 2 files (one train, one val): "
                         f"n_chapters * n_utterances is {n_chapters * n_utterances}")
    parameters = {"n_speakers": n_speakers, "n_chapters": n_chapters,
                  "n_utterances": n_utterances, "seed": seed, "format_version": FORMAT_VERSION}

    info = _existing_corpus(out_dir, parameters)
    if info is not None:
        print(f"{out_dir} already holds this corpus; not regenerating it", file=sys.stderr)
        return CorpusSummary(out_dir=out_dir, n_speakers=n_speakers, n_files=info["n_files"],
                             total_seconds=info["total_seconds"], n_phones=info["n_phones"],
                             wall_seconds=time.perf_counter() - start, reused=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_corpus(n_speakers, n_chapters, n_utterances, seed)
    workers = min(workers or os.cpu_count() or 1, len(plan))
    job = functools.partial(_render_to_file, out_dir=out_dir)
    with contextlib.ExitStack() as stack:
        if workers == 1:
            results = map(job, plan)
        else:
            # spawn, not fork: the caller may run threads (torch) that a fork would break.
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(
                workers, initializer=_leave_interrupts_to_the_parent))
            results = pool.imap(job, plan, chunksize=max(1, len(plan) // (8 * workers)))
        rendered = list(tqdm(results, total=len(plan), unit="utt", desc="synthesising",
                             file=sys.stderr))
    total_seconds = sum(r.n_samples for r in rendered) / SAMPLE_RATE
    info = {"parameters": parameters, "n_files": len(rendered),
            "total_seconds": round(total_seconds, 6), "n_phones": len(PHONE_CLASSES),
            "sample_rate": SAMPLE_RATE, "frame_hop": FRAME_SIZE}
    _write_metadata(out_dir, plan, rendered, info, seed)
    return CorpusSummary(out_dir=out_dir, n_speakers=n_speakers, n_files=len(rendered),
                         total_seconds=total_seconds, n_phones=len(PHONE_CLASSES),
                         wall_seconds=time.perf_counter() - start)


def _leave_interrupts_to_the_parent() -> None:
    """In a synthesis worker: ignore Ctrl-C, which the terminal sends to every process of the
    command; the parent stops the pool and prints the one line (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ------------------------------------------------------------------------------------ command


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Command line: generate a corpus and print a one-line summary."""
    parser = argparse.ArgumentParser(
        prog="cpc-make-corpus", formatter_class=DefaultsHelpFormatter,
        description="Generate a phone-aligned LibriSpeech-format speech corpus with espeak-ng.")
    parser.add_argument("out", type=Path, help="output directory: new, empty, or holding this same corpus")
    parser.add_argument("--speakers", type=_positive_int, required=True,
                        help="number of speakers (distinct voices)")
    parser.add_argument("--chapters", type=_positive_int, required=True,
                        help="chapters per speaker")
    parser.add_argument("--utterances", type=_positive_int, required=True,
                        help="utterances per chapter")
    parser.add_argument("--seed", type=int, default=0,
                        help="the same seed gives a byte-identical corpus")
    parser.add_argument("--workers", type=_positive_int, default=None,
                        help="synthesis processes; without it, one per CPU")
    args = parser.parse_args(argv)
    if args.speakers > MAX_SPEAKERS:
        parser.error(f"argument --speakers: at most {MAX_SPEAKERS}")
    if args.chapters * args.utterances < 2:
        parser.error("arguments --chapters, --utterances: each speaker needs at least 2 files "
                     "(one for train, one for val)")
    try:
        summary = generate_corpus(args.out, args.speakers, args.chapters, args.utterances,
                                  seed=args.seed, workers=args.workers)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    speed = ("already there" if summary.reused else f"made in {summary.wall_seconds:.1f} s "
             f"({summary.total_seconds / summary.wall_seconds:.0f} s of audio per second)")
    print(f"{summary.out_dir}: {summary.n_speakers} speakers, {summary.n_files} files, "
          f"{summary.total_seconds / 60:.1f} min of audio, {summary.n_phones} phone classes; "
          f"{speed}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
