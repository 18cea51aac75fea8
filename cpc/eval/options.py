"""The command lines of the evaluation scripts, and the names their flags choose from.

Torch-free: each script calls :func:`cpc.utils.cli.answer_help` with its parser before importing
torch, so ``--help`` is instant. A parser takes its script's docstring as description.
"""
from __future__ import annotations

import argparse

from cpc.probes.config import ProbeConfig
from cpc.utils.cli import DeprecatedAlias, DocstringHelpFormatter, add_bad_audio_flag

DEVICES = ("auto", "cpu", "cuda")
MODES = ("within", "across")  # ABX modes
DISTANCES = ("angular", "cosine")  # ABX frame distances
FORMATS = ("npy", "npz", "txt", "fea")  # exported feature files
READABLE = (".npy", ".npz", ".txt", ".fea", ".pt")  # feature files ABX reads
POOLINGS = ("mean", "stats")  # utterance pooling of the speaker classifier
FEATURES = ("checkpoint", "mfcc", "random_init")  # what the probes of linear_separability see
DECODINGS = ("greedy", "beam")  # CTC decodings of common_voices_eval per (cpc.eval.ctc_decoding)


def _parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description, formatter_class=DocstringHelpFormatter)


def _add_abx_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=["all", *MODES], default="all",
                        help="ABX mode(s) to score")
    parser.add_argument("--distance", choices=DISTANCES, default="angular",
                        help="frame distance: angular = arccos(cos)/pi (Libri-light's and "
                             "CPC_audio's 'cosine'), cosine = 1 - cos")
    parser.add_argument("--feature_size", type=float, default=0.01, help="seconds per frame")
    parser.add_argument("--max_size_group", type=int, default=10,
                        help="items drawn per group and cell (Libri-light's default; CPC_audio: "
                             "20); the cost follows the real group sizes, so a value above the "
                             "largest group costs nothing more")
    parser.add_argument("--max_x_across", type=int, default=5,
                        help="X speakers drawn per A group in the across mode")
    parser.add_argument("--seed", type=int, default=0, help="seed of the group subsampling")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when available, else CPU")
    parser.add_argument("--num_threads", type=int, default=1,
                        help="CPU threads of the ABX computation (its many small operations "
                             "gain little from threads and lose a lot on a busy machine)")
    parser.add_argument("--out", default=None,
                        help="output directory (from_checkpoint without it: the checkpoint's)")
    parser.add_argument("--cuda", action="store_true",
                        help="CPC_audio's name of --device cuda")
    parser.add_argument("--debug", action="store_true",
                        help="only the items of the first 1000 files of the item file")
    parser.add_argument("-n", "--num_processes", type=int, dest="num_threads",
                        help="the same as --num_threads: the distances are computed by threads "
                             "of one process")


