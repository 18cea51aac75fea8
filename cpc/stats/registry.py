"""The parser of ``--captureSetStats "name:arg,arg_name2:arg,..."`` into stats of ``STATS``.

A new stat is one module with a builder ``build(arguments)`` (it receives the spec's string
arguments and raises :class:`StatError` on bad ones), plus its line in :mod:`cpc.registries`
(``STATS.add("name", "cpc.stats.module:build")``).
"""
from __future__ import annotations

import re

from cpc.registries import STATS

from .base import Stat, StatError


def parse_stats_spec(spec: str) -> list[Stat]:
    """Stats of a spec such as ``reprDiff:cosine,ctx_repr,0.05,plots_reprDiff:euclid,...``.

    Stats are separated by ``_`` followed by a registered name and ``:``, so underscores inside
    arguments (paths, ``ctx_repr``) are kept.
    """
    if not spec.strip():
        return []
    names = "|".join(re.escape(name) for name in sorted(STATS.names(), key=len, reverse=True))
    parts = re.split(rf"_(?=(?:{names}):)", spec.strip())
    stats: list[Stat] = []
    for part in parts:
        name, _, arguments = part.partition(":")
        if name not in STATS:
            raise StatError(f"--captureSetStats: unknown stat {name!r} in {spec!r}; available: "
                            f"{', '.join(STATS.names())} (format: name:arg,arg_name:arg,...)")
        stat = STATS.get(name)(arguments.split(",") if arguments else [])
        if any(stat.name == other.name for other in stats):
            raise StatError(f"--captureSetStats: {stat.name} is requested twice")
        stats.append(stat)
    return stats
