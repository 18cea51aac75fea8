"""Stats over the capture dataset: interface, spec parser and collector; the stats themselves
are registered by name in ``STATS`` (a line each in :mod:`cpc.registries`).
"""
from .base import Stat, StatError
from .collector import StatsCollector
from .registry import STATS, parse_stats_spec

__all__ = ["STATS", "Stat", "StatError", "StatsCollector", "parse_stats_spec"]
