"""The data pipeline: listing, splits, labels, packs, samplers, rank shares and batches."""
from __future__ import annotations

import random

import numpy as np
import pytest
import soundfile as sf
import torch

from cpc.data import listing
from cpc.data.audio import read_audio
from cpc.data.labels import attach_phone_labels, parseSeqLabels
from cpc.data.listing import findAllSeqs
from cpc.data.packs import AudioBatchData
from cpc.data.plan import (count_batches, make_batches, mix_seed, plan_packs, random_offset,
                           rank_shares)
from cpc.data.splits import filterSeqs, split_train_val
from cpc.utils.constants import FRAME_SIZE, SAMPLING_TYPES
from cpc.utils.errors import DataError
from tests.conftest import ramp_signal, write_tree

S = 1600  # a small window: 10 frames


@pytest.fixture
def tree(tmp_path):
    layout = {"11": [5000, 7000, 3300], "22": [9000, 4100], "33": [2000, 6400, 6400, 1700]}
    stems = write_tree(tmp_path / "db", layout)
    return tmp_path / "db", layout, stems


# ---------------------------------------------------------------- listing
def test_findAllSeqs_speakers_lengths_and_order(tree):
    root, layout, stems = tree
    seqs, speakers = findAllSeqs(root, ".flac")
    assert speakers == ["11", "22", "33"]
    assert [s.stem for s in seqs] == sorted(stems)
    by_stem = {s.stem: s for s in seqs}
    for speaker, lengths in layout.items():
        for i, n in enumerate(lengths):
            seq = by_stem[f"{speaker}-0-{i:04d}"]
            assert seq.n_samples == n
            assert speakers[seq.speaker] == speaker
            assert seq.path == f"{speaker}/0/{speaker}-0-{i:04d}.flac"


def test_listing_cache_follows_the_tree(tree, monkeypatch):
    root, _, _ = tree
    findAllSeqs(root, ".flac")
    probed = []
    real_probe = listing._probe
    monkeypatch.setattr(listing, "_probe", lambda p: probed.append(p.name) or real_probe(p))
    findAllSeqs(root, ".flac")
    assert probed == []  # everything came from the cache
    sf.write(root / "22" / "0" / "22-0-0009.flac", ramp_signal(9, 1234), 16000)
    sf.write(root / "11" / "0" / "11-0-0000.flac", ramp_signal(0, 4321), 16000)  # changed size
    seqs, _ = findAllSeqs(root, ".flac")
    assert sorted(probed) == ["11-0-0000.flac", "22-0-0009.flac"]
    assert {s.stem: s.n_samples for s in seqs}["11-0-0000"] == 4321
    probed.clear()
    findAllSeqs(root, ".flac", loadCache=False)  # --ignore_cache
    assert len(probed) == 10


def test_cache_is_json_not_pickle(tree):
    root, _, _ = tree
    findAllSeqs(root, ".flac")
    files = list(listing.cache_dir().glob("listing_*.json"))
    assert len(files) == 1
    import json
    assert json.loads(files[0].read_text())["version"] == listing._CACHE_VERSION


@pytest.mark.parametrize("case", ["missing", "empty", "wrong_ext"])
def test_listing_errors_name_the_path(tmp_path, case):
    root = tmp_path / "db"
    if case != "missing":
        root.mkdir()
    if case == "wrong_ext":
        write_tree(root, {"1": [2000]}, extension=".wav")
    with pytest.raises(DataError) as err:
        findAllSeqs(root, ".flac")
    assert str(root) in str(err.value)
    if case == "wrong_ext":
        assert ".wav" in str(err.value)


def test_unreadable_8khz_and_empty_files_are_named(tmp_path):
    root = tmp_path / "db"
    write_tree(root, {"1": [2000]})
    bad = root / "1" / "0" / "1-0-0009.flac"
    bad.write_bytes(b"not a flac file at all")
    with pytest.raises(DataError, match="1-0-0009.flac"):
        findAllSeqs(root, ".flac")
    bad.unlink()
    sf.write(bad, ramp_signal(0, 800), 8000)
    with pytest.raises(DataError, match=r"1-0-0009\.flac is sampled at 8000 Hz"):
        findAllSeqs(root, ".flac")
    bad.write_bytes(b"")
    with pytest.raises(DataError, match=r"1-0-0009\.flac is empty"):
        findAllSeqs(root, ".flac")
    wav_root = tmp_path / "wavs"
    write_tree(wav_root, {"1": [2000]}, extension=".wav")
    sf.write(wav_root / "1" / "0" / "1-0-0009.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DataError, match=r"1-0-0009\.wav is empty \(0 samples\)"):
        findAllSeqs(wav_root, ".wav")


def test_file_outside_speaker_dir_is_refused(tmp_path):
    root = tmp_path / "db"
    root.mkdir()
    sf.write(root / "loose.flac", ramp_signal(0, 2000), 16000)
    with pytest.raises(DataError, match="speaker directory"):
        findAllSeqs(root, ".flac")


def test_stereo_is_averaged_with_a_warning(tmp_path):
    path = tmp_path / "st.flac"
    left = ramp_signal(1, 3000)
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000)
    with pytest.warns(UserWarning, match="2 channels"):
        mono = read_audio(path)
    np.testing.assert_allclose(mono, left / 2, atol=1 / 32768)


