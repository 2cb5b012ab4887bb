"""sweeps/submit.py works the way `ray submit` runs it: alone in $HOME, `python ~/submit.py ARGS`."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = ROOT / "sweeps" / "submit.py"


def test_imports_only_the_standard_library():
    tree = ast.parse(SUBMIT.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


def _as_ray_submit_runs_it(home: Path, args: list[str], project: Path | None = None) -> subprocess.CompletedProcess:
    """A copy of the script alone in a fresh HOME, cwd HOME, with the environment `ray submit` forces."""
    shutil.copy(SUBMIT, home / "submit.py")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if project is not None:
        env["OOMSWEEP_PROJECT"] = str(project)
    return subprocess.run([sys.executable, str(home / "submit.py"), *args], cwd=home, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_finds_the_sweep_under_the_project_copy_and_adds_address_auto(tmp_path):
    p = _as_ray_submit_runs_it(tmp_path, ["--print-command", "tests/infra/data/tiny.yaml"], project=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[1:] == ["-m", "sweeps", "run", str(ROOT / "tests/infra/data/tiny.yaml"), "--address", "auto"]
    # An explicit --address wins; the rest goes to `oomsweep run` unchanged.
    p = _as_ray_submit_runs_it(tmp_path, ["--print-command", "tests/infra/data/tiny.yaml", "--address", "ray://h:10001",
                                          "--no-mlflow"], project=ROOT)
    assert p.stdout.split()[5:] == ["--address", "ray://h:10001", "--no-mlflow"]


@pytest.mark.slow
def test_missing_sweep_file_is_one_line_and_exit_2(tmp_path):
    p = _as_ray_submit_runs_it(tmp_path, ["configs/nope.yaml"], project=tmp_path / "nowhere")
    assert p.returncode == 2 and p.stderr.strip().startswith("submit.py: error: configs/nope.yaml")


@pytest.mark.slow
def test_runs_the_installed_package_and_passes_its_exit_code(tmp_path):
    # --serial: no Ray here (the cluster path is tests/infra/test_ray_submit.py); output relative to cwd = HOME.
    p = _as_ray_submit_runs_it(tmp_path, ["tests/infra/data/tiny.yaml", "--serial", "--no-mlflow"], project=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    df = pd.read_parquet(tmp_path / "results" / "sweep=infra-tiny")
    assert len(df) == 16
    bad = _as_ray_submit_runs_it(tmp_path, ["tests/infra/data/tiny.yaml", "--workers", "0"], project=ROOT)
    assert bad.returncode == 2  # oomsweep's "bad input" code comes back unchanged