def abx_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.eval.ABX {from_checkpoint,from_pre_computed}``."""
    parser = _parser(description)
    sub = parser.add_subparsers(dest="load", required=True)
    from_ckpt = sub.add_parser("from_checkpoint", help="compute features with a CPC checkpoint",
                               formatter_class=DocstringHelpFormatter)
    from_ckpt.add_argument("path_checkpoint", help="checkpoint_<N>.pt or a run directory")
    from_ckpt.add_argument("path_item_file", help="ZeroSpeech .item file")
    from_ckpt.add_argument("path_dataset", help="directory searched recursively for audio files")
    from_ckpt.add_argument("--file_extension", default=".flac", help="audio extension")
    from_ckpt.add_argument("--get_encoded", action="store_true", help="use the encoder output")
    from_ckpt.add_argument("--seq_norm", action="store_true",
                           help="normalise each chunk's features over time")
    from_ckpt.add_argument("--strict", action="store_true",
                           help="every chunk holds exactly --max_size_seq samples")
    from_ckpt.add_argument("--max_size_seq", type=int, default=64000,
                           help="samples per model run; longer files are cut into chunks")
    add_bad_audio_flag(from_ckpt)
    _add_abx_common(from_ckpt)
    pre = sub.add_parser("from_pre_computed", help="read one feature file per utterance",
                         formatter_class=DocstringHelpFormatter)
    pre.add_argument("path_features", help="directory searched recursively for <stem><ext> files")
    pre.add_argument("path_item_file", help="ZeroSpeech .item file")
    pre.add_argument("--file_extension", default=".npy", choices=READABLE,
                     help="feature file extension")
    _add_abx_common(pre)
    return parser


def features_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.eval.build_zeroSpeech_features``."""
    parser = _parser(description)
    parser.add_argument("pathDB", help="directory searched recursively for audio files")
    parser.add_argument("pathOut", help="output directory, one file per audio file")
    parser.add_argument("checkpoint", help="checkpoint_<N>.pt or a run directory (newest checkpoint)")
    parser.add_argument("--file_extension", default=".flac", help="audio extension")
    parser.add_argument("--format", choices=FORMATS, default="npy", help="feature file format")
    parser.add_argument("--get_encoded", action="store_true",
                        help="export the encoder output instead of the context")
    parser.add_argument("--gru_level", type=int, default=None,
                        help="export context-network layer K (1-based) instead of the last one")
    parser.add_argument("--strict", action="store_true",
                        help="every chunk the model sees holds exactly --max_size_seq samples")
    parser.add_argument("--seqNorm", action="store_true",
                        help="normalise each chunk's features over time (implies --strict, as "
                             "in CPC_audio)")
    parser.add_argument("--max_size_seq", type=int, default=64000,
                        help="samples per model run; longer files are cut into chunks")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when available, else CPU")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute files already in pathOut")
    parser.add_argument("--train_mode", action="store_true",
                        help="run the model in training mode (dropout active), as CPC_audio's "
                             "--train_mode")
    add_bad_audio_flag(parser)
    compat = parser.add_argument_group(
        "CPC_audio compatibility", "CPC_audio's names of the options above; its --addCriterion "
        "is refused (no supervised classifier in these checkpoints).")
    compat.add_argument("--extension", dest="file_extension", help="--file_extension")
    compat.add_argument("--getEncoded", dest="get_encoded", action="store_true",
                        help="--get_encoded")
    compat.add_argument("--maxSizeSeq", dest="max_size_seq", type=int, help="--max_size_seq")
    compat.add_argument("--addCriterion", action="store_true",
                        help="refused: apply a probe of linear_separability to the features")
    return parser


