"""The espeak-ng corpus generator: layout, labels, splits, determinism and the phone mapping."""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cpc.corpora import synthetic as sc
from cpc.corpora.espeak import Voice, synthesize

SPEAKERS, CHAPTERS, UTTERANCES, SEED = 3, 1, 3, 7


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> sc.CorpusSummary:
    return sc.generate_corpus(tmp_path_factory.mktemp("corpus") / "out", SPEAKERS, CHAPTERS,
                              UTTERANCES, seed=SEED, workers=2)


def read_labels(root: Path) -> dict[str, list[int]]:
    lines = (root / "converted_aligned_phones.txt").read_text().splitlines()
    rows = (line.split() for line in lines)
    return {stem: [int(x) for x in ids] for stem, *ids in rows}


def audio_files(root: Path) -> dict[str, Path]:
    return {path.stem: path for path in root.glob("*/*/*.flac")}


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_summary(corpus):
    assert corpus.n_speakers == SPEAKERS
    assert corpus.n_files == SPEAKERS * CHAPTERS * UTTERANCES == len(audio_files(corpus.out_dir))
    assert corpus.n_phones == len(sc.PHONE_CLASSES) == 40
    assert not corpus.reused and corpus.wall_seconds > 0
    seconds = sum(sf.info(p).frames for p in audio_files(corpus.out_dir).values()) / 16000
    assert corpus.total_seconds == pytest.approx(seconds)


def test_audio_is_16k_mono_pcm16_and_fits_a_window(corpus):
    for path in audio_files(corpus.out_dir).values():
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames > 1.5 * 16000  # room for a 1.28 s training window


def test_one_label_per_10ms_frame(corpus):
    labels = read_labels(corpus.out_dir)
    files = audio_files(corpus.out_dir)
    assert labels.keys() == files.keys()
    for stem, path in files.items():
        assert len(labels[stem]) == sf.info(path).frames // 160


def test_utterances_start_and_end_with_silence(corpus):
    for stem, ids in read_labels(corpus.out_dir).items():
        assert ids[0] == ids[-1] == sc.SILENCE, stem
        assert any(ids), stem


def test_phone_ids_within_inventory(corpus):
    rows = [line.split() for line in (corpus.out_dir / "phones.txt").read_text().splitlines()]
    assert [int(i) for i, _ in rows] == list(range(40))
    assert [symbol for _, symbol in rows] == list(sc.PHONE_CLASSES) and rows[0][1] == "SIL"
    used = {i for ids in read_labels(corpus.out_dir).values() for i in ids}
    assert used <= set(range(40)) and len(used) > 15


def test_speakers_match_tree_and_transcripts(corpus):
    root = corpus.out_dir
    header, *rows = [line.split() for line in (root / "speakers.txt").read_text().splitlines()]
    assert header == ["speaker", "accent", "variant", "pitch", "range", "rate", "gender"]
    speaker_ids = [row[0] for row in rows]
    assert sorted(speaker_ids) == sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(set(speaker_ids)) == SPEAKERS
    for speaker, accent, variant, pitch, pitch_range, rate, gender in rows:
        assert accent in sc.ACCENTS and variant in sc.VARIANTS
        assert gender == ("F" if variant.startswith("f") else "M")
        assert 0 <= int(pitch) <= 99 and 0 <= int(pitch_range) <= 99 and 80 <= int(rate) <= 450
        chapters = list((root / speaker).iterdir())
        assert len(chapters) == CHAPTERS
        for chapter in chapters:
            trans = chapter / f"{speaker}-{chapter.name}.trans.txt"
            lines = trans.read_text().splitlines()
            assert lines == sorted(lines)
            stems = sorted(p.stem for p in chapter.glob("*.flac"))
            assert [line.split()[0] for line in lines] == stems
            for line in lines:
                stem, text = line.split(" ", 1)
                assert stem.split("-")[:2] == [speaker, chapter.name]
                assert text == text.upper() and text.replace(" ", "").isalpha()


def test_splits_cover_all_stems_and_every_speaker(corpus):
    root = corpus.out_dir
    train = (root / "train_split.txt").read_text().split()
    val = (root / "val_split.txt").read_text().split()
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(audio_files(root))
    speakers = {stem.split("-")[0] for stem in train + val}
    assert {s.split("-")[0] for s in train} == {s.split("-")[0] for s in val} == speakers


def test_same_seed_gives_identical_bytes_whatever_the_workers(corpus, tmp_path):
    again = sc.generate_corpus(tmp_path / "again", SPEAKERS, CHAPTERS, UTTERANCES, seed=SEED,
                               workers=1)
    assert all_files(again.out_dir) == all_files(corpus.out_dir)


def test_different_seed_gives_a_different_corpus(corpus, tmp_path):
    assert sc.main([str(tmp_path / "other"), "--speakers", str(SPEAKERS), "--chapters",
                    str(CHAPTERS), "--utterances", str(UTTERANCES), "--seed", str(SEED + 1),
                    "--workers", "2"]) == 0
    other = all_files(tmp_path / "other")
    assert other.keys() != all_files(corpus.out_dir).keys()
    assert (tmp_path / "other" / "corpus_info.json").is_file()


