"""What the data pipeline hands on: a loaded pack's glued audio, and batches of windows."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cpc.data.plan import Pack


@dataclass
class LoadedPack:
    """A pack's glued audio (and phone labels), ready to cut windows from."""

    pack: Pack
    audio: torch.Tensor  # (N,) float32
    phones: torch.Tensor | None  # (N // 160,) long, with phone labels


@dataclass
class Batch:
    """A batch of windows and what is known about each of them."""

    audio: torch.Tensor  # (B, 1, sizeWindow) float32
    speaker: torch.Tensor  # (B,) long: speaker of the window's first sample
    phones: torch.Tensor | None  # (B, sizeWindow // 160) long, or None without phone labels
    seq_index: torch.Tensor  # (B,) long: dataset sequence holding the window's first sample
    seq_offset: torch.Tensor  # (B,) long: sample offset of the window start in that sequence
    frame_seq_index: torch.Tensor | None = None  # (B, sizeWindow // 160): file of each frame
    speaker_host: torch.Tensor | None = None  # the speakers still on the host, after to()

    def _map(self, move) -> "Batch":
        apply = lambda t: None if t is None else move(t)  # noqa: E731
        return Batch(apply(self.audio), apply(self.speaker), apply(self.phones),
                     apply(self.seq_index), apply(self.seq_offset), apply(self.frame_seq_index))

    def to(self, device: torch.device | str) -> "Batch":
        """On ``device``; the copy is asynchronous from pinned memory. The speaker labels also
        stay on the host (``speaker_host``), for decisions that must not wait for a GPU."""
        moved = self._map(lambda t: t.to(device, non_blocking=True))
        moved.speaker_host = self.speaker if self.speaker.device.type == "cpu" else \
            self.speaker_host
        return moved

    def pin_memory(self) -> "Batch":
        """In page-locked memory, from which a copy to the GPU does not stall the host."""
        return self._map(lambda t: t.pin_memory())

    def __len__(self) -> int:
        return self.audio.shape[0]