def speaker_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.eval.downstream_speaker``."""
    parser = _parser(description)
    parser.add_argument("pathDB", help="corpus root: <pathDB>/<speaker>/.../<file><ext>")
    parser.add_argument("pathTrain", help="training files, one stem per line")
    parser.add_argument("pathVal", help="validation files, one stem per line")
    parser.add_argument("checkpoint", help="checkpoint file or run directory (its newest checkpoint)")
    parser.add_argument("--out", required=True, help="output directory (results.json)")
    parser.add_argument("--get_encoded", action="store_true",
                        help="encoder output instead of the contexts")
    parser.add_argument("--pooling", choices=POOLINGS, default="mean",
                        help="mean, or stats: mean and standard deviation over each file's frames")
    parser.add_argument("--finetune", action="store_true", help="train the model with the classifier")
    parser.add_argument("--nEpoch", type=int, default=10, help="training epochs")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of Adam")
    parser.add_argument("--batch_size", type=int, default=8, help="files per batch")
    parser.add_argument("--max_seconds", type=float, default=10.0, help="files are cut to this length")
    parser.add_argument("--file_extension", default=".flac", help="audio extension")
    add_bad_audio_flag(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the classifier and batch order")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when available, else CPU")
    return parser


def linsep_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.eval.linear_separability``; the probe settings' defaults are
    :class:`ProbeConfig`'s, as those of training's --linsep_* flags."""
    probe = ProbeConfig()
    parser = _parser(description)
    parser.add_argument("pathDB", help="corpus root: <pathDB>/<speaker>/.../<file><ext>")
    parser.add_argument("pathTrain", help="training files, one stem per line")
    parser.add_argument("pathVal", help="validation files, one stem per line")
    parser.add_argument("load", nargs="*", help="checkpoint file(s) or run directory")
    parser.add_argument("--features", choices=FEATURES, default="checkpoint",
                        help="mfcc / random_init: baselines showing what pretraining bought")
    parser.add_argument("--pathPhone", type=str, default=None,
                        help="phone labels (CPC_audio format); enables the phone probe")
    parser.add_argument("--CTC", action="store_true", help="CTC phone probe (reports PER)")
    parser.add_argument("--get_encoded", action="store_true",
                        help="probe phones on the encoder output instead of the contexts")
    parser.add_argument("--no_speaker", action="store_true", help="skip the speaker probes")
    parser.add_argument("--file_extension", type=str, default=".flac", help="audio extension")
    parser.add_argument("--out", type=str, default=None,
                        help="output directory: probe logs, best probe states, results.json")
    parser.add_argument("--pathCheckpoint", action=DeprecatedAlias, dest="out", replacement="--out")
    parser.add_argument("--nEpoch", type=int, default=probe.n_epochs, help="epochs of each probe")
    parser.add_argument("--batchSizeGPU", type=int, default=probe.batch_size,
                        help="windows per probe batch")
    parser.add_argument("--lr", type=float, default=probe.lr,
                        help="learning rate of the probes' Adam")
    parser.add_argument("--beta1", type=float, default=probe.beta1,
                        help="beta1 of the probes' Adam (first-moment decay)")
    parser.add_argument("--beta2", type=float, default=probe.beta2,
                        help="beta2 of the probes' Adam (second-moment decay)")
    parser.add_argument("--epsilon", type=float, default=probe.epsilon,
                        help="epsilon of the probes' Adam (added to the denominator)")
    parser.add_argument("--nLevels", type=int, default=probe.n_layers,
                        help="1: linear probe; more: MLP whose hidden width is the class count")
    parser.add_argument("--sizeWindow", type=int, default=20480,
                        help="samples per window (multiple of 160)")
    parser.add_argument("--mfcc_dim", type=int, default=40, help="coefficients of --features mfcc")
    parser.add_argument("--feature_budget_gb", type=float, default=probe.feature_budget_gb,
                        help="memory for the frame features of the phone probe; beyond it a "
                             "regular subset of the windows is probed")
    parser.add_argument("--n_process_loader", type=int, default=8,
                        help="threads reading audio files")
    parser.add_argument("--max_size_loaded", type=int, default=4_000_000_000,
                        help="samples held per pack; the next pack loads in the background")
    parser.add_argument("--seed", type=int, default=probe.seed,
                        help="seed of the probes, the data order and --features random_init")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when available, else CPU")
    parser.add_argument("--unfrozen", action="store_true", default=probe.unfrozen,
                        help="fine-tune the encoder and context network with each probe (each "
                             "probe starts from the checkpoint's weights)")
    parser.add_argument("--lr_model", type=float, default=probe.model_lr,
                        help="learning rate of the model's parameters under --unfrozen "
                             "(unset: --lr, as in CPC_audio)")
    parser.add_argument("--no_pretraining", action="store_true",
                        help="probe a seeded random initialisation of the checkpoint's "
                             "architecture (the same as --features random_init)")
    parser.add_argument("--save_step", type=int, default=probe.save_step,
                        help="also save each probe (and its model under --unfrozen) every N "
                             "epochs, OUT/probes/<probe>/probe_epoch_<k>.pt; 0: only the best")
    parser.add_argument("--debug", action="store_true",
                        help="only the first 1000 training and 100 validation files")
    parser.add_argument("--ignore_cache", action="store_true",
                        help="re-read every audio header instead of trusting the listing cache")
    add_bad_audio_flag(parser)
    compat = parser.add_argument_group(
        "CPC_audio compatibility", "--n_epoch and --size_window are old names of --nEpoch and "
        "--sizeWindow.")
    compat.add_argument("--nGPU", type=int, default=None,
                        help="0: CPU; 1: one GPU (--device cuda); -1 (CPC_audio's 'all GPUs'): "
                             "--device; more is refused: the probes run on one device")
    compat.add_argument("--n_epoch", action=DeprecatedAlias, dest="nEpoch", replacement="--nEpoch",
                        type=int)
    compat.add_argument("--size_window", action=DeprecatedAlias, dest="sizeWindow",
                        replacement="--sizeWindow", type=int)
    return parser


