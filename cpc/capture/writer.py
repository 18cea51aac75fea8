"""Capture of representations, predictions and alignments on a fixed "capture dataset".

Layout of one capture (``<pathCaptureSave>/<epoch>/``)::

    <what>/<what>_batch<first>-<last>.pt   one tensor per file; first/last = window indices
    origin/origin_batch<first>-<last>.pt   {"seq_index" (B,), "seq_offset" (B,),
                                            "frame_seq_index" (B, T)}: the file (index into
                                            sequences.json) and sample offset of every window,
                                            and the file of every frame
    sequences.json                         the capture dataset's files, speakers and lengths
    stats.json                             results of --captureSetStats (always written, last)
    INCOMPLETE                             only while the capture runs, or after it was cut

``what`` is one of :data:`cpc.capture.kinds.CAPTURE_KINDS`. Every file is written atomically.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from cpc.capture.completeness import finish_capture, start_capture
from cpc.capture.kinds import CRITERION_KINDS
from cpc.data.packs import AudioBatchData
from cpc.stats import StatsCollector
from cpc.utils import checkpoint as ckpt
from cpc.utils.files import exclusive_lock


def batch_file(epoch_dir: Path, kind: str, first: int, last: int) -> Path:
    return epoch_dir / kind / f"{kind}_batch{first}-{last}.pt"


def write_sequences(epoch_dir: Path, dataset: AudioBatchData, speakers: list[str]) -> None:
    ckpt.write_json(epoch_dir / "sequences.json",
                    [{"index": i, "path": seq.path, "stem": seq.stem,
                      "speaker": speakers[seq.speaker], "n_samples": seq.n_samples}
                     for i, seq in enumerate(dataset.sequences)])


def run_capture(model: nn.Module, criterion: nn.Module | None, dataset: AudioBatchData, *,
                speakers: list[str], kinds: list[str], collector: StatsCollector | None,
                epoch_dir: Path, epoch: int, batch_size: int, device: torch.device,
                seed: int = 0) -> dict[str, float]:
    """Run the frozen model (and criterion) over the capture dataset, in order.

    Saves the requested kinds under ``epoch_dir``, feeds the stats and writes their results to
    ``epoch_dir/stats.json`` (also returned). Runs under its own random stream (the criterion
    samples negatives), so captures are reproducible and training randomness is untouched.
    ``criterion`` is None for a PASE workers run, which has only the model's kinds.
    The folder is locked while written and marked incomplete until its last file is there
    (:mod:`cpc.capture.completeness`).
    """
    epoch_dir = Path(epoch_dir)
    with exclusive_lock(epoch_dir, "capture"):
        start_capture(epoch_dir)
        results = _capture(model, criterion, dataset, speakers=speakers, kinds=kinds,
                           collector=collector, epoch_dir=epoch_dir, epoch=epoch,
                           batch_size=batch_size, device=device, seed=seed)
        finish_capture(epoch_dir)
    return results


@torch.no_grad()
def _capture(model: nn.Module, criterion: nn.Module | None, dataset: AudioBatchData, *,
             speakers: list[str], kinds: list[str], collector: StatsCollector | None,
             epoch_dir: Path, epoch: int, batch_size: int, device: torch.device,
             seed: int) -> dict[str, float]:
    needed = set(kinds) | (collector.needs if collector else set())
    write_sequences(epoch_dir, dataset, speakers)
    speaker_of_seq = torch.tensor([seq.speaker for seq in dataset.sequences])
    frozen = [module for module in (model, criterion) if module is not None]
    was_training = [module.training for module in frozen]
    for module in frozen:
        module.eval()
    devices = [device] if device.type == "cuda" else []
    first = 0
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        loader = dataset.getDataLoader(batch_size, "sequential", randomOffset=False,
                                       frame_provenance=True)
        for batch in tqdm(loader, desc="capture", leave=False, mininterval=5):
            last = first + len(batch) - 1
            c_feature, encoded, _ = model(batch.audio.to(device), None)
            tensors = {"conv_repr": encoded, "ctx_repr": c_feature,
                       "speaker_align": speaker_of_seq[batch.frame_seq_index],
                       "phone_align": batch.phones}
            if criterion is not None and needed & set(CRITERION_KINDS):
                out = criterion(c_feature, encoded, batch.speaker.to(device), capture=True)
                tensors.update({kind: out.captures[kind] for kind in CRITERION_KINDS
                                if kind in out.captures})
            tensors = {kind: value.cpu() for kind, value in tensors.items()
                       if kind in needed and value is not None}
            for kind in kinds:
                ckpt.save_torch(batch_file(epoch_dir, kind, first, last), tensors[kind])
            if kinds:
                ckpt.save_torch(batch_file(epoch_dir, "origin", first, last),
                                {"seq_index": batch.seq_index, "seq_offset": batch.seq_offset,
                                 "frame_seq_index": batch.frame_seq_index})
            if collector is not None:
                collector.update(tensors)
            first = last + 1
    for module, mode in zip(frozen, was_training):
        module.train(mode)
    results = collector.finalize(epoch) if collector is not None else {}
    ckpt.write_json(epoch_dir / "stats.json", results)
    return results