# ---------------------------------------------------------------- splits
def test_filterSeqs_keeps_listed_and_reports_missing(tree, tmp_path):
    root, _, stems = tree
    seqs, _ = findAllSeqs(root, ".flac")
    split = tmp_path / "split.txt"
    split.write_text("\n".join(stems[:3] + ["99-0-0000"]) + "\n\n")
    with pytest.warns(UserWarning, match="1 of 4 stems"):
        kept = filterSeqs(split, seqs)
    assert [s.stem for s in kept] == stems[:3]


def test_filterSeqs_errors(tree, tmp_path):
    root, _, _ = tree
    seqs, _ = findAllSeqs(root, ".flac")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty"):
        filterSeqs(empty, seqs)
    other = tmp_path / "other.txt"
    other.write_text("a-b-c\nd-e-f\n")
    with pytest.raises(DataError, match="matches no file"):
        filterSeqs(other, seqs)
    with pytest.raises(DataError, match="does not exist"):
        filterSeqs(tmp_path / "nope.txt", seqs)


def test_seeded_split(tree):
    root, _, _ = tree
    seqs, _ = findAllSeqs(root, ".flac")
    train, val = split_train_val(seqs, 0.2, seed=3)
    assert len(val) == 2 and len(train) == 7
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(seqs)
    assert split_train_val(seqs, 0.2, seed=3) == (train, val)
    assert split_train_val(seqs, 0.2, seed=4) != (train, val)


# ---------------------------------------------------------------- phone labels
def test_parse_labels(tmp_path):
    path = tmp_path / "phones.txt"
    path.write_text("a-1-1 0 3 3 2\n\nb-1-1 1 1\n")
    labels, n_phones = parseSeqLabels(path)
    assert n_phones == 4
    assert labels["a-1-1"].tolist() == [0, 3, 3, 2]
    path.write_text("a-1-1 0 3 x\n")
    with pytest.raises(DataError, match=r"phones.txt:1"):
        parseSeqLabels(path)


