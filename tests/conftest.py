"""Shared fixtures: tiny LibriSpeech-style trees written on the fly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch


def ramp_signal(file_id: int, n_samples: int, channels: int = 1) -> np.ndarray:
    """Samples that are exact in 16-bit PCM and differ between files and offsets: a sawtooth
    of period 30000 whose phase is ``file_id`` times 7919, a prime coprime to 30000, so that
    no two of the first 30000 files start at the same phase."""
    values = ((file_id * 7919 + np.arange(n_samples)) % 30000 - 15000) / 32768.0
    if channels == 1:
        return values.astype(np.float32)
    return np.stack([values] * channels, axis=1).astype(np.float32)


def write_tree(root: Path, layout: dict[str, list[int]], extension: str = ".flac",
               sample_rate: int = 16000) -> list[str]:
    """Write root/<speaker>/0/<speaker>-0-<i><ext> files of the given lengths; return stems."""
    stems = []
    file_id = 0
    for speaker, lengths in layout.items():
        chapter = root / speaker / "0"
        chapter.mkdir(parents=True, exist_ok=True)
        for i, n_samples in enumerate(lengths):
            stem = f"{speaker}-0-{i:04d}"
            sf.write(chapter / f"{stem}{extension}", ramp_signal(file_id, n_samples),
                     sample_rate, subtype="PCM_16")
            stems.append(stem)
            file_id += 1
    return stems


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use tiny tensors: one torch thread is faster (no synchronisation) and makes the
    suite's speed independent of whatever else loads the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def two_threads():
    """For the few tests that train a full-size model (PASE's waveform decoder): on 2 cores,
    2 torch threads run them 1.6x faster than one."""
    torch.set_num_threads(2)
    yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep listing caches out of the user's home directory."""
    monkeypatch.setenv("CPC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A small espeak-ng corpus (4 speakers x 6 utterances), generated once per test session."""
    from cpc.corpora.synthetic import generate_corpus
    root = tmp_path_factory.mktemp("tiny_corpus") / "corpus"
    generate_corpus(root, 4, 1, 6, seed=1, workers=2)
    return root


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (pytest -m cuda); skipped without")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device: run on a GPU machine (bench/gpu_check.sh)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
