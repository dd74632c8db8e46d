"""The package's shape: the documented import layers (issue 16), module and function sizes.

Walks ``counterpoint/`` with ``ast`` (nothing is imported): every ``import`` and ``from ... import``
(lazy ones inside functions included, relative ones resolved) becomes an arrow between two
layer units — a top-level module or subpackage of ``counterpoint``. A unit may import its own or
a lower floor (a larger number), never a higher one, and the arrows must form no circle.
``counterpoint.testing`` (scripted worlds, fault knobs, local services) sits outside the order:
only tests, benchmarks and itself import it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

from _paths import PACKAGE  # noqa: E402

# The layer order (top: 0). A unit may import units of its own floor or a higher number.
LAYERS: Dict[str, int] = {
    "cli": 0,
    "pipelines": 1,
    "transforms": 2,
    "dataset": 3,
    "validation": 4,
    "config": 5, "flags": 5, "config_values": 5,
    "cache": 6, "corpus": 6, "labeling": 6, "sources": 6, "rl": 6, "rewards": 6, "clean": 6,
    "critical": 6, "training": 6,
    "generators": 7, "state": 7, "progress": 7,
    "verifiers": 8,
    "storage": 9,
    "schemas": 10,
    "segmentation": 11, "prompts": 11, "errors": 11,
}
# Floor 11 imports nothing from counterpoint.
BOTTOM = 11
# Outside the order: imported only by tests, benchmarks and themselves.
TESTING = {"testing"}
# Imports allowed against the order (none: a new entry needs a reason and an issue to remove it).
KNOWN_VIOLATIONS: Set[Tuple[str, str]] = set()

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
REASON = "Long:"  # a module's (function's) docstring that states why it is long contains this word
# Long modules and functions say why in their docstring ("Long: ..."); none is allowed silently.
LONG_MODULES: Set[str] = set()
READS_TESTS: Set[str] = set()
LONG_FUNCTIONS: Set[str] = set()


def _modules() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imported(module: str, path: Path, tree: ast.AST) -> List[Tuple[str, int]]:
    """``(dotted name, line)`` of everything ``module`` imports; ``from a import b`` gives ``a.b``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out += [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return out


def _unit(name: str, modules: Dict[str, Path]) -> str:
    """The layer unit of an imported dotted name ('' for the package root, None outside counterpoint)."""
    if name != "counterpoint" and not name.startswith("counterpoint."):
        return None
    parts = name.split(".")
    if len(parts) == 1:
        return ""
    # ``from counterpoint import __version__`` is the package root, ``from counterpoint import storage`` is not
    return parts[1] if f"counterpoint.{parts[1]}" in modules else ""


def import_arrows() -> Dict[Tuple[str, str], List[str]]:
    """``(importing unit, imported unit)`` -> where (``file:line``), over the whole package."""
    modules = _modules()
    arrows: Dict[Tuple[str, str], List[str]] = {}
    for module, path in modules.items():
        source = _unit(module, modules)
        for name, line in _imported(module, path, ast.parse(path.read_text(), str(path))):
            target = _unit(name, modules)
            if target is None or target == source:
                continue
            where = arrows.setdefault((source, target), [])
            if f"{path.relative_to(PACKAGE.parent)}:{line}" not in where:
                where.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    return arrows


def _cycles(arrows) -> List[List[str]]:
    """Strongly connected components of more than one unit (Tarjan)."""
    graph: Dict[str, Set[str]] = {}
    for a, b in arrows:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_unit_has_a_floor():
    units = {_unit(m, _modules()) for m in _modules()} - {""}
    unknown = sorted(units - set(LAYERS) - TESTING)
    assert not unknown, (f"counterpoint.{unknown[0]} is not in the layer order: add it to LAYERS in "
                         f"{Path(__file__).name} (and to the order documented in docs/architecture.md)")


def test_no_import_runs_up_the_layers():
    bad, seen = [], set()
    for (source, target), where in sorted(import_arrows().items()):
        if source in TESTING or target in TESTING or "" in (source, target):
            continue  # the root, and the testing units, are checked below
        up = LAYERS.get(target, -1) < LAYERS.get(source, -1)
        bottom = LAYERS.get(source) == BOTTOM
        if up or bottom:
            seen.add((source, target))
            if (source, target) not in KNOWN_VIOLATIONS:
                bad.append(f"{source} (floor {LAYERS.get(source)}) -> {target} (floor {LAYERS.get(target)}) "
                           f"at {', '.join(where)}")
    assert not bad, "imports against the layer order:\n  " + "\n  ".join(bad)
    stale = sorted(KNOWN_VIOLATIONS - seen)
    assert not stale, f"no longer violated, remove from KNOWN_VIOLATIONS: {stale}"


def test_no_import_circle_between_units():
    arrows = {k: v for k, v in import_arrows().items() if k not in KNOWN_VIOLATIONS and "" not in k}
    assert _cycles(arrows) == [], {
        tuple(c): {f"{a}->{b}": w for (a, b), w in arrows.items() if a in c and b in c} for c in _cycles(arrows)}


def test_the_package_root_and_the_bottom_floor_import_nothing_from_counterpoint():
    arrows = import_arrows()
    assert [k for k in arrows if k[0] == ""] == []
    assert [k for k in arrows if LAYERS.get(k[0]) == BOTTOM] == []


def test_only_testing_imports_counterpoint_testing():
    bad = {k: w for k, w in import_arrows().items() if k[1] in TESTING and k[0] not in TESTING}
    assert bad == {}, "counterpoint.testing is for tests and benchmarks only; imported from: " + str(bad)


def test_nothing_in_the_package_reads_tests():
    readers = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value == "tests" or node.value.startswith("tests/") or "/tests/" in node.value):
                readers.add(path.relative_to(PACKAGE).as_posix())
    assert sorted(readers - READS_TESTS) == [], "the package must not read tests/ (a wheel has none)"
    assert sorted(READS_TESTS - readers) == [], "no longer reads tests/, remove from READS_TESTS"


