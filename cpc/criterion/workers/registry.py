"""The workers by name (``WORKERS``), and ``build_workers`` from the YAML ``workers_config`` section.

A worker module registers each name with one line, e.g.::

    WORKERS.add("mfcc", WorkerSpec("regressor", build_mfcc, settings=("n_mfcc", "weight", ...)))

(``register_regressor`` / ``register_classifier`` of :mod:`.regressors` / :mod:`.classifiers`
write that line for the usual cases).

``workers_config`` (the YAML section) names the workers of each kind with their settings::

    workers_config:
      regressor:
        waveform: {weight: 1.0}
        mfcc: {n_mfcc: 13, deltas: 2}
        prosody:                # no settings: the defaults
      classifier: [lim, gim]    # a list of names is fine too

Unknown names, a name under the wrong kind and unknown settings are :class:`ConfigError` naming
what exists.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from cpc.registry import Registry
from cpc.utils.constants import SAMPLE_RATE
from cpc.utils.errors import ConfigError

from .base import Worker

KINDS = ("regressor", "classifier")
WorkerBuilder = Callable[..., Worker]  # builder(name, settings: dict, dim_encoded, sample_rate)


@dataclass(frozen=True)
class WorkerSpec:
    """A registered worker: its ``workers_config`` section (``kind``), its builder
    ``build(name, settings: dict, dim_encoded, sample_rate) -> Worker`` and the setting names it
    accepts."""

    kind: str
    build: WorkerBuilder
    settings: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"worker kind must be one of {KINDS}; got {self.kind!r}")


WORKERS: Registry[WorkerSpec] = Registry("worker", flag="workers_config")


def keyword_settings(function: Callable, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Names of the parameters of ``function`` that have a default, except ``skip``: the
    settings a worker built by it accepts."""
    return tuple(name for name, param in inspect.signature(function).parameters.items()
                 if name not in skip and param.default is not inspect.Parameter.empty)


def available_workers(kind: str | None = None) -> list[str]:
    """Registered worker names (of one kind), sorted."""
    return [name for name in WORKERS if kind in (None, WORKERS.get(name).kind)]


def _section(kind: str, section: Any) -> dict[str, dict]:
    """One section as ``{name: settings}``; accepts a mapping (settings may be empty) or a list of names."""
    if section is None:
        return {}
    if isinstance(section, list):
        if not all(isinstance(name, str) for name in section):
            raise ConfigError(f"workers_config.{kind}: a list must hold worker names only; got {section}")
        section = {name: None for name in section}
    if not isinstance(section, dict):
        raise ConfigError(f"workers_config.{kind} must map worker names to settings (or list names); "
                          f"got {type(section).__name__}")
    normalised = {}
    for name, settings in section.items():
        spec = WORKERS.get(name) if name in WORKERS else None
        if spec is None or spec.kind != kind:
            where = f" (it is a {spec.kind})" if spec else ""
            raise ConfigError(f"workers_config.{kind}: unknown {kind} {name!r}{where}; available "
                              f"{kind}s: {', '.join(available_workers(kind))}")
        settings = {} if settings is None else settings
        if not isinstance(settings, dict):
            raise ConfigError(f"workers_config.{kind}.{name}: settings must be a mapping; got {settings!r}")
        unknown = sorted(set(settings) - set(spec.settings))
        if unknown:
            raise ConfigError(f"workers_config.{kind}.{name}: unknown setting(s) {', '.join(map(str, unknown))}; "
                              f"valid: {', '.join(sorted(spec.settings))}")
        normalised[name] = dict(settings)
    return normalised


def check_workers_config(workers_config: Any) -> dict[str, dict[str, dict]]:
    """Validate ``workers_config`` and return it as ``{kind: {name: settings}}`` for both kinds."""
    if workers_config is None:
        workers_config = {}
    if not isinstance(workers_config, dict):
        raise ConfigError(f"workers_config must be a mapping with sections {', '.join(KINDS)}; "
                          f"got {type(workers_config).__name__}")
    unknown = sorted(set(workers_config) - set(KINDS))
    if unknown:
        raise ConfigError(f"workers_config: unknown section(s) {', '.join(map(str, unknown))}; "
                          f"valid: {', '.join(KINDS)}")
    return {kind: _section(kind, workers_config.get(kind)) for kind in KINDS}


def build_workers(workers_config: Any, dim_encoded: int, sample_rate: int = SAMPLE_RATE) -> nn.ModuleDict:
    """The workers of ``workers_config`` on encoded frames of ``dim_encoded``, keyed by name.

    Invalid values of a setting (a window shorter than a frame, a bad loss name...) are
    :class:`ConfigError` naming the worker.
    """
    workers = nn.ModuleDict()
    for kind, section in check_workers_config(workers_config).items():
        for name, settings in section.items():
            try:
                workers[name] = WORKERS.get(name).build(name, settings, dim_encoded, sample_rate)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"workers_config.{kind}.{name}: {exc}") from None
    return workers
