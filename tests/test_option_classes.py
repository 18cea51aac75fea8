"""Options dataclasses: the argparse groups made from them, the options a resumed run restores
(derived from the registered components, whatever they are) and the flags messages name."""
from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass
from typing import ClassVar

import pytest

from cpc.architecture import BUILD_INPUTS, architecture_classes, architecture_options, model_args
from cpc.model_options import ModelOptions
from cpc.options import build_parser, complete_with_defaults
from cpc.registries import ARS, CRITERIA, ENCODERS
from cpc.registry import Registry
from cpc.run_config import reconcile_with_saved, restore_omitted
from cpc.utils.errors import ConfigError
from cpc.utils.option_classes import add_option_groups, flag, option, options_from

SIZES = Registry("size")
SIZES.add("small", object())
SIZES.add("large", object())


@dataclass(frozen=True)
class ToyOptions:
    title: ClassVar[str] = "Toy"
    description: ClassVar[str] = "A toy component."

    width: int = option(4, "Units.")
    rate: float = option(0.5, "A rate.")
    name: str = option("a", "A name.", aliases=("--toyName",), choices=("a", "b"))
    size: str = option("small", "A size.", choices=SIZES.names)
    limit: int | None = option(None, "A limit, or none.")
    on: bool = option(False, "A switch.")


@dataclass(frozen=True)
class BiggerToyOptions(ToyOptions):
    title: ClassVar[str] = "Bigger toy"

    depth: int = option(2, "Layers.")


def toy_parser(*classes: type) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_option_groups(parser, classes)
    return parser


def test_a_dataclass_becomes_an_argparse_group_of_its_fields():
    parser = toy_parser(ToyOptions)
    defaults = parser.parse_args([])
    assert vars(defaults) == {"width": 4, "rate": 0.5, "name": "a", "size": "small",
                              "limit": None, "on": False}
    given = parser.parse_args(["--width", "7", "--rate", "2e-3", "--toyName", "b", "--size",
                               "large", "--limit", "3", "--on"])
    assert options_from(ToyOptions, given) == ToyOptions(7, 0.002, "b", "large", 3, True)
    help_text = parser.format_help()
    assert re.search(r"Toy:\n  A toy component\.\n\n  --width WIDTH +Units\.", help_text)
    assert "--name {a,b}, --toyName {a,b}" in help_text and "--size {large,small}" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["--size", "medium"])


def test_a_subclass_adds_only_its_own_fields_to_its_group_and_builds_from_all():
    parser = toy_parser(BiggerToyOptions, ToyOptions)
    help_text = parser.format_help()
    assert help_text.count("--width WIDTH ") == 1 and help_text.count("--depth DEPTH ") == 1
    assert help_text.index("Toy:") < help_text.index("--width WIDTH ") < \
        help_text.index("Bigger toy:") < help_text.index("--depth DEPTH ")
    values = parser.parse_args(["--depth", "3", "--width", "5"])
    assert options_from(BiggerToyOptions, values) == BiggerToyOptions(width=5, depth=3)


def test_a_switch_must_be_off_by_default():
    @dataclass(frozen=True)
    class Wrong:
        title: ClassVar[str] = "Wrong"
        on: bool = option(True, "Always on.")

    with pytest.raises(TypeError, match="Wrong.on: a switch is off by default"):
        toy_parser(Wrong)


def test_flags_are_the_field_names():
    assert flag("CPCCTCNumMatched") == "--CPCCTCNumMatched"


def test_the_restored_set_is_the_options_of_the_model_and_every_registered_component():
    classes = {ModelOptions} | {registry.options_of(name) for registry in (ENCODERS, ARS, CRITERIA)
                                for name in registry} - {None}
    assert set(architecture_classes()) == classes
    fields = {field.name for cls in classes for field in dataclasses.fields(cls)}
    assert architecture_options() == fields
    assert {"encoder_type", "hiddenGar", "abspos", "pase_skip", "criterion", "nPredicts",
            "CPCCTCNumMatched", "supervised", "nLevelsPhone"} <= fields
    defaults = build_parser().parse_args([])
    for cls in classes:  # every field is a flag of the parser, with the field's default
        assert dataclasses.asdict(cls()) == {name: getattr(defaults, name)
                                             for name in dataclasses.asdict(cls())}
    assert set(model_args(defaults)) == fields | BUILD_INPUTS


def test_a_component_registered_at_runtime_has_its_options_parsed_and_restored(monkeypatch):
    monkeypatch.setattr(CRITERIA, "_items", dict(CRITERIA._items))
    CRITERIA.add("toy", lambda options, **_: None, options=BiggerToyOptions)
    assert {"width", "depth", "limit", "on"} <= architecture_options()
    parser = build_parser()
    assert parser.parse_args(["--criterion", "toy", "--depth", "5"]).depth == 5
    saved = {**vars(parser.parse_args(["--criterion", "toy", "--depth", "5", "--on"])),
             "random_seed": 1}
    omitted = parser.parse_args([])  # a resume that repeats none of them
    restored = reconcile_with_saved(restore_omitted(omitted, saved, set(), set()), saved, set(),
                                    architecture_options(), "runs/toy")
    assert (restored.criterion, restored.depth, restored.on) == ("toy", 5, True)
    contradicting = parser.parse_args(["--depth", "6"])
    with pytest.raises(ConfigError, match="^--depth 6 contradicts the run in runs/toy, trained "
                                          "with --depth 5; use another --pathCheckpoint or "
                                          "--restart$"):
        reconcile_with_saved(contradicting, saved, {"depth"}, architecture_options(), "runs/toy")
    assert complete_with_defaults({"criterion": "toy"}).depth == 2
