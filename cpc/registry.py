"""Name -> item registries: how encoders, context networks, criteria, workers, labellers and stats
are chosen by name (from a flag, a YAML key or a spec string).

A new item is its definition plus one registration, by decorator or by a plain call::

    ENCODERS = Registry("encoder", flag="--encoder_type")

    @ENCODERS.register("mfcc")
    def build_mfcc(args): ...

    ENCODERS.add("pase", build_pase_encoder)

``names()`` gives the ``choices=`` of the flag; an unknown name looked up is a
:class:`~cpc.utils.errors.ConfigError` naming the flag and every registered name.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from cpc.utils.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Items of one ``kind`` by name; ``flag`` is the option (or setting) that selects one, named
    in the error of an unknown lookup."""

    def __init__(self, kind: str, flag: str | None = None) -> None:
        self.kind = kind
        self.flag = flag
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name`` (ValueError if the name is taken); returns ``item``."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
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
        """The item registered as ``name``; :class:`ConfigError` listing the names if there is none."""
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