def test_existing_corpus_is_reused_and_other_content_refused(corpus, tmp_path):
    root = corpus.out_dir
    before = all_files(root)
    again = sc.generate_corpus(root, SPEAKERS, CHAPTERS, UTTERANCES, seed=SEED)
    assert again.reused and again.n_files == corpus.n_files
    assert again.total_seconds == pytest.approx(corpus.total_seconds)
    assert all_files(root) == before
    with pytest.raises(FileExistsError, match="other parameters"):
        sc.generate_corpus(root, SPEAKERS, CHAPTERS, UTTERANCES, seed=SEED + 1)
    (tmp_path / "stray.txt").write_text("not a corpus")
    with pytest.raises(FileExistsError, match=re.escape(str(tmp_path))):
        sc.generate_corpus(tmp_path, SPEAKERS, CHAPTERS, UTTERANCES, seed=SEED)


@pytest.mark.parametrize("flag", ["--speakers", "--chapters", "--utterances", "--workers"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_cli_rejects_bad_counts_naming_the_flag(flag, value, tmp_path, capsys):
    argv = {"--speakers": "2", "--chapters": "1", "--utterances": "2", "--workers": "1"}
    argv[flag] = value
    with pytest.raises(SystemExit) as exit_info:
        sc.main([str(tmp_path / "out"), *[x for item in argv.items() for x in item]])
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_rejects_a_single_file_per_speaker(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sc.main([str(tmp_path / "out"), "--speakers", "2", "--chapters", "1", "--utterances", "1"])
    assert "--utterances" in capsys.readouterr().err


def test_frame_labels_hand_example():
    # Segments: [100, 300) id 5, [300, 300) id 7 (empty), [300, 500) id 9, [500, ...) silence.
    starts, ids = [100, 300, 300, 500], [5, 7, 9, 0]
    # Frame centres are 80, 240, 400, 560, 720: before the first start, in 5, in 9, silence x2.
    assert sc.frame_labels(starts, ids, 800, hop=160).tolist() == [0, 5, 9, 0, 0]
    assert sc.frame_labels(starts, ids, 799, hop=160).tolist() == [0, 5, 9, 0]
    assert sc.frame_labels(starts, ids, 159, hop=160).tolist() == []


def test_phone_segments_rescale_and_offset():
    phones = [(0, "_"), (441, "'a"), (882, "t#"), (1323, ",i:")]
    starts, ids = sc.phone_segments(phones, offset=1000, speech_len=1100)
    assert starts == [1000, 1320, 1640, 1960, 2100]
    names = [sc.PHONE_CLASSES[i] for i in ids]
    assert names == ["SIL", "AE", "T", "IY", "SIL"]


def test_collapse_phone_maps_stress_and_rejects_unknown_symbols():
    assert sc.collapse_phone("'aI") == sc.collapse_phone(",aI") == sc.PHONE_CLASSES.index("AY")
    assert sc.collapse_phone("_:") == sc.SILENCE
    assert set(sc.ESPEAK_TO_CLASS.values()) == set(sc.PHONE_CLASSES)
    with pytest.raises(ValueError, match="no class"):
        sc.collapse_phone("Q9")


def test_allophone_collapse_covers_every_symbol_produced():
    """Every word of the grammar, alone and in sentences, in every accent, maps to a class."""
    vocabulary = (sc.DETERMINERS + ("an",) + sc.ADJECTIVES + sc.NOUNS + sc.TRANSITIVE_VERBS
                  + sc.INTRANSITIVE_VERBS + sc.ADVERBS + sc.PREPOSITIONS + sc.CONJUNCTIONS)
    rng = random.Random(0)
    sentences = " ".join(sc.make_sentence(rng) for _ in range(100))
    symbols = set()
    for accent in sc.ACCENTS:
        for text in (". ".join(vocabulary) + ".", sentences):
            symbols |= {symbol for _, symbol in synthesize(text, Voice(accent)).phones}
    unmapped = {s for s in symbols if s.lstrip(sc._STRESS_MARKS) not in sc.ESPEAK_TO_CLASS}
    assert not unmapped
    for symbol in symbols:
        sc.collapse_phone(symbol)


def test_sentences_are_deterministic_and_transcribed():
    first = [sc.make_sentence(random.Random(3)) for _ in range(2)]
    assert first[0] == first[1]
    assert sc.transcript("Slowly, an old dog sat.") == "SLOWLY AN OLD DOG SAT"
    words = sc.transcript(sc.make_sentence(random.Random(4))).split()
    assert 6 <= len(words) <= 16


def test_plan_is_seeded():
    plan = sc.plan_corpus(4, 2, 3, seed=1)
    assert plan == sc.plan_corpus(4, 2, 3, seed=1) != sc.plan_corpus(4, 2, 3, seed=2)
    assert len({u.stem for u in plan}) == 24
    assert len({u.speaker.speaker_id for u in plan}) == 4
    assert len({u.chapter_id for u in plan}) == 8


def test_synthesis_is_reproducible_in_one_process():
    voice = Voice("en-us+f3", rate=160, pitch=40, pitch_range=70)  # f3 has breath noise
    first, second = (synthesize("A small red cat walked slowly.", voice, seed=5) for _ in range(2))
    assert np.array_equal(first.samples, second.samples) and first.phones == second.phones
    other = synthesize("A small red cat walked slowly.", voice, seed=6)
    assert not np.array_equal(first.samples, other.samples)