def _docstring_reason(node) -> bool:
    return REASON in (ast.get_docstring(node) or "")


def _long(kind: str, found: Dict[str, int], allowed: Set[str], limit: int) -> None:
    """Fails on an item over ``limit`` lines that is neither allowed nor says why; and on a stale allowance."""
    long = [f"{k} ({n} lines)" for k, n in sorted(found.items()) if k not in allowed]
    assert not long, (f"{kind} over {limit} lines: split them by concern, or say why at the top of the "
                      f"docstring ('{REASON} ...'): {long}")
    stale = sorted(allowed - set(found))
    assert not stale, f"no longer long (or now say why): remove from the allow-list of {kind}: {stale}"


def test_long_modules_state_why():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES and not _docstring_reason(ast.parse(text)):
            found[path.relative_to(PACKAGE).as_posix()] = n
    _long("modules", found, LONG_MODULES, MAX_MODULE_LINES)


def test_long_functions_state_why():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and not _docstring_reason(node):
                    found[f"{path.relative_to(PACKAGE).as_posix()}:{node.name}"] = n
    _long("functions", found, LONG_FUNCTIONS, MAX_FUNCTION_LINES)


def test_the_checker_sees_what_it_must():
    """The walker itself: lazy, relative and root imports resolve to the right units."""
    modules = {"counterpoint": Path("__init__.py"), "counterpoint.storage": Path("storage.py"),
               "counterpoint.validation": Path("validation/__init__.py"),
               "counterpoint.validation.gate": Path("validation/gate.py")}
    tree = ast.parse("from counterpoint import __version__, storage\n"
                     "def f():\n    from ..storage import join\n    from . import suites\n"
                     "import counterpoint.validation.gate\nimport os\n")
    names = _imported("counterpoint.validation.gate", Path("validation/gate.py"), tree)
    assert [(n, _unit(n, modules)) for n, _ in names] == [
        ("counterpoint.__version__", ""), ("counterpoint.storage", "storage"),
        ("counterpoint.validation.gate", "validation"), ("os", None),
        ("counterpoint.storage.join", "storage"), ("counterpoint.validation.suites", "validation")]
    assert _cycles({("a", "b"): [], ("b", "c"): [], ("c", "a"): [], ("c", "d"): []}) == [["a", "b", "c"]]
    assert _cycles({("a", "b"): [], ("b", "c"): []}) == []
