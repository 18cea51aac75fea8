"""The Registry type and the registries built on it."""
import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from cpc.registries import CRITERIA
from cpc.criterion.cpc import HEADS
from cpc.criterion.workers.labellers import LABELLERS
from cpc.criterion.workers.registry import WORKERS, WorkerSpec
from cpc.model import ARS, ENCODERS, NORM_LAYERS
from cpc.registry import Registry
from cpc.stats import STATS
from cpc.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FLAG_REGISTRIES = (ENCODERS, ARS, NORM_LAYERS, HEADS, CRITERIA, STATS)


def test_register_and_add_store_items_and_return_them():
    registry = Registry("thing")

    @registry.register("b")
    def build_b():
        return "b"

    assert registry.add("a", len) is len
    assert registry.get("b") is build_b and registry["a"] is len
    assert registry.names() == ["a", "b"] and list(registry) == ["a", "b"]
    assert len(registry) == 2 and "a" in registry and "c" not in registry


def test_duplicate_name_is_refused_naming_kind_and_name():
    registry = Registry("encoder")
    registry.add("cpc", object())
    with pytest.raises(ValueError, match="encoder 'cpc' is already registered"):
        registry.add("cpc", object())
    with pytest.raises(ValueError, match="encoder 'cpc' is already registered"):
        registry.register("cpc")(object())


def test_unknown_lookup_names_flag_kind_and_available_names():
    registry = Registry("encoder", flag="--encoder_type")
    for name in ("pase", "cpc", "mfcc"):
        registry.add(name, object())
    with pytest.raises(ConfigError) as error:
        registry.get("x")
    assert str(error.value) == "--encoder_type: unknown encoder 'x'; available: cpc, mfcc, pase"
    with pytest.raises(ConfigError, match="^unknown stat 'y'; available: $"):
        Registry("stat")["y"]


def test_every_registry_of_the_package_is_a_registry_with_its_members():
    assert ENCODERS.names() == ["cpc", "lfb", "mfcc", "pase"]
    assert ARS.names() == ["GRU", "LSTM", "QRNN", "RNN", "no_ar", "transformer"]
    assert NORM_LAYERS.names() == ["ID", "batchNorm", "instanceNorm", "layerNorm"]
    assert HEADS.names() == ["LSTM", "RNN", "conv12", "conv4", "conv8", "ffd", "linear", "transformer"]
    assert CRITERIA.names() == ["cpc", "cpcctc", "phone", "phone_ctc", "speaker"]
    assert LABELLERS.names() == ["fbank", "lps", "mfcc", "prosody", "waveform"]
    assert {"waveform", "lps", "mfcc", "prosody", "lim", "gim", "spc"} <= set(WORKERS)
    assert all(isinstance(WORKERS.get(name), WorkerSpec) for name in WORKERS)
    assert "reprDiff" in STATS
    with pytest.raises(ConfigError, match="--rnnMode: unknown prediction head 'gru'"):
        HEADS.get("gru")
    with pytest.raises(ConfigError, match="--normMode: unknown norm layer 'LN'; available: ID, batchNorm"):
        NORM_LAYERS.get("LN")


def test_worker_spec_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="worker kind"):
        WorkerSpec("regresor", lambda *args: None, ())


def test_a_reference_is_imported_at_its_first_lookup(tmp_path, monkeypatch):
    (tmp_path / "lazy_item.py").write_text("BUILD = object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("thing")
    registry.add("lazy", "lazy_item:BUILD")
    assert registry.names() == ["lazy"] and "lazy" in registry and "lazy_item" not in sys.modules
    assert registry.get("lazy") is importlib.import_module("lazy_item").BUILD
    monkeypatch.delitem(sys.modules, "lazy_item")
    with pytest.raises(ValueError, match="a reference is 'package.module:attribute'"):
        registry.add("bad", "lazy_item.BUILD")


@pytest.mark.parametrize("registry", FLAG_REGISTRIES, ids=lambda registry: registry.kind)
def test_every_reference_of_the_flag_registries_resolves(registry):
    assert all(callable(registry.get(name)) for name in registry)


def test_the_flag_registries_are_complete_without_torch():
    """Their names as the parser sees them (cpc.registries alone, no torch) are all the names
    there are once every module of the package is imported: nothing registers elsewhere."""
    code = """
import importlib, pkgutil, sys
import cpc, cpc.registries as r
names = lambda: {k: v.names() for k, v in vars(r).items() if isinstance(v, r.Registry)}
before = names()
assert "torch" not in sys.modules
for module in pkgutil.walk_packages(cpc.__path__, "cpc."):
    importlib.import_module(module.name)
assert "torch" in sys.modules and names() == before, (before, names())
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr


def test_an_item_names_its_options_resolved_without_importing_the_item(tmp_path, monkeypatch):
    (tmp_path / "lazy_options.py").write_text(
        "from dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass Opts:\n"
        "    width: int = 3\n")
    (tmp_path / "lazy_builder.py").write_text("def build(options, *, extra):\n"
                                              "    return options.width + extra\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("thing", options=int)
    registry.add("plain", len)
    registry.add("lazy", "lazy_builder:build", options="lazy_options:Opts")
    registry.register("again", options="lazy_options:Opts")(len)
    assert "lazy_options" not in sys.modules
    opts = importlib.import_module("lazy_options").Opts
    assert registry.option_classes() == [opts] and "lazy_builder" not in sys.modules
    assert registry.options_of("lazy") is opts and registry.options_of("plain") is int
    assert registry.build("lazy", argparse.Namespace(width=4, other=0), extra=1) == 5
    monkeypatch.delitem(sys.modules, "lazy_options")
    monkeypatch.delitem(sys.modules, "lazy_builder")
    with pytest.raises(ValueError, match="thing 'bad' options: a reference is"):
        registry.add("bad", len, options="lazy_options.Opts")
