"""Options dataclasses: a component declares its command-line options beside its code, one field
per flag, and its argparse group, the values its builder receives and the flags that messages
name all derive from that declaration (fairseq's ``@register_criterion(name, dataclass=...)``).

A field is one option: its name is the option's destination, so its flag is ``--`` + name
(:func:`flag`); its default is the flag's; :func:`option` puts the one-line ``help``, optional
``aliases`` (more option strings, e.g. ``("--pathPhone",)``) and optional ``choices`` (a
sequence, or a callable giving one when the parser is built, such as a registry's ``names``)
into the field's metadata. Its annotation gives the type: ``bool`` is a switch (off by
default), ``int``, ``float`` and ``str`` take a value, ``X | None`` a value of ``X`` or nothing.
The class's ``title`` and optional ``description`` (ClassVars) name its argparse group; classes
with the same title share one group.

A subclass adds only the fields it declares to its own group: the fields it inherits belong to
its base's group (CPC-CTC's options extend CPC's), and its builder receives them all.

Imports no torch, so that a parser built from these classes (and ``--help``) needs none.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")


def option(default: Any, help: str, *, aliases: Sequence[str] = (),
           choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None) -> Any:
    """A field of an options dataclass: ``nPredicts: int = option(12, "Future steps ...")``."""
    return dataclasses.field(default=default, metadata={"help": help, "aliases": tuple(aliases),
                                                        "choices": choices})


def flag(name: str) -> str:
    """The command-line flag of the option (field) ``name``: the name users see in messages."""
    return f"--{name}"


def declared_fields(cls: type) -> list[dataclasses.Field]:
    """The fields ``cls`` declares itself, in order (not those it inherits)."""
    own = cls.__dict__.get("__annotations__", {})
    return [field for field in dataclasses.fields(cls) if field.name in own]


def option_names(classes: Iterable[type]) -> set[str]:
    """Every option (field) of the options ``classes``, inherited ones included."""
    return {field.name for cls in classes for field in dataclasses.fields(cls)}


def options_from(cls: type[T], values: argparse.Namespace) -> T:
    """The options of ``cls`` from a complete Namespace (parsed, or saved args completed with
    the defaults)."""
    return cls(**{field.name: getattr(values, field.name) for field in dataclasses.fields(cls)})


def _value_type(annotation: Any) -> Any:
    """``int`` for ``int`` and for ``int | None``."""
    kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
    return kinds[0] if kinds else annotation


def add_options(group: argparse._ArgumentGroup, cls: type) -> None:
    """One argparse option per field that ``cls`` declares, into ``group``."""
    hints = typing.get_type_hints(cls)
    for field in declared_fields(cls):
        names, meta = (flag(field.name), *field.metadata.get("aliases", ())), field.metadata
        kind = _value_type(hints[field.name])
        if kind is bool:
            if field.default is not False:
                raise TypeError(f"{cls.__name__}.{field.name}: a switch is off by default")
            group.add_argument(*names, action="store_true", help=meta["help"])
            continue
        choices = meta.get("choices")
        extra = {} if choices is None else \
            {"choices": list(choices() if callable(choices) else choices)}
        group.add_argument(*names, type=kind, default=field.default, help=meta["help"], **extra)


def add_option_groups(parser: argparse.ArgumentParser, classes: Iterable[type]) -> None:
    """The options of ``classes`` as argparse groups: each class (and each options class it
    extends, bases first, once) adds the fields it declares to the group of its ``title``,
    created at first use with that class's ``description``."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    done: set[type] = set()
    for cls in classes:
        for owner in reversed(cls.__mro__):
            if owner in done or not dataclasses.is_dataclass(owner):
                continue
            done.add(owner)
            if owner.title not in groups:
                groups[owner.title] = parser.add_argument_group(
                    owner.title, vars(owner).get("description"))
            add_options(groups[owner.title], owner)
