"""What every command line shares: its help layout, and ``--help`` before the heavy imports.

A script whose module imports torch (or matplotlib) builds its parser in a torch-free module
(:mod:`cpc.options`, :mod:`cpc.eval.options`, :mod:`cpc.capture.options`) and calls
:func:`answer_help` before those imports, so that ``--help`` takes a fraction of a second::

    if __name__ == "__main__":  # --help needs none of the imports below
        answer_help(abx_parser(__doc__), sys.argv[1:])
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from cpc.utils.constants import BAD_AUDIO_CHOICES

HELP_FLAGS = frozenset({"-h", "--help"})


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends each option's default to its help, once, unless the option is required or its
    default means "not given" (None, False, an empty string): the help says what that means."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if action.required or default is None or default is False or default == "":
            return action.help
        return super()._get_help_string(action)


class DocstringHelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultsHelpFormatter):
    """:class:`DefaultsHelpFormatter` for a parser whose description is a module docstring,
    printed as written (its examples and lists keep their lines)."""


class DeprecatedAlias(argparse.Action):
    """A hidden old name of an option: ``add_argument("--old", action=DeprecatedAlias,
    dest="new", replacement="--new")`` stores into the new option's destination and warns."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.replacement = replacement

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"warning: {option_string} is deprecated; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_bad_audio_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--bad_audio``, the same on every command line that reads audio (see
    :mod:`cpc.audio_check`)."""
    parser.add_argument("--bad_audio", choices=BAD_AUDIO_CHOICES, default="refuse",
                        help="files holding NaN or infinite samples (float WAV): refuse them "
                             "(one error naming every one, before anything is written) or "
                             "skip them with a warning naming each")


def answer_help(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """If ``argv`` asks for help, parse it: argparse prints the help (or a usage error) and
    exits. Otherwise return, and the script parses ``argv`` as usual."""
    if not HELP_FLAGS.isdisjoint(argv):
        parser.parse_args(argv)


def exit_without_teardown(code: int) -> NoReturn:
    """End a finished command line now: flush stdout and stderr, then ``os._exit(code)``.

    After torch is imported, the interpreter's normal shutdown (module teardown, library
    destructors) takes 1.0-1.8 s on 2 CPU cores, a twentieth of a short training run. By the
    time a command's ``main`` returns, everything it writes is closed, and checkpoints and logs
    are renamed into place, so skipping that teardown loses nothing. Only for ``__main__``.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to deliver
            pass
    os._exit(code)


MAIN_BLOCK = re.compile(r'\nif __name__ == "__main__":\n(?:    .*\n)*?'
                        r'    (?:sys\.exit|exit_without_teardown)'
                        r'\((?:run_command\(main\)|main\(\))\)\n')


def command_line_modules(package_dir: Path) -> list[str]:
    """Dotted names of the modules under ``package_dir`` that run as a command: those whose
    ``__main__`` block ends by exiting with ``main()``'s status, through
    :func:`cpc.utils.signals.run_command` (or, wrongly, without it: a test finds those)."""
    root = package_dir.parent
    return sorted(".".join(path.relative_to(root).with_suffix("").parts)
                  for path in package_dir.rglob("*.py") if MAIN_BLOCK.search(path.read_text()))


SUBCOMMANDS = {"cpc.eval.ABX": ("from_checkpoint", "from_pre_computed"),
               "cpc.eval.common_voices_eval": ("train", "per")}


def help_command_lines(package_dir: Path) -> list[list[str]]:
    """The ``--help`` argument lists (after ``python``) of every command line and sub-command
    under ``package_dir``; train.py is launched as its documentation shows, the rest with -m."""
    lines = []
    for module in command_line_modules(package_dir):
        launch = ["cpc/train.py"] if module == "cpc.train" else ["-m", module]
        lines.append(launch + ["--help"])
        lines += [launch + [sub, "--help"] for sub in SUBCOMMANDS.get(module, ())]
    return lines
