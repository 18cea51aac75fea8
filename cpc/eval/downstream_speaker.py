r"""Utterance-level speaker classification on the features of any checkpoint (CPC or PASE).

    python cpc/eval/downstream_speaker.py pathDB pathTrain pathVal CHECKPOINT --out DIR \
        [--get_encoded] [--pooling mean|stats] [--finetune] [--nEpoch 10] [--lr 1e-3] \
        [--batch_size 8] [--max_seconds 10]

Each listed file is one example: its first ``max_seconds`` go through the model (contexts, or
encoded frames with ``--get_encoded``); the frames of the batch, padded to its longest file,
are pooled over each file's own frames (``mean``, or ``stats``: mean and standard deviation),
standardised with the training set's statistics and classified by a linear layer. The speaker
is the first directory level under pathDB; validation speakers must appear in training
(closed set: for MiniLibriSpeech use the speaker_*_split.txt lists of
``cpc.corpora.minilibrispeech``).

Frozen (default): the model runs once over the data and only the classifier is trained.
``--finetune``: the model is trained with the classifier (model in train mode while training).
DIR/results.json holds the best validation accuracy, its epoch, chance level and the per-epoch
history.
"""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/eval/downstream_speaker.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.eval.options import speaker_parser
from cpc.utils.cli import answer_help, exit_without_teardown
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(speaker_parser(__doc__), sys.argv[1:])

import torch
import torch.nn as nn
import torch.nn.functional as F

from cpc.data.audio import read_audio
from cpc.data.listing import check_speaker_level, drop_bad_audio, findAllSeqs
from cpc.data.splits import check_speaker_classes, filterSeqs
from cpc.utils import checkpoint as ckpt
from cpc.utils.constants import FRAME_SIZE, SAMPLE_RATE
from cpc.utils.errors import ConfigError, DataError



@dataclass(frozen=True)
class Utterance:
    path: Path
    label: int
    n_samples: int


def list_utterances(path_db: str | Path, path_train: str | Path, path_val: str | Path, extension: str, *,
                    bad_audio: str = "refuse") -> tuple[list[Utterance], list[Utterance], list[str]]:
    """Training and validation files labelled by training speaker, and the speaker names
    (files holding NaN or infinite samples refused or, with ``bad_audio`` skip, left out)."""
    seqs, speaker_names = findAllSeqs(path_db, extension)
    check_speaker_level(path_db, seqs, speaker_names)
    train, val = drop_bad_audio(path_db, (filterSeqs(path_train, seqs),
                                          filterSeqs(path_val, seqs)), bad_audio)
    check_speaker_classes(train, val, speaker_names, str(path_train), str(path_val))
    speakers = sorted({seq.speaker for seq in train})
    label = {speaker: i for i, speaker in enumerate(speakers)}
    make = lambda items: [Utterance(Path(path_db) / s.path, label[s.speaker], s.n_samples)  # noqa: E731
                          for s in items]
    return make(train), make(val), [speaker_names[s] for s in speakers]


def check_lengths(utterances: list[Utterance], max_seconds: float, minimum: int) -> None:
    """Refuse a ``--max_seconds`` or a file too short for the model to make one frame from
    (``minimum`` samples, see :func:`cpc.feature_loader.min_input_samples`)."""
    max_samples = int(max_seconds * SAMPLE_RATE)
    if max_samples < minimum:
        raise ConfigError(f"--max_seconds {max_seconds:g} keeps {max_samples} samples of each "
                          f"file; the model needs at least {minimum} to make one frame")
    short = [u for u in utterances if u.n_samples < minimum]
    if short:
        raise DataError(f"{short[0].path} holds {short[0].n_samples} samples, fewer than the "
                        f"{minimum} the model needs to make one frame: remove the {len(short)} "
                        f"file(s) this short from the split lists")


