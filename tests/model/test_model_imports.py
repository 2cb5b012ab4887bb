"""oommodel imports nothing of the sweep side's stack (its cycles: tests/test_layout.py)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "oommodel"
FORBIDDEN = ("sweeps", "ray", "mlflow", "pyarrow", "pandas")


def test_oommodel_imports_no_ray_mlflow_pyarrow_pandas_or_sweeps() -> None:
    for f in PKG.rglob("*.py"):
        names: set[str] = set()
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                names.add(n.module)
            elif isinstance(n, ast.Import):
                names.update(a.name for a in n.names)
        bad = sorted(m for m in names if m.split(".")[0] in FORBIDDEN)
        assert not bad, f"{f.relative_to(PKG.parent)} imports {bad}"
