"""The import graph of ``cpc/``: no circle (imports under ``if TYPE_CHECKING:`` and inside
functions included), and no module importing one from a layer above its own.

The layers, lowest first (a module may import its own layer and those below):

0. infrastructure: ``cpc.utils``, the registry type;
1. torch-free declarations: the registries, the option modules, the names a flag lists;
2. math and data primitives: audio, features, data loading, stats, run log, capture files;
3. the model and what it is trained on: encoders, context networks, criteria, workers,
   objectives, health;
4. libraries that use a trained model: feature loader, hub, probes, capture writer,
   evaluation and unit cores;
5. the training engine: trainer and its hooks;
6. entry points: ``train.py``, run resolution, command-line tools, the demo.

A new module must be placed in a layer here (the test names it otherwise).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (layer, module-name prefixes); the longest matching prefix decides
LAYERS: dict[int, tuple[str, ...]] = {
    0: ("cpc.utils", "cpc.registry"),
    1: ("cpc.registries", "cpc.options", "cpc.eval.options", "cpc.capture.options",
        "cpc.units.options", "cpc.collapse_rule", "cpc.capture.kinds", "cpc.probes.config",
        "cpc.architecture", "cpc.model_options", "cpc.pase_encoder_options",
        "cpc.criterion.options", "cpc.criterion.recipe"),
    2: ("cpc.audio_check", "cpc.audio_features", "cpc.dropout", "cpc.precision",
        "cpc.transformers", "cpc.qrnn", "cpc.data", "cpc.stats", "cpc.run_log",
        "cpc.capture.completeness", "cpc.capture.loader", "cpc.corpora.espeak",
        "cpc.criterion.base", "cpc.criterion.soft_align"),
    3: ("cpc.model", "cpc.pase_encoder", "cpc.criterion", "cpc.health", "cpc.collapse_guard"),
    4: ("cpc.feature_loader", "cpc.hub", "cpc.probes", "cpc.capture.writer", "cpc.eval.abx_core",
        "cpc.eval.ctc_decoding", "cpc.eval.phone_sequences", "cpc.eval.phone_recognition",
        "cpc.units.kmeans", "cpc.units.clusters", "cpc.units.features", "cpc.units.quality"),
    5: ("cpc.trainer", "cpc.hooks"),
    6: ("cpc.train", "cpc.run_config", "cpc.config_file", "cpc.demo", "cpc.eval", "cpc.units",
        "cpc.capture", "cpc.corpora"),
}


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted((ROOT / "cpc").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: imported(name, path, known) for name, path in known.items()}


def layer_of(name: str) -> int | None:
    matches = [(len(prefix), layer) for layer, prefixes in LAYERS.items() for prefix in prefixes
               if name == prefix or name.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circle():
    assert circles(import_graph()) == []


def test_every_module_has_a_layer():
    assert [name for name in import_graph() if name != "cpc" and layer_of(name) is None] == []


def test_no_module_imports_one_above_its_layer():
    upward = [f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})"
              for name, targets in import_graph().items() if name != "cpc"
              for target in sorted(targets)
              if layer_of(target) is not None and layer_of(name) is not None
              and layer_of(target) > layer_of(name)]
    assert upward == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
