"""The package's import graph is layered: no module imports one of a higher layer, so there are no
import cycles (function-level and type-checking imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dnarch"

# lowest first; a module may import its own layer's modules and any lower layer's
LAYERS = [
    {"tasks", "files", "flops", "config", "provenance", "plan"},
    {"functional"},
    {"nn"},
    {"models", "data"},
    {"cost"},
    {"export"},
    {"train", "baselines"},
    {"report"},
    {"runner"},
    {"api", "config_doc"},
    {"cli", "__main__", "__init__"},
]


def _import_statements() -> dict[str, list[tuple[str | None, list[str]]]]:
    """Every dnarch module and its import statements, each as (the module ``from`` names, with
    relative imports resolved; None for a plain ``import``) and the names it imports."""
    statements: dict[str, list[tuple[str | None, list[str]]]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rsplit(".", 1)[0]
        found: list[tuple[str | None, list[str]]] = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                found.append((target, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                found.append((None, [a.name for a in node.names]))
        statements[module] = found
    return statements


def _module_imports() -> dict[str, set[str]]:
    """Every dnarch module and the dnarch modules it imports (``from dnarch.x import y`` counts as
    importing ``dnarch.x.y`` when that is a module, else ``dnarch.x``)."""
    graph: dict[str, set[str]] = {}
    for module, found in _import_statements().items():
        names: set[str] = set()
        for target, imported in found:
            if target is None:
                names |= set(imported)
            else:
                names |= {target, *(f"{target}.{n}" for n in imported)}
        graph[module] = {n for n in names if n.startswith("dnarch")}
    return {m: {n for n in deps if n in graph and n != m} for m, deps in graph.items()}


def _unit(module: str) -> str:
    """``dnarch.train.trainer`` -> ``train``; ``dnarch`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> list[tuple[str, str]]:
    """(importer, imported) units of every dnarch-internal import in the package."""
    edges = []
    for module, found in _import_statements().items():
        for target, imported in found:
            if target is None:
                names = imported
            elif target == "dnarch":
                names = [f"dnarch.{n}" for n in imported]
            else:
                names = [target]
            edges += [(_unit(module), _unit(n)) for n in names if n.startswith("dnarch.")]
    return edges


def test_every_unit_has_a_layer() -> None:
    units = {p.stem if p.parent == PACKAGE else p.parent.name for p in PACKAGE.rglob("*.py")}
    units = {u for u in units if not u.startswith("_") or u in ("__init__", "__main__")}
    placed = set().union(*LAYERS)
    assert units <= placed, sorted(units - placed)


def test_no_module_imports_a_higher_layer() -> None:
    level = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
    upward = sorted({(a, b) for a, b in _imports() if level[b] > level[a]})
    assert not upward, upward


def test_no_import_cycle_between_modules() -> None:
    """Within a layer too: no module reaches itself through its imports, type-checking and
    function-level ones included (a package's ``__init__`` importing its own modules aside)."""
    graph = _module_imports()
    for module in graph:  # a package may gather its modules; they do not count as importing it
        graph[module] = {n for n in graph[module] if not module.startswith(n + ".")}
    cycles = []
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m == start:
                cycles.append(start)
                break
            if m not in seen:
                seen.add(m)
                todo += graph[m]
    assert not cycles, sorted(cycles)
