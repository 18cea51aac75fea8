"""Name -> item registries: how encoders, context networks, criteria, workers, labellers and stats
are chosen by name (from a flag, a YAML key or a spec string).

A new item is its definition plus one registration: the item itself, by decorator or by a plain
call, or a reference ``"package.module:attribute"``, imported at the item's first lookup::

    LABELLERS = Registry("labeller")

    @LABELLERS.register("mfcc")
    class MFCCLabeller: ...

    ENCODERS.add("pase", "cpc.pase_encoder:build_pase_encoder")

``names()`` gives the ``choices=`` of the flag without importing any referenced module (this is
how :mod:`cpc.registries` lists its names without torch); an unknown name looked up is a
:class:`~cpc.utils.errors.ConfigError` naming the flag and every registered name.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, TypeVar

from cpc.utils.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Items of one ``kind`` by name; ``flag`` is the option (or setting) that selects one, named
    in the error of an unknown lookup."""

    def __init__(self, kind: str, flag: str | None = None) -> None:
        self.kind = kind
        self.flag = flag
        self._items: dict[str, T | str] = {}

    def add(self, name: str, item: T | str) -> T | str:
        """Register ``item``, or a reference ``"package.module:attribute"`` to it, under ``name``
        (ValueError if the name is taken or the reference has no ``:``); returns ``item``."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if isinstance(item, str) and ":" not in item:
            raise ValueError(f"{self.kind} {name!r}: a reference is 'package.module:attribute', got {item!r}")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        def decorator(item: T) -> T:
            return self.add(name, item)
        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def get(self, name: str) -> T:
        """The item registered as ``name`` (a reference is imported now); :class:`ConfigError`
        listing the names if there is none."""
        if name not in self._items:
            where = f"{self.flag}: " if self.flag else ""
            raise ConfigError(f"{where}unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        item = self._items[name]
        if isinstance(item, str):
            module, _, attribute = item.partition(":")
            return getattr(importlib.import_module(module), attribute)
        return item

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
