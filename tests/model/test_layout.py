"""oommodel's import graph: no cycles (type-only imports included), and nothing from the sweep side."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "oommodel"
FORBIDDEN = ("sweeps", "ray", "mlflow", "pyarrow", "pandas")


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def _imports(f: Path) -> set[str]:
    """Every module named by an import anywhere in f (module level, TYPE_CHECKING and functions)."""
    names: set[str] = set()
    for n in ast.walk(ast.parse(f.read_text())):
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            names.add(n.module)
            names.update(f"{n.module}.{a.name}" for a in n.names)
        elif isinstance(n, ast.Import):
            names.update(a.name for a in n.names)
    return names


def test_oommodel_imports_nothing_of_the_sweep_side() -> None:
    for name, f in _modules().items():
        bad = sorted(m for m in _imports(f) if m.split(".")[0] in FORBIDDEN)
        assert not bad, f"{name} imports {bad}"


def test_oommodel_has_no_import_cycle() -> None:
    mods = _modules()
    graph = {name: {m for m in _imports(f) if m in mods and m != name} for name, f in mods.items()}
    # a package's __init__ re-exports its modules: an edge into the package is an edge into them
    done: set[str] = set()
    on_path: list[str] = []

    def visit(v: str) -> None:
        if v in on_path:
            cycle = on_path[on_path.index(v):] + [v]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if v in done:
            return
        on_path.append(v)
        for w in sorted(graph[v]):
            if not (w == v.rsplit(".", 1)[0] and mods[w].name == "__init__.py"):
                visit(w)
        on_path.pop()
        done.add(v)

    for v in sorted(graph):
        visit(v)