def test_attach_labels_trims_and_checks(tree):
    root, _, _ = tree
    seqs, _ = findAllSeqs(root, ".flac")
    by_stem = {s.stem: s for s in seqs}
    frames = {stem: s.n_samples // FRAME_SIZE for stem, s in by_stem.items()}
    labels = {stem: np.zeros(n, dtype=np.int32) for stem, n in frames.items()}
    labels["11-0-0000"] = np.zeros(frames["11-0-0000"] + 1, dtype=np.int32)  # one frame more
    labels["22-0-0000"] = np.zeros(frames["22-0-0000"] - 1, dtype=np.int32)  # one frame less
    del labels["33-0-0003"]
    with pytest.warns(UserWarning, match="1 of 9 files have no phone labels"):
        kept = attach_phone_labels(seqs, labels, root)
    kept_by = {s.stem: s for s in kept}
    assert "33-0-0003" not in kept_by
    assert kept_by["11-0-0000"].n_samples == frames["11-0-0000"] * FRAME_SIZE
    assert kept_by["22-0-0000"].n_samples == (frames["22-0-0000"] - 1) * FRAME_SIZE
    labels["11-0-0000"] = np.zeros(frames["11-0-0000"] + 3, dtype=np.int32)
    with pytest.raises(DataError, match="11-0-0000.flac"):
        attach_phone_labels(seqs, labels, root)
    with pytest.raises(DataError, match="none of the"):
        attach_phone_labels(seqs, {}, root)


# ---------------------------------------------------------------- samplers
def _geometry(tree, max_size=10**9, seed=0):
    root, _, _ = tree
    seqs, _ = findAllSeqs(root, ".flac")
    return seqs, plan_packs(range(len(seqs)), [s.n_samples for s in seqs],
                            [s.speaker for s in seqs], [s.path for s in seqs], max_size,
                            random.Random(seed))


def test_packs_bound_size_and_sort_by_speaker(tree):
    seqs, packs = _geometry(tree, max_size=15000)
    assert len(packs) > 1
    assert sorted(i for p in packs for i in p.seq_ids) == list(range(len(seqs)))
    for pack in packs:
        assert pack.n_samples <= 15000 or len(pack.seq_ids) == 1
        assert list(pack.seq_speakers) == sorted(pack.seq_speakers)


@pytest.mark.parametrize("offset", [0, 320, 800])
def test_samespeaker_batches_are_single_speaker(tree, offset):
    seqs, (pack,) = _geometry(tree)
    batches = make_batches(pack, "samespeaker", S, 3, offset, random.Random(1))
    bounds = pack.speaker_bounds()
    expected = sum(max(0, (b - a - offset) // S) for a, b in zip(bounds[:-1], bounds[1:]))
    assert sum(len(b) for b in batches) == expected
    for batch in batches:
        assert 1 <= len(batch) <= 3
        runs = {int(np.searchsorted(bounds, s, side="right")) for s in batch}
        assert len(runs) == 1
        run = runs.pop()
        assert all(s + S <= bounds[run] for s in batch)  # window ends inside the run
        positions = np.searchsorted(pack.seq_starts, batch, side="right") - 1
        assert len(set(pack.seq_speakers[positions])) == 1


def test_samesequence_windows_stay_inside_one_file(tree):
    _, (pack,) = _geometry(tree)
    batches = make_batches(pack, "samesequence", S, 2, 160, random.Random(0))
    for batch in batches:
        files = np.searchsorted(pack.seq_starts, batch, side="right") - 1
        assert len(set(files)) == 1
        assert all(s + S <= pack.seq_starts[files[0] + 1] for s in batch)
    n_windows = sum(max(0, (b - a - 160) // S)
                    for a, b in zip(pack.seq_starts[:-1], pack.seq_starts[1:]))
    assert sum(map(len, batches)) == n_windows


def test_uniform_covers_each_window_once_in_full_batches(tree):
    _, (pack,) = _geometry(tree)
    batches = make_batches(pack, "uniform", S, 4, 480, random.Random(0))
    starts = sorted(s for b in batches for s in b)
    n_windows = (pack.n_samples - 480) // S
    assert all(len(b) == 4 for b in batches)
    assert len(starts) == n_windows // 4 * 4 and len(set(starts)) == len(starts)
    assert set(starts) <= {480 + k * S for k in range(n_windows)}


def test_sequential_is_contiguous(tree):
    _, (pack,) = _geometry(tree)
    batches = make_batches(pack, "sequential", S, 4, 0, random.Random(0))
    flat = [s for b in batches for s in b]
    assert flat == [k * S for k in range(pack.n_samples // S)]
    assert all(len(b) == 4 for b in batches[:-1])


def test_unknown_sampler_is_refused(tree):
    root, _, _ = tree
    seqs, speakers = findAllSeqs(root, ".flac")
    data = AudioBatchData(root, S, seqs, None, len(speakers))
    with pytest.raises(DataError, match="--samplingType 'random'"):
        data.getDataLoader(2, "random")


def test_loader_flags_are_named(tree):
    """randomOffset and frame_provenance are keyword-only: a bare True/False says nothing."""
    root, _, _ = tree
    seqs, speakers = findAllSeqs(root, ".flac")
    data = AudioBatchData(root, S, seqs, None, len(speakers))
    with pytest.raises(TypeError):
        data.getDataLoader(2, "sequential", False)
    assert data.getDataLoader(2, "sequential", randomOffset=False).random_offset is False
    data.close()


# ---------------------------------------------------------------- batches
def _dataset(tree, labels=None, **kw):
    root, _, _ = tree
    seqs, speakers = findAllSeqs(root, ".flac")
    if labels is not None:
        seqs = attach_phone_labels(seqs, labels, root)
    return AudioBatchData(root, S, seqs, labels, len(speakers), n_process_loader=2, **kw)


@pytest.mark.parametrize("sampling", SAMPLING_TYPES)
def test_batches_hold_the_right_audio_and_labels(tree, sampling):
    root, _, _ = tree
    seqs, _ = findAllSeqs(root, ".flac")
    labels = {s.stem: (np.arange(s.n_samples // FRAME_SIZE) + 100 * i).astype(np.int32)
              for i, s in enumerate(seqs)}
    data = _dataset(tree, labels)
    files = {i: read_audio(root / s.path) for i, s in enumerate(data.sequences)}
    n_checked = 0
    for epoch in range(2):
        for batch in data.getDataLoader(3, sampling, randomOffset=True):
            assert batch.audio.shape[1:] == (1, S) and batch.audio.dtype == torch.float32
            assert batch.phones.shape == (len(batch), S // FRAME_SIZE)
            for b in range(len(batch)):
                index, offset = int(batch.seq_index[b]), int(batch.seq_offset[b])
                seq = data.sequences[index]
                assert offset % FRAME_SIZE == 0
                assert int(batch.speaker[b]) == seq.speaker
                if offset + S <= seq.n_samples:  # the window lies in one file
                    torch.testing.assert_close(batch.audio[b, 0],
                                               torch.from_numpy(files[index][offset:offset + S]))
                    frame = offset // FRAME_SIZE
                    assert batch.phones[b].tolist() == \
                        labels[seq.stem][frame:frame + S // FRAME_SIZE].tolist()
                    n_checked += 1
    assert n_checked > 10


def test_frame_provenance_names_the_file_of_every_frame(tree):
    data = _dataset(tree)
    for batch in data.getDataLoader(4, "sequential", randomOffset=False,
                                    frame_provenance=True):
        assert batch.frame_seq_index.shape == (len(batch), S // FRAME_SIZE)
        assert torch.equal(batch.frame_seq_index[:, 0], batch.seq_index)
        for b in range(len(batch)):
            index, offset = int(batch.seq_index[b]), int(batch.seq_offset[b])
            length = data.sequences[index].n_samples
            inside = (offset + FRAME_SIZE * torch.arange(S // FRAME_SIZE)) < length
            assert torch.equal(batch.frame_seq_index[b] == index, inside)


def test_epochs_cover_every_pack_and_prefetch(tree):
    data = _dataset(tree, max_size_loaded=12000)
    assert data.n_packs >= 3
    loader = data.getDataLoader(2, "sequential", randomOffset=False)
    for epoch in range(2):
        loader.set_epoch(epoch)
        seen = set()
        for batch in loader:
            seen.update(batch.seq_index.tolist())
            assert len(data._loads) <= 2  # current pack + the one being prefetched
        # every file that can hold a window start is reached
        assert len(seen) >= len(data.sequences) - data.n_packs
    data.close()


def test_packs_are_planned_anew_every_epoch_from_the_seed(tree):
    data = _dataset(tree, seed=3, max_size_loaded=12000)
    plans = [[p.key for p in data.plan(epoch)] for epoch in range(4)]
    assert len({tuple(plan) for plan in plans}) > 1  # re-shuffled per epoch, as CPC_audio
    for plan in plans:  # each epoch holds every file once
        assert sorted(i for key in plan for i in key) == list(range(len(data.sequences)))
    again = _dataset(tree, seed=3, max_size_loaded=12000)
    assert [[p.key for p in again.plan(epoch)] for epoch in range(4)] == plans
    data.close()
    again.close()


def test_an_epoch_is_a_pure_function_of_its_number_and_skip_passes_over_batches(tree):
    def epoch_windows(data, epoch, skip=0):
        loader = data.getDataLoader(2, "samespeaker", randomOffset=True)
        loader.set_epoch(epoch)
        loader.skip = skip
        return [tuple(zip(b.seq_index.tolist(), b.seq_offset.tolist())) for b in loader]
    first = _dataset(tree, seed=5, max_size_loaded=15000)
    epoch_3 = epoch_windows(first, 3)
    epoch_windows(first, 1)  # other epochs in between change nothing
    second = _dataset(tree, seed=5, max_size_loaded=15000)
    assert epoch_windows(second, 3) == epoch_3 != epoch_windows(second, 2)
    assert epoch_windows(second, 3, skip=4) == epoch_3[4:]
    first.close()
    second.close()


@pytest.mark.parametrize("sampling", SAMPLING_TYPES)
def test_batch_counts_match_the_samplers_without_drawing(tree, sampling):
    _, packs = _geometry(tree, max_size=15000)
    for pack in packs:
        for offset in (0, 160, 800):
            batches = make_batches(pack, sampling, S, 3, offset, random.Random(0))
            assert count_batches(pack, sampling, S, 3, offset) == len(batches)


def test_a_pack_that_stays_the_same_is_read_once(tree, monkeypatch):
    reads = []
    original = read_audio
    monkeypatch.setattr("cpc.data.packs.read_audio",
                        lambda path: reads.append(path) or original(path))
    data = _dataset(tree)  # one pack: the same every epoch
    loader = data.getDataLoader(2, "samespeaker", randomOffset=True)
    for epoch in range(3):
        loader.set_epoch(epoch)
        assert sum(len(b) for b in loader) > 0
    assert len(reads) == len(data.sequences)
    data.close()


def test_same_seed_same_batches(tree):
    def epoch_starts(seed):
        data = _dataset(tree, seed=seed, max_size_loaded=20000)
        out = [(b.seq_index.tolist(), b.seq_offset.tolist())
               for _ in range(2)
               for b in data.getDataLoader(2, "samespeaker", randomOffset=True)]
        data.close()
        return out
    assert epoch_starts(5) == epoch_starts(5)
    assert epoch_starts(5) != epoch_starts(6)


def test_random_offsets_vary_and_stay_aligned():
    rng = random.Random(0)
    offsets = {random_offset(rng, S) for _ in range(50)}
    assert len(offsets) > 1
    assert all(o % FRAME_SIZE == 0 and 0 <= o <= S // 2 for o in offsets)


def test_summary(tree):
    root, layout, _ = tree
    data = _dataset(tree)
    summary = data.summary()
    total = sum(sum(v) for v in layout.values())
    assert summary["files"] == 9 and summary["speakers"] == 3
    assert summary["hours"] == pytest.approx(total / 16000 / 3600)
    assert summary["windows"] == total // S


def test_window_size_must_be_frame_multiple(tree):
    root, _, _ = tree
    seqs, speakers = findAllSeqs(root, ".flac")
    with pytest.raises(DataError, match="--sizeWindow 1000"):
        AudioBatchData(root, 1000, seqs, None, len(speakers))
    with pytest.raises(DataError, match="no window"):
        AudioBatchData(root, 160 * 1000, seqs, None, len(speakers))


def test_truncated_file_after_listing_is_named(tree):
    root, _, _ = tree
    seqs, speakers = findAllSeqs(root, ".flac")
    target = root / seqs[0].path
    sf.write(target, ramp_signal(0, 100), 16000)  # shorter than the listing says
    data = AudioBatchData(root, S, seqs, None, len(speakers))
    with pytest.raises(DataError, match=seqs[0].stem):
        next(iter(data.getDataLoader(2, "sequential", randomOffset=False)))


def test_rank_shares_partition_the_files_with_balanced_audio():
    lengths = [int(x) for x in np.random.default_rng(0).integers(1000, 50000, 101)]
    for world_size in (1, 2, 3, 8):
        shares = rank_shares(lengths, world_size, seed=4)
        assert sorted(i for share in shares for i in share) == list(range(len(lengths)))
        totals = [sum(lengths[i] for i in share) for share in shares]
        assert max(totals) - min(totals) <= max(lengths)
        again = rank_shares(lengths, world_size, seed=4)
        assert all(np.array_equal(a, b) for a, b in zip(shares, again))
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3) != mix_seed(1, 2, 4)


@pytest.mark.parametrize("sampling", SAMPLING_TYPES)
@pytest.mark.parametrize("world_size", [2, 3])
def test_each_rank_reads_and_trains_on_its_own_share(tree, sampling, world_size):
    """Ranks (same seed) own disjoint shares of the files and read only theirs, in packs of a
    1/world_size of the memory; their batches keep the sampler's meaning, and the epoch length
    they agree on (the shortest share's) keeps them in lockstep."""
    ranks = [_dataset(tree, seed=4, max_size_loaded=20000, rank=rank, world_size=world_size)
             for rank in range(world_size)]
    read: list[set[int]] = [set() for _ in ranks]
    for data, files in zip(ranks, read):
        original = data._read
        data._read = lambda pack, files=files, original=original: \
            files.update(pack.key) or original(pack)
    loaders = [data.getDataLoader(2, sampling, randomOffset=True) for data in ranks]
    for loader in loaders:
        loader.set_epoch(1)
    agreed = min(loader.local_length() for loader in loaders)
    for data, loader in zip(ranks, loaders):
        loader.limit = agreed
        assert data.max_pack_samples == 20000 // world_size
        batches = list(loader)
        assert len(batches) == agreed
        assert {int(i) for b in batches for i in b.seq_index} <= set(data.share.tolist())
        if sampling == "samespeaker":
            assert all(len(set(b.speaker.tolist())) == 1 for b in batches)
    for data in ranks:
        data.close()
    shares = [set(data.share.tolist()) for data in ranks]
    assert all(files <= share for files, share in zip(read, shares))  # only its own files
    assert sum(map(len, shares)) == len(ranks[0].sequences) and set.union(*shares) == \
        set(range(len(ranks[0].sequences)))


def test_rank_outside_the_world_is_refused(tree):
    with pytest.raises(DataError, match="rank 2 is not in"):
        _dataset(tree, rank=2, world_size=2)
