"""The command lines: ``--help`` imports no torch, every option has one help line with its
default shown once, and the names a flag offers are the ones the code accepts."""
from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from cpc.utils.cli import command_line_modules, help_command_lines

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "matplotlib", "scipy")  # each takes seconds to import on a small machine


def cli_modules() -> list[str]:
    """Every module of ``cpc/`` that runs as a command."""
    return command_line_modules(ROOT / "cpc")


def help_commands() -> list[list[str]]:
    """The ``--help`` command line of every CLI and sub-command."""
    return help_command_lines(ROOT / "cpc")


def test_the_command_lines_are_found():
    assert {"cpc.train", "cpc.demo", "cpc.eval.ABX", "cpc.eval.linear_separability",
            "cpc.capture.plots", "cpc.corpora.synthetic"} <= set(cli_modules())


@pytest.mark.parametrize("command", help_commands(), ids=" ".join)
def test_help_imports_no_heavy_library(command):
    done = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY)


def parser_of(main: Callable[[list[str]], int]) -> argparse.ArgumentParser:
    """The parser that ``main(["--help"])`` prints the help of."""
    printed = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "print_help",
                      lambda self, file=None: printed.append(self))
        with pytest.raises(SystemExit):
            main(["--help"])
    return printed[0]


def options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """(program, action) of every shown argument of the parser and its sub-commands."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += options(sub)
        elif action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
            found.append((parser.prog, action))
    return found


@pytest.mark.parametrize("module", cli_modules())
def test_every_option_has_a_help_without_a_written_default(module):
    for prog, action in options(parser_of(importlib.import_module(module).main)):
        name = f"{prog} {'/'.join(action.option_strings) or action.dest}"
        assert action.help and "\n" not in action.help, f"{name} has no help"
        assert not re.search(r"\(default", action.help), f"{name}: the formatter shows the default"

