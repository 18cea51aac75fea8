"""A run's data from its flags: the files chosen once (:class:`CorpusSelection`), then the
windows of this process's share (:class:`CorpusData`), and the capture dataset.

Every user-facing problem (missing directory, unreadable file, wrong sample rate, split list
matching nothing, bad labels...) raises :class:`~cpc.utils.errors.DataError` with a message
naming the culprit.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpc.data.labels import attach_phone_labels, parseSeqLabels
from cpc.data.listing import SeqInfo, check_speaker_level, drop_bad_audio, findAllSeqs
from cpc.data.packs import AudioBatchData
from cpc.data.splits import filterSeqs, split_train_val, thin_sequences
from cpc.utils.errors import DataError


@dataclass
class CorpusSelection:
    """The files of a run, listed before any audio is read (once, by rank 0 under torchrun)."""

    path_db: str
    train: list[SeqInfo]
    val: list[SeqInfo]
    speakers: list[str]
    n_phones: int  # 0 without phone labels
    path_phone_data: str | None = None
    labels: dict[str, np.ndarray] | None = None  # parsed phone labels (not shared: re-read)

    def shareable(self) -> "CorpusSelection":
        """This selection without its parsed labels, which each rank reads from the file."""
        return dataclasses.replace(self, labels=None)

    def with_labels(self) -> "CorpusSelection":
        if self.path_phone_data and self.labels is None:
            return dataclasses.replace(self, labels=parseSeqLabels(self.path_phone_data)[0])
        return self


def select_corpus(path_db: str | Path, extension: str, path_train: str | None,
                  path_val: str | None, path_phone_data: str | None, *,
                  n_process_loader: int = 8, seed: int = 0, ignore_cache: bool = False,
                  max_files: tuple[int, int] | None = None,
                  bad_audio: str = "refuse") -> CorpusSelection:
    """List pathDB, apply the split lists (or a seeded 99/1 split), attach phone labels.

    ``max_files`` = (train, val) keeps only that many files of each part (``--debug``);
    ``bad_audio`` (``--bad_audio``) says what becomes of the chosen files holding NaN or
    infinite samples (:func:`drop_bad_audio`).
    """
    seqs, speakers = findAllSeqs(path_db, extension, loadCache=not ignore_cache,
                                 n_workers=n_process_loader)
    check_speaker_level(path_db, seqs, speakers)
    train = filterSeqs(path_train, seqs) if path_train else list(seqs)
    if path_val:
        val = filterSeqs(path_val, seqs)
        shared = sorted({s.stem for s in train} & {s.stem for s in val})
        if shared:
            warnings.warn(f"{len(shared)} file(s) are in both {path_train or 'the training set'}"
                          f" and {path_val} (first: {', '.join(shared[:3])}): the validation "
                          f"loss and probes are not measured on held-out audio")
    else:
        train, val = split_train_val(train, 0.01, seed)
    if max_files is not None:
        train, val = train[:max_files[0]], val[:max_files[1]]
    train, val = drop_bad_audio(path_db, (train, val), bad_audio)
    labels, n_phones = None, 0
    if path_phone_data:
        labels, n_phones = parseSeqLabels(path_phone_data)
        train = attach_phone_labels(train, labels, path_db, path_phone_data)
        val = attach_phone_labels(val, labels, path_db, path_phone_data)
    return CorpusSelection(str(path_db), train, val, speakers, n_phones,
                           path_phone_data=str(path_phone_data) if path_phone_data else None,
                           labels=labels)


@dataclass
class CorpusData:
    """Training and validation windows of one corpus (this rank's share), and its label
    inventories."""

    train: AudioBatchData
    val: AudioBatchData
    speakers: list[str]
    n_phones: int  # 0 without phone labels
    selection: CorpusSelection | None = None
    _whole: "CorpusData | None" = None

    def whole(self) -> "CorpusData":
        """Every file of the corpus in one process (the probes' data): this data itself in a
        one-process run, else a view built at the first call and closed with this one."""
        if self.train.world_size == 1:
            return self
        if self._whole is None:
            self._whole = build_corpus_data(self.selection, self.train.size_window,
                                            n_process_loader=self.train.n_process_loader,
                                            max_size_loaded=self.train.max_size_loaded,
                                            seed=self.train.seed)
        return self._whole

    def close(self) -> None:
        self.train.close()
        self.val.close()
        if self._whole is not None:
            self._whole.close()


def build_corpus_data(selection: CorpusSelection, size_window: int, *,
                      n_process_loader: int = 8, max_size_loaded: int = 4_000_000_000,
                      seed: int = 0, rank: int = 0, world_size: int = 1) -> CorpusData:
    """The datasets of a selection, for rank ``rank`` of ``world_size``."""
    selection = selection.with_labels()

    def make(part: list[SeqInfo], part_seed: int, name: str) -> AudioBatchData:
        try:
            return AudioBatchData(selection.path_db, size_window, part, selection.labels,
                                  len(selection.speakers), n_process_loader=n_process_loader,
                                  max_size_loaded=max_size_loaded, seed=part_seed, rank=rank,
                                  world_size=world_size)
        except DataError as exc:  # say which part: the other one may be fine
            raise DataError(f"the {name} files ({len(part)} of them): {exc}") from None
    return CorpusData(make(selection.train, seed, "training"),
                      make(selection.val, seed + 1, "validation"),
                      selection.speakers, selection.n_phones, selection)


def build_datasets(path_db: str | Path, extension: str, path_train: str | None,
                   path_val: str | None, path_phone_data: str | None, size_window: int, *,
                   n_process_loader: int = 8, max_size_loaded: int = 4_000_000_000,
                   seed: int = 0, ignore_cache: bool = False,
                   max_files: tuple[int, int] | None = None,
                   bad_audio: str = "refuse") -> CorpusData:
    """:func:`select_corpus` and :func:`build_corpus_data` in one process."""
    selection = select_corpus(path_db, extension, path_train, path_val, path_phone_data,
                              n_process_loader=n_process_loader, seed=seed,
                              ignore_cache=ignore_cache, max_files=max_files, bad_audio=bad_audio)
    return build_corpus_data(selection, size_window, n_process_loader=n_process_loader,
                             max_size_loaded=max_size_loaded, seed=seed)


def build_capture_dataset(path_db: str | Path, extension: str, path_list: str,
                          path_phone_data: str | None, size_window: int, *,
                          percent: float | None = None, total: int | None = None,
                          n_process_loader: int = 8, bad_audio: str = "refuse"
                          ) -> tuple[AudioBatchData, list[str]]:
    """The capture dataset (files of ``path_list``, thinned, with phone labels when given,
    without the bad audio ``--bad_audio skip`` leaves out) and the corpus's speaker names,
    which its speaker indices refer to."""
    seqs, speakers = findAllSeqs(path_db, extension, n_workers=n_process_loader)
    check_speaker_level(path_db, seqs, speakers)
    chosen = thin_sequences(filterSeqs(path_list, seqs), percent, total)
    chosen, = drop_bad_audio(path_db, (chosen,), bad_audio)
    labels = None
    if path_phone_data:
        labels, _ = parseSeqLabels(path_phone_data)
        chosen = attach_phone_labels(chosen, labels, path_db, path_phone_data)
    return (AudioBatchData(path_db, size_window, chosen, labels, len(speakers),
                           n_process_loader=n_process_loader), speakers)
