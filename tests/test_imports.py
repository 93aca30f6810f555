"""The import rules of ``service/``: no cycles between modules, and no edge back down the layers.

Layers, lowest first; a module may import its own package and the layers below it, never a unit at
its own layer or above::

    the base    0  service (the package: __version__), errors, jit, metrics
                1  types
                2  scrape_config (the ``scrape_configs`` model: a settings type like the rest)
                3  config (the settings)
                4  pprof/ (decode, encode, merge, content hashes)
                5  protocols/ (generated Pyroscope API; it embeds pprof's message)
                5  collector/ (scrapes; hands profiles to a sink that app.py connects to the store)
                5  store/
                6  query/
                7  analysis/
                8  api/, cli_format
                9  app (the composition root), cli_client
               10  cli

So the base imports nothing of ours but the base (the settings only errors, types and their own
models), ``pprof/`` only the base, ``collector/`` neither ``store/`` nor ``api/`` (and ``store/``
not ``collector/``: same layer), ``store/`` neither ``query/`` nor ``api/``. Every import counts,
wherever it is written: at the top, inside a function (a lazy import that dodges a cycle at run time
is still the cycle), under ``TYPE_CHECKING``; relative imports are resolved. A new top-level module
or package fails here until it is given a layer, so that where it sits is a decision.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "service"

# Top-level unit (first component under service/, or "service" for the package itself) → layer.
LAYERS: dict[str, int] = {
    "service": 0,
    "errors": 0,
    "jit": 0,
    "metrics": 0,
    "types": 1,
    "scrape_config": 2,
    "config": 3,
    "pprof": 4,
    "protocols": 5,
    "collector": 5,
    "store": 5,
    "query": 6,
    "analysis": 7,
    "api": 8,
    "cli_format": 8,
    "app": 9,
    "cli_client": 9,
    "cli": 10,
}

Edge = tuple[str, str, str]  # importer, imported, "path:line"


def modules(root: Path, package: str = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Every module of ``package`` under ``root``: dotted name → (file, is a package ``__init__``)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> Iterator[str]:
    """The dotted names an import statement may load: ``from a.b import c`` loads ``a.b`` and maybe ``a.b.c``."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(parts[: len(parts) - (node.level - 1)])
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    yield source
    yield from (f"{source}.{alias.name}" for alias in node.names)


def edges(root: Path, package: str = PACKAGE) -> set[Edge]:
    """Module → module import edges inside ``package``, each with where it is written."""
    mods = modules(root, package)

    def owner(name: str) -> str | None:
        # ``a.b.c`` where c is a name, not a module, is an import of ``a.b``; a namespace package
        # (pprof/ has no __init__) resolves to the nearest package that has one.
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    found: set[Edge] = set()
    for module, (path, is_package) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported(node, module, is_package):
                target = owner(name) if name == package or name.startswith(package + ".") else None
                if target is not None and target != module:
                    found.add((module, target, f"{path.relative_to(root)}:{node.lineno}"))
    return found


def unit(module: str) -> str:
    """The top-level unit a module belongs to: ``service.store.db`` → ``store``, ``service`` → ``service``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(graph: set[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's, iterative)."""
    succ: dict[str, set[str]] = {}
    for a, b, _ in graph:
        succ.setdefault(a, set()).add(b)
        succ.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(succ):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(succ[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(succ[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component: list[str] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def back_edges(graph: set[Edge]) -> list[str]:
    """Edges from a unit to another unit at its own layer or above, worded for the failure message."""
    bad = []
    for a, b, where in sorted(graph):
        ua, ub = unit(a), unit(b)
        if ua != ub and LAYERS[ub] >= LAYERS[ua]:
            bad.append(f"{where}: {a} (layer {LAYERS[ua]}, {ua}) imports {b} (layer {LAYERS[ub]}, {ub})")
    return bad


@pytest.fixture(scope="module")
def graph() -> set[Edge]:
    return edges(ROOT)


def test_every_module_has_a_layer(graph: set[Edge]) -> None:
    unplaced = sorted({unit(m) for m in modules(ROOT)} - LAYERS.keys())
    assert not unplaced, f"modules of service/ without a layer in tests/test_imports.py LAYERS: {unplaced}"
    assert len(graph) > 200  # the parser sees the real imports, not an empty graph


def test_no_import_cycles(graph: set[Edge]) -> None:
    found = cycles(graph)
    lines = [
        f"cycle {' ↔ '.join(c)}: " + "; ".join(f"{w} {a} → {b}" for a, b, w in sorted(graph) if a in c and b in c)
        for c in found
    ]
    assert not found, "import cycles in service/:\n" + "\n".join(lines)


def test_no_back_edges(graph: set[Edge]) -> None:
    bad = back_edges(graph)
    assert not bad, "imports against the layers (see this file's docstring):\n" + "\n".join(bad)


def test_the_checks_see_every_kind_of_import(tmp_path: Path) -> None:
    """A cycle hidden in a function-level relative import, and a lazy back-edge, are both found."""
    pkg = tmp_path / "svc"
    (pkg / "store").mkdir(parents=True)
    (pkg / "api").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "store" / "__init__.py").write_text("")
    (pkg / "api" / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from svc.types import T\n")
    (pkg / "types.py").write_text("from .errors import f\nT = 1\n")
    (pkg / "store" / "db.py").write_text("from ..api import routes\n")
    (pkg / "api" / "routes.py").write_text("from svc.store import db\n")
    found = edges(tmp_path, "svc")
    assert {(a, b) for a, b, _ in found} == {
        ("svc.errors", "svc.types"),
        ("svc.types", "svc.errors"),
        ("svc.store.db", "svc.api"),
        ("svc.store.db", "svc.api.routes"),
        ("svc.api.routes", "svc.store"),
        ("svc.api.routes", "svc.store.db"),
    }
    assert cycles(found) == [["svc.api.routes", "svc.store.db"], ["svc.errors", "svc.types"]]
    assert back_edges({("svc.store.db", "svc.api.routes", "svc/store/db.py:1")}) == [
        "svc/store/db.py:1: svc.store.db (layer 5, store) imports svc.api.routes (layer 8, api)"
    ]