def batch_indices(utterances: list[Utterance], batch_size: int, rng: random.Random | None) -> list[list[int]]:
    """Shuffled batches (training, ``rng`` given) or batches of similar lengths (evaluation)."""
    order = list(range(len(utterances)))
    if rng is None:
        order.sort(key=lambda i: utterances[i].n_samples)
    else:
        rng.shuffle(order)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def load_batch(utterances: list[Utterance], max_samples: int, downsampling: int = FRAME_SIZE
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded audio ``(B, 1, S_max)`` of the files (first ``max_samples`` each) and their frame counts."""
    signals = [torch.from_numpy(read_audio(u.path)[:max_samples]) for u in utterances]
    audio = torch.zeros(len(signals), 1, max(len(s) for s in signals))
    for row, signal in zip(audio, signals):
        row[0, :len(signal)] = signal
    return audio, torch.tensor([max(1, len(s) // downsampling) for s in signals])


def masked_pool(features: torch.Tensor, n_frames: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``(B, T, D)`` over the first ``n_frames[b]`` frames of each row: ``(B, D)`` for
    ``mean``, ``(B, 2D)`` (mean, std) for ``stats``."""
    n_frames = n_frames.to(features.device).clamp(1, features.shape[1])
    mask = (torch.arange(features.shape[1], device=features.device) < n_frames[:, None]).unsqueeze(-1)
    count = n_frames[:, None].to(features.dtype)
    mean = (features * mask).sum(dim=1) / count
    if mode == "mean":
        return mean
    variance = ((features - mean[:, None]).square() * mask).sum(dim=1) / count
    return torch.cat([mean, variance.clamp_min(1e-10).sqrt()], dim=-1)


class SpeakerHead(nn.Module):
    """Standardisation (fixed training-set statistics) then a linear classifier."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, n_speakers: int):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std.clamp_min(1e-6))
        self.linear = nn.Linear(mean.shape[0], n_speakers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear((pooled - self.mean) / self.std)


@dataclass(kw_only=True)
class Setup:
    """How pooled features are made from a batch of files."""

    get_encoded: bool
    pooling: str
    max_samples: int
    batch_size: int
    device: torch.device

    def pooled(self, model: nn.Module, utterances: list[Utterance]) -> torch.Tensor:
        audio, n_frames = load_batch(utterances, self.max_samples, model.downsampling)
        context, encoded, _ = model(audio.to(self.device))
        return masked_pool(encoded if self.get_encoded else context, n_frames, self.pooling)

    @torch.no_grad()
    def pooled_all(self, model: nn.Module, utterances: list[Utterance]) -> torch.Tensor:
        """Pooled features of every file, in order, with the model in eval mode."""
        model.eval()
        pieces = [(indices, self.pooled(model, [utterances[i] for i in indices]))
                  for indices in batch_indices(utterances, self.batch_size, None)]
        out = pieces[0][1].new_empty(len(utterances), pieces[0][1].shape[1])
        for indices, pooled in pieces:
            out[indices] = pooled
        return out


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


def train_classifier(model: nn.Module, train: list[Utterance], val: list[Utterance], *, n_speakers: int,
                     setup: Setup, n_epochs: int, lr: float, finetune: bool, seed: int) -> dict:
    """Train the head (and, with ``finetune``, the model); per-epoch history and best val accuracy."""
    rng = random.Random(seed)
    train_features = setup.pooled_all(model, train)
    head = SpeakerHead(train_features.mean(dim=0), train_features.std(dim=0, correction=0), n_speakers)
    head = head.to(setup.device)
    train_labels = torch.tensor([u.label for u in train], device=setup.device)
    val_labels = torch.tensor([u.label for u in val], device=setup.device)
    val_features = None if finetune else setup.pooled_all(model, val)
    parameters = list(head.parameters()) + (list(model.parameters()) if finetune else [])
    optimizer = torch.optim.Adam(parameters, lr=lr)
    history = {"train_loss": [], "train_accuracy": [], "val_accuracy": []}
    for _ in range(n_epochs):
        losses, correct = [], 0
        model.train(finetune)
        for indices in batch_indices(train, setup.batch_size, rng):
            labels = train_labels[indices]
            pooled = setup.pooled(model, [train[i] for i in indices]) if finetune else train_features[indices]
            logits = head(pooled)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            correct += int((logits.argmax(dim=1) == labels).sum())
        with torch.no_grad():
            features = setup.pooled_all(model, val) if finetune else val_features
            history["val_accuracy"].append(accuracy(head(features), val_labels))
        history["train_loss"].append(sum(losses) / len(losses))
        history["train_accuracy"].append(correct / len(train))
    best = max(range(n_epochs), key=lambda epoch: history["val_accuracy"][epoch])
    return {"best_val_accuracy": history["val_accuracy"][best], "best_epoch": best + 1, **history}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = speaker_parser(__doc__)
    args = parser.parse_args(argv)
    if args.nEpoch < 1 or args.batch_size < 1 or args.max_seconds <= 0:
        parser.error("--nEpoch and --batch_size must be positive, --max_seconds > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    from cpc.utils.memory import keep_freed_memory
    from cpc.utils.files import check_output_dir, exclusive_lock
    from cpc.feature_loader import loadModel, min_input_samples
    from cpc.utils.devices import select_device
    from cpc.utils.errors import CPCError

    args = parse_args(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    try:
        check_output_dir(args.out, "--out")
        with exclusive_lock(args.out, "speaker classification"):
            device = select_device(args.device)
            torch.manual_seed(args.seed)
            train, val, speakers = list_utterances(args.pathDB, args.pathTrain, args.pathVal,
                                                   args.file_extension, bad_audio=args.bad_audio)
            model = loadModel([args.checkpoint], device=device)[0]
            check_lengths(train + val, args.max_seconds, min_input_samples(model))
            setup = Setup(get_encoded=args.get_encoded, pooling=args.pooling,
                          max_samples=int(args.max_seconds * SAMPLE_RATE), batch_size=args.batch_size,
                          device=device)
            results = train_classifier(model, train, val, n_speakers=len(speakers), setup=setup,
                                       n_epochs=args.nEpoch, lr=args.lr, finetune=args.finetune,
                                       seed=args.seed)
            summary = {"checkpoint": args.checkpoint, "pooling": args.pooling,
                       "get_encoded": args.get_encoded, "finetune": args.finetune,
                       "n_speakers": len(speakers), "n_train": len(train), "n_val": len(val),
                       "chance": 1 / len(speakers)}
            ckpt.write_json(Path(args.out) / "results.json", {**summary, **results})
    except (CPCError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"speaker accuracy {results['best_val_accuracy']:.3f} (epoch {results['best_epoch']}, "
          f"chance {1 / len(speakers):.3f}, {len(speakers)} speakers)")
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
