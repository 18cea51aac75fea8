"""The command lines of the plotting scripts, torch- and matplotlib-free.

Each script calls :func:`cpc.utils.cli.answer_help` with its parser before importing matplotlib
and torch, so ``--help`` is instant. A parser takes its script's docstring as description.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cpc.utils.cli import DocstringHelpFormatter


def plots_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.capture.plots``: plots of a captured epoch."""
    parser = argparse.ArgumentParser(description=description, formatter_class=DocstringHelpFormatter)
    parser.add_argument("epoch_dir", type=Path, help="<pathCaptureSave>/<epoch>")
    parser.add_argument("--out", type=Path, required=True, help="directory of the plots")
    parser.add_argument("--windows", type=int, default=3, help="alignment plots to draw")
    parser.add_argument("--phones", type=Path, default=None,
                        help="phones.txt of the corpus, to name the phones")
    parser.add_argument("--run", type=Path, default=None,
                        help="the training run directory (its checkpoint_args.json names the "
                             "CPC-CTC columns)")
    return parser


def plot_run_parser(description: str) -> argparse.ArgumentParser:
    """``python -m cpc.capture.plot_run``: plots of a training run's history."""
    parser = argparse.ArgumentParser(description=description, formatter_class=DocstringHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the training run (--pathCheckpoint)")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory of the plots; without it, RUN_DIR/plots")
    return parser
