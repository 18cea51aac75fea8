r"""Linear-separability probes: speaker and phone classifiers trained on frozen features, or
with the model fine-tuned (``--unfrozen``).

Used three ways: periodically during CPC training (``--supervised_classif_metric``), once on a
checkpoint (``--only_classif_metric``), and as this standalone script::

    python cpc/eval/linear_separability.py pathDB pathTrain pathVal CHECKPOINT \
        --pathPhone converted_aligned_phones.txt --out OUT
    python cpc/eval/linear_separability.py pathDB pathTrain pathVal --features mfcc ...

Features are computed once per run (the encoder is frozen, so recomputing them every probe
epoch would be waste) from the datasets already in memory: speaker probes need one pooled vector
per window (the last context frame, CPC_audio's choice, and the time mean); phone probes need
every frame, kept in float16 within ``feature_budget_gb`` (beyond it a regular subset of the
windows is used, and the logs say so). ``--unfrozen`` (CPC_audio's fine-tuning) trains each probe
together with its own copy of the model on the audio windows; the model's parameters then learn at
``--lr_model`` (default: ``--lr``, as in CPC_audio).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python cpc/eval/linear_separability.py`
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from cpc.eval.options import linsep_parser
from cpc.utils.cli import answer_help, exit_without_teardown
from cpc.utils.signals import handle_interrupts, run_command

if __name__ == "__main__":  # --help needs none of the imports below (torch...)
    handle_interrupts()
    answer_help(linsep_parser(__doc__), sys.argv[1:])

import torch
import torch.nn as nn

from cpc.probes.config import ProbeConfig
from cpc.probes.run import check_probe_corpus, format_metrics, run_probes
from cpc.run_config import device_name
from cpc.utils import checkpoint as ckpt
from cpc.utils.errors import ConfigError


def build_feature_model(source: str, checkpoints: list[str], mfcc_dim: int, seed: int
                        ) -> nn.Module:
    """The frozen model whose features are probed: a checkpoint, its architecture untrained
    (``random_init``), or plain MFCCs (``mfcc``)."""
    from cpc.feature_loader import loadModel
    from cpc.model import CPCModel, MFCCEncoder, NoAR
    if source == "mfcc":
        return CPCModel(MFCCEncoder(mfcc_dim), NoAR(mfcc_dim))
    if not checkpoints:
        raise ValueError(f"--features {source} needs a checkpoint (positional argument)")
    torch.manual_seed(seed)
    model, _, _ = loadModel(checkpoints, loadStateDict=(source == "checkpoint"))
    return model


def parse_args(argv: list[str]) -> argparse.Namespace:
    return linsep_parser(__doc__).parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Flags that cannot act together, or CPC_audio flags with no one-device meaning here;
    folds --no_pretraining into --features."""
    if args.nGPU is not None and (args.nGPU > 1 or args.nGPU < -1):
        raise ConfigError(f"--nGPU {args.nGPU}: the probes run on one device; give --nGPU 1 "
                          f"(or --device cuda), --nGPU 0 for the CPU")
    if args.nGPU in (0, 1) and args.device not in ("auto", probe_device(args)):
        raise ConfigError(f"--nGPU {args.nGPU} contradicts --device {args.device}; give one")
    if args.no_pretraining:
        if args.features == "mfcc":
            raise ConfigError("--no_pretraining probes an untrained checkpoint architecture; "
                              "--features mfcc has none: give one of them")
        args.features = "random_init"
    if args.unfrozen and args.features == "mfcc":
        raise ConfigError("--unfrozen fine-tunes a model; --features mfcc has no weights: give "
                          "a checkpoint (or --no_pretraining)")
    if args.save_step < 0:
        raise ConfigError(f"--save_step must be 0 (only the best probe) or more; "
                          f"got {args.save_step}")
    if args.save_step and not args.out:
        raise ConfigError("--save_step saves probes under --out: give --out")
    if args.lr_model is not None and args.lr_model < 0:
        raise ConfigError(f"--lr_model must be >= 0; got {args.lr_model}")


def probe_device(args: argparse.Namespace) -> str:
    """--device, or CPC_audio's --nGPU (0: cpu, 1: cuda; -1, its default, leaves --device)."""
    if args.nGPU == -1:
        return args.device
    return device_name(args)


def main(argv: list[str] | None = None) -> int:
    from cpc.utils.memory import keep_freed_memory
    from cpc.data.corpus import build_datasets
    from cpc.utils.files import check_output_dir, exclusive_lock
    from cpc.utils.devices import select_device
    from cpc.utils.errors import CPCError

    args = parse_args(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    try:
        check_args(args)
        if args.out:
            check_output_dir(args.out, "--out")
        with exclusive_lock(args.out or None, "probe run"):
            device = select_device(probe_device(args))
            data = build_datasets(args.pathDB, args.file_extension, args.pathTrain, args.pathVal,
                                  args.pathPhone, args.sizeWindow,
                                  n_process_loader=args.n_process_loader,
                                  max_size_loaded=args.max_size_loaded, seed=args.seed,
                                  ignore_cache=args.ignore_cache,
                                  max_files=(1000, 100) if args.debug else None,
                                  bad_audio=args.bad_audio)
            model = build_feature_model(args.features, args.load, args.mfcc_dim,
                                        args.seed).to(device)
            probes = ([] if args.no_speaker else ["speaker", "speaker_mean"]) + \
                (["phone_ctc" if args.CTC else "phone"] if args.pathPhone else [])
            if not probes:
                raise CPCError("nothing to probe: give --pathPhone or drop --no_speaker")
            check_probe_corpus(probes, data.selection, args.pathTrain, args.pathVal,
                               ", or give --no_speaker to skip the speaker probes")
            config = ProbeConfig(n_epochs=args.nEpoch, batch_size=args.batchSizeGPU, lr=args.lr,
                                 beta1=args.beta1, beta2=args.beta2, epsilon=args.epsilon,
                                 n_layers=args.nLevels, logging_step=1,
                                 feature_budget_gb=args.feature_budget_gb, seed=args.seed,
                                 save_step=args.save_step, unfrozen=args.unfrozen,
                                 model_lr=args.lr_model)
            out = Path(args.out) if args.out else None
            metrics = run_probes(model, data.train, data.val, probes=probes,
                                 n_speakers=len(data.speakers), n_phones=data.n_phones,
                                 config=config, device=device,
                                 extract_batch_size=args.batchSizeGPU,
                                 get_encoded=args.get_encoded,
                                 log_dir=out / "logs" if out else None,
                                 checkpoint_dir=out / "probes" if out else None)
            data.close()
            print(f"{args.features}: {format_metrics(metrics)}")
            if out:
                ckpt.write_json(out / "results.json", {"features": args.features,
                                                       "unfrozen": args.unfrozen, **metrics})
    except (CPCError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    exit_without_teardown(run_command(main))
