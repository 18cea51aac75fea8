"""Stats over the capture dataset: interface, registry, collector, and the registered stats.

Importing this package registers every stat; a new stat module must be imported here.
"""
from . import repr_diff  # noqa: F401  (registers reprDiff)
from .base import Stat, StatError
from .collector import StatsCollector
from .registry import STATS, parse_stats_spec

__all__ = ["STATS", "Stat", "StatError", "StatsCollector", "parse_stats_spec"]
