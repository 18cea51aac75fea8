"""Name -> item registries: how encoders, context networks, criteria, workers, labellers and stats
are chosen by name (from a flag, a YAML key or a spec string).

A new item is its definition plus one registration: the item itself, by decorator or by a plain
call, or a reference ``"package.module:attribute"``, imported at the item's first lookup::

    LABELLERS = Registry("labeller")

    @LABELLERS.register("mfcc")
    class MFCCLabeller: ...

    ENCODERS.add("pase", "cpc.pase_encoder:build_pase_encoder")

An item may name its options dataclass (:mod:`cpc.utils.option_classes`), as fairseq's
``@register_criterion(name, dataclass=...)``: the class or a reference to it, imported when the
parser is built (:meth:`Registry.option_classes`), never the item itself::

    CRITERIA.add("cpcctc", "cpc.criterion.cpc_ctc:build",
                 options="cpc.criterion.options:CPCCTCOptions")

Its builder then receives those options; an item naming none receives the registry's
``options`` (for an encoder, the model's), or nothing.

``names()`` gives the ``choices=`` of the flag without importing any referenced module (this is
how :mod:`cpc.registries` lists its names without torch); an unknown name looked up is a
:class:`~cpc.utils.errors.ConfigError` naming the flag and every registered name.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

from cpc.utils.errors import ConfigError
from cpc.utils.option_classes import options_from

T = TypeVar("T")


def resolve(reference: str) -> Any:
    """The attribute that ``"package.module:attribute"`` names, its module imported now."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _check_reference(what: str, reference: object) -> None:
    if isinstance(reference, str) and ":" not in reference:
        raise ValueError(f"{what}: a reference is 'package.module:attribute', got {reference!r}")


class Registry(Generic[T]):
    """Items of one ``kind`` by name; ``flag`` is the option (or setting) that selects one, named
    in the error of an unknown lookup."""

    def __init__(self, kind: str, flag: str | None = None,
                 options: type | str | None = None) -> None:
        """``options``: the options dataclass (or a reference to it) of the items that name
        none."""
        _check_reference(f"{kind} options", options)
        self.kind = kind
        self.flag = flag
        self.default_options = options
        self._items: dict[str, tuple[T | str, type | str | None]] = {}  # name -> item, options

    def add(self, name: str, item: T | str, options: type | str | None = None) -> T | str:
        """Register ``item``, or a reference ``"package.module:attribute"`` to it, under ``name``,
        with its options dataclass (or a reference to it), if it has one (ValueError if the
        name is taken or a reference has no ``:``); returns ``item``."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        _check_reference(f"{self.kind} {name!r}", item)
        _check_reference(f"{self.kind} {name!r} options", options)
        self._items[name] = (item, options)
        return item

    def register(self, name: str, options: type | str | None = None) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        def decorator(item: T) -> T:
            return self.add(name, item, options)
        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def get(self, name: str) -> T:
        """The item registered as ``name`` (a reference is imported now); :class:`ConfigError`
        listing the names if there is none."""
        item = self._entry(name)[0]
        return resolve(item) if isinstance(item, str) else item

    def options_of(self, name: str) -> type | None:
        """The options dataclass of the item ``name``: its own, else the registry's, else
        None (a reference is imported now, not the item)."""
        options = self._entry(name)[1] or self.default_options
        return resolve(options) if isinstance(options, str) else options

    def option_classes(self) -> list[type]:
        """The options dataclasses the items name, each once, in registration order (the
        registry's own ``options`` aside)."""
        classes: list[type] = []
        for _, options in self._items.values():
            cls = resolve(options) if isinstance(options, str) else options
            if cls is not None and cls not in classes:
                classes.append(cls)
        return classes

    def build(self, name: str, values: argparse.Namespace, *args: Any, **kwargs: Any) -> Any:
        """Call the item ``name`` with its options taken from ``values`` (a complete Namespace)
        first, if it has options, then ``args`` and ``kwargs``."""
        options = self.options_of(name)
        first = () if options is None else (options_from(options, values),)
        return self.get(name)(*first, *args, **kwargs)

    def _entry(self, name: str) -> tuple[T | str, type | str | None]:
        if name not in self._items:
            where = f"{self.flag}: " if self.flag else ""
            raise ConfigError(f"{where}unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._items[name]

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
