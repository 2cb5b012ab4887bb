"""Shared test setup: quiet, private Ray and MLflow; one local Ray for the whole session.

Environment is set at import time, before any test imports ray or mlflow: usage
stats and telemetry off, and MLflow's per-run URL prints off.  HOME is left
alone: the embedded Ray that sweeps.execution.ray_executor starts keeps its auth token in the
environment of its own processes and never writes ~/.ray (ecosystem.md §0.7),
and tests that use ssh need the real HOME.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RAY_ADDRESS", None)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray with 2 CPUs, started once and shared by every test that needs it."""
    from sweeps.execution.ray_executor import RayExecutor

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    ex = RayExecutor(workers=2).start()
    try:
        yield ex
    finally:
        ex.close()
        for k, v in saved.items():  # the per-run token must not leak into later tests' clusters
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# Fixtures that start Ray or another process: a test that asks for one is `slow` even if unmarked.
_PROCESS_FIXTURES = frozenset({"ray_session", "run_cli", "mlflow_server"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


HANDA = CONFIGS / "scenarios" / "handa-2018-11-14.yaml"


def _write_sweep(directory: Path, name: str = "tiny", **overrides) -> Path:
    import yaml

    data = {
        "name": name,
        "base": str(HANDA),
        "grid": {"victim.sched_at_handover": ["unchanged", "idle"]},
        "policies": ["upstream_4_19", "timeout_backoff"],
        "replicates": 4,
        "seed": 11,
        "output": "results/",
    }
    data.update(overrides)
    path = Path(directory) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def write_sweep():
    """write_sweep(dir, name="tiny", **top_level_overrides) -> path of a small real sweep over Handa's scenario
    (2 cells × 2 policies × 4 replicates by default)."""
    return _write_sweep


@pytest.fixture
def oomsweep_cli():
    """Run `oomsweep ARGV...` in this process through the real entry point (sweeps.cli.commands.main:
    parser, dispatch, exit codes); returns (exit code, stdout, stderr). For commands that start no
    Ray and no subprocess (`calibrate --runs 0`, refusals, `calibrate fit --check-only`)."""
    import contextlib
    import io

    from sweeps.cli.commands import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
                code = exc.code if isinstance(exc.code, int) else 2
        return code, out.getvalue(), err.getvalue()

    return run
