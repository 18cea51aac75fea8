r"""Cross-lingual phone transfer: a CTC phone recogniser on a CPC model's features, and its
phone error rate (CPC_audio's Common Voice evaluation, same command lines)::

    python cpc/eval/common_voices_eval.py train pathDB pathPhone CHECKPOINT \
        --pathTrain train.txt --pathVal val.txt --freeze -o OUT
    python cpc/eval/common_voices_eval.py per OUT --pathVal test.txt --pathPhone pathPhone

pathPhone holds one unaligned phone sequence per utterance, ``<stem> id id ...``; audio is
found by stem anywhere under pathDB (16 kHz). ``train`` keeps the recogniser (and the model, which
it fine-tunes unless ``--freeze``) of the best validation CTC loss in ``OUT/checkpoint.pt``,
written atomically, with ``OUT/args_training.json`` and ``OUT/logs_train.json``. ``per`` reads
them, decodes the test list (``--decoding greedy``: best path; ``beam``: prefix beam search) and
prints and writes ``OUT/per_<name>.json``: the corpus PER (edit distance over reference length)
and the mean utterance PER that CPC_audio printed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/eval/common_voices_eval.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.eval.options import common_voices_parser
from cpc.utils.cli import answer_help, exit_without_teardown
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(common_voices_parser(__doc__), sys.argv[1:])

import random

import torch

from cpc.audio_check import screen_by_stem
from cpc.eval.build_zeroSpeech_features import list_files_by_stem
from cpc.eval.phone_recognition import (CHECKPOINT, CTCPhoneRecognizer, RecognizerConfig,
                                        phone_error_rates, train_recognizer)
from cpc.eval.phone_sequences import (load_utterances, read_phone_sequences, select_stems,
                                      split_off_validation)
from cpc.feature_loader import loadModel
from cpc.utils import checkpoint as ckpt
from cpc.utils.devices import select_device
from cpc.utils.errors import ConfigError, CPCError
from cpc.utils.files import check_output_dir, exclusive_lock

TRAINING_ARGS = "args_training.json"  # CPC_audio's name


def parse_args(argv: list[str]) -> argparse.Namespace:
    return common_voices_parser(__doc__).parse_args(argv)


def check_train_args(args: argparse.Namespace) -> None:
    """CPC_audio flags with no meaning here, and numbers out of range."""
    if args.pathCheckpoint == "ID" or args.in_dim != 1:
        raise ConfigError("pathCheckpoint ID / --in_dim: pre-computed features are not read "
                          "here; give a CPC checkpoint (audio is read as mono)")
    for flag in ("batchSize", "nEpochs"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be at least 1; got {getattr(args, flag)}")
    if not args.lr > 0:
        raise ConfigError(f"--lr must be a positive number; got {args.lr}")


def build_model(path_checkpoint: str, *, pretrained: bool, seed: int) -> torch.nn.Module:
    """The checkpoint's model, or its architecture seeded-randomly initialised."""
    torch.manual_seed(seed)
    return loadModel([path_checkpoint], loadStateDict=pretrained)[0]


def make_recognizer(model: torch.nn.Module, n_phones: int, args: argparse.Namespace
                    ) -> CTCPhoneRecognizer:
    dim = model.dim_encoded if args.get_encoded else model.dim_context
    return CTCPhoneRecognizer(dim, n_phones, lstm=args.LSTM, kernel_size=args.kernelSize,
                              seq_norm=args.seqNorm, dropout=args.dropout)


def good_audio(files: dict[str, Path], parts: tuple[list[str], ...], bad_audio: str
               ) -> list[list[str]]:
    """Each list of stems of ``parts`` after the audio check of :mod:`cpc.audio_check`:
    ``--bad_audio skip`` leaves out the files holding NaN or infinite samples."""
    kept = screen_by_stem({stem: files[stem] for part in parts for stem in part}, bad_audio)
    return [[stem for stem in part if stem in kept] for part in parts]