def abx_items_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.eval.make_abx_items``."""
    parser = _parser(description)
    parser.add_argument("phone_labels", help="converted_aligned_phones.txt: '<stem> id id ...'")
    parser.add_argument("phones", help="phones.txt: '<id> <symbol>' lines, id 0 = silence")
    parser.add_argument("split", help="stems to include, one per line")
    parser.add_argument("--out", required=True, help="item file to write")
    return parser


def common_voices_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.eval.common_voices_eval {train,per}`` (CPC_audio's flags)."""
    parser = _parser(description)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a CTC phone recogniser on a checkpoint's features",
                           formatter_class=DocstringHelpFormatter)
    train.add_argument("pathDB", help="directory searched recursively for <stem><ext> audio")
    train.add_argument("pathPhone", help="phone sequences, '<stem> id id ...' per line")
    train.add_argument("pathCheckpoint", help="CPC checkpoint file or run directory")
    train.add_argument("--freeze", action="store_true",
                       help="keep the model frozen (without it the model is fine-tuned)")
    train.add_argument("--pathTrain", default=None,
                       help="training stems, one per line (unset: every labelled file)")
    train.add_argument("--pathVal", default=None,
                       help="validation stems (unset: a seeded 10%% of the training files)")
    train.add_argument("--file_extension", default=".mp3", help="audio extension")
    train.add_argument("--batchSize", type=int, default=8, help="utterances per batch")
    train.add_argument("--nEpochs", "--nEpoch", dest="nEpochs", type=int, default=30,
                       help="training epochs")
    train.add_argument("--beta1", type=float, default=0.9, help="beta1 of Adam")
    train.add_argument("--beta2", type=float, default=0.999, help="beta2 of Adam")
    train.add_argument("--epsilon", type=float, default=1e-08, help="epsilon of Adam")
    train.add_argument("--lr", type=float, default=2e-04,
                       help="learning rate of the recogniser (and of the model it fine-tunes)")
    train.add_argument("-o", "--output", default="out",
                       help="output directory: checkpoint.pt, args_training.json, logs_train.json")
    train.add_argument("--debug", action="store_true",
                       help="at most 1000 training and 100 validation files, seeded")
    train.add_argument("--no_pretraining", action="store_true",
                       help="a seeded random initialisation of the checkpoint's architecture")
    train.add_argument("--LSTM", action="store_true", help="an LSTM before the phone classifier")
    train.add_argument("--seqNorm", action="store_true",
                       help="normalise each utterance's features over time first")
    train.add_argument("--kernelSize", type=int, default=8,
                       help="frames per classifier output (stride: half of it)")
    train.add_argument("--dropout", action="store_true",
                       help="drop feature channels (p = 0.5) before the classifier")
    train.add_argument("--in_dim", type=int, default=1,
                       help="channels of the input: 1 (audio is read as mono); CPC_audio's "
                            "pre-computed features (pathCheckpoint ID) are not read here")
    train.add_argument("--loss_reduction", choices=("mean", "sum"), default="mean",
                       help="CTC loss reduction over the batch")
    train.add_argument("--get_encoded", action="store_true",
                       help="the encoder output instead of the contexts")
    train.add_argument("--seed", type=int, default=0,
                       help="seed of the recogniser, the batch order and the splits")
    add_bad_audio_flag(train)
    train.add_argument("--device", choices=DEVICES, default="auto",
                       help="auto: CUDA when available, else CPU")
    per = sub.add_parser("per", help="phone error rate of a trained recogniser",
                         formatter_class=DocstringHelpFormatter)
    per.add_argument("output", help="output directory of a train run")
    per.add_argument("--batchSize", type=int, default=8, help="utterances per batch")
    per.add_argument("--debug", action="store_true", help="at most 100 test files")
    per.add_argument("--pathDB", default=None, help="audio directory (unset: the training one)")
    per.add_argument("--pathVal", default=None,
                     help="test stems, one per line (unset: the training run's --pathVal)")
    per.add_argument("--pathPhone", default=None,
                     help="phone sequences (unset: the training run's)")
    per.add_argument("--file_extension", default=None,
                     help="audio extension (unset: the training run's)")
    per.add_argument("--name", default="0", help="the results go to per_<name>.json")
    per.add_argument("--decoding", choices=DECODINGS, default="greedy",
                     help="greedy: best path (repeats collapsed, blanks dropped); beam: prefix "
                          "beam search, CPC_audio's")
    per.add_argument("--beam_width", type=int, default=20, help="prefixes kept by --decoding beam")
    add_bad_audio_flag(per)
    per.add_argument("--device", choices=DEVICES, default="auto",
                     help="auto: CUDA when available, else CPU")
    return parser