def train(args: argparse.Namespace) -> dict:
    """The ``train`` sub-command: returns the epoch records."""
    check_train_args(args)
    check_output_dir(args.output, "--output")
    device = select_device(args.device)
    labels, n_phones = read_phone_sequences(args.pathPhone)
    files = list_files_by_stem(args.pathDB, args.file_extension)
    train_stems = select_stems(args.pathTrain, files, labels, args.pathPhone)
    if args.pathVal is None:
        train_stems, val_stems = split_off_validation(train_stems, 0.1, args.seed)
    else:
        val_stems = select_stems(args.pathVal, files, labels, args.pathPhone)
    if args.debug:
        random.Random(args.seed).shuffle(train_stems)
        train_stems, val_stems = train_stems[:1000], val_stems[:100]
    train_stems, val_stems = good_audio(files, (train_stems, val_stems), args.bad_audio)
    model = build_model(args.pathCheckpoint, pretrained=not args.no_pretraining, seed=args.seed).to(device)
    torch.manual_seed(args.seed)
    recognizer = make_recognizer(model, n_phones, args).to(device)
    config = RecognizerConfig(batch_size=args.batchSize, n_epochs=args.nEpochs, lr=args.lr,
                              beta1=args.beta1, beta2=args.beta2, epsilon=args.epsilon,
                              freeze=args.freeze, get_encoded=args.get_encoded,
                              loss_reduction=args.loss_reduction, seed=args.seed)
    train_set = load_utterances(train_stems, files, labels)
    val_set = load_utterances(val_stems, files, labels)
    out = Path(args.output)
    with exclusive_lock(out, "phone recogniser training"):
        ckpt.write_json(out / TRAINING_ARGS, {**vars(args), "n_phones": n_phones})
        print(f"{len(train_set)} training and {len(val_set)} validation utterances, {n_phones} "
              f"phones, model {'frozen' if args.freeze else 'fine-tuned'}", flush=True)
        history = train_recognizer(model, recognizer, train_set, val_set, config=config, device=device,
                                   out=out)
        ckpt.write_json(out / "logs_train.json", history)
    return {"history": history}


def per(args: argparse.Namespace) -> dict:
    """The ``per`` sub-command: returns the PER results written to ``per_<name>.json``."""
    out = Path(args.output)
    if not (out / TRAINING_ARGS).is_file():
        raise ConfigError(f"{out} holds no {TRAINING_ARGS}: give the -o/--output directory of "
                          f"a `train` run")
    trained = ckpt.read_json(out / TRAINING_ARGS)
    if args.batchSize < 1 or args.beam_width < 1:
        raise ConfigError("--batchSize and --beam_width must be at least 1")
    path_db = args.pathDB or trained["pathDB"]
    extension = args.file_extension or trained["file_extension"]
    path_phone = args.pathPhone or trained["pathPhone"]
    path_test = args.pathVal or trained["pathVal"]
    if path_test is None:
        raise ConfigError("the training run had no --pathVal: give the test stems with --pathVal")
    device = select_device(args.device)
    state = ckpt.load_torch(out / CHECKPOINT)
    labels, n_phones = read_phone_sequences(path_phone)
    if n_phones > state["n_phones"]:
        raise ConfigError(f"{path_phone} has phone ids up to {n_phones - 1}; the recogniser in "
                          f"{out / CHECKPOINT} knows {state['n_phones']} phones")
    files = list_files_by_stem(path_db, extension)
    stems = select_stems(path_test, files, labels, path_phone)[:100 if args.debug else None]
    stems, = good_audio(files, (stems,), args.bad_audio)
    model = build_model(trained["pathCheckpoint"], pretrained=False, seed=trained["seed"])
    model.load_state_dict(state["model"])
    recognizer = make_recognizer(model, state["n_phones"], argparse.Namespace(**trained))
    recognizer.load_state_dict(state["classifier"])
    with exclusive_lock(out, "PER evaluation", output=f"per_{args.name}.json"):
        result = phone_error_rates(model.to(device), recognizer.to(device),
                                   load_utterances(stems, files, labels), batch_size=args.batchSize,
                                   device=device, get_encoded=trained["get_encoded"],
                                   decoding=args.decoding, beam_width=args.beam_width)
        ckpt.write_json(out / f"per_{args.name}.json", {**result, "pathVal": str(path_test)})
    print(f"PER {result['per']:.4f} ({args.decoding} decoding, {result['n_utterances']} "
          f"utterances; mean utterance PER {result['mean_utterance_per']:.4f})")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        (train if args.command == "train" else per)(args)
    except (CPCError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
