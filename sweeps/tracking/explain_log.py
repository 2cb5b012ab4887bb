"""Log an `oomsweep explain` result to MLflow, under the parent run of the sweep's latest execution.

The parent run is found by its tags (role parent, sweep name, execution id of the newest rows), in
any experiment; the explanation goes in as artifacts under ``explain/`` (the text and the PNGs)
and as metrics ``explain.<target>.*`` on the parent. Logging twice replaces the artifacts and
adds a new metric step, so it is safe to rerun.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from sweeps.tracking.mlflow_log import TAG_EXECUTION, TAG_ROLE, TAG_SWEEP, active_experiment_ids, resolve_tracking_uri

__all__ = ["find_parent_run", "log_explanation"]


def find_parent_run(client, sweep: str, execution_ids: Sequence[str]):
    """The newest finished or running parent run of ``sweep`` whose execution id is in
    ``execution_ids`` (the newest execution first); None when the sweep was never logged."""
    experiments = active_experiment_ids(client)
    for eid in execution_ids:
        found = []
        for i in range(0, len(experiments), 100):
            found += client.search_runs(
                experiments[i : i + 100],
                f"tags.`{TAG_EXECUTION}` = '{eid}' and tags.`{TAG_ROLE}` = 'parent' and tags.`{TAG_SWEEP}` = '{sweep}'",
                max_results=1000,
            )
        found = [r for r in found if r.info.status in ("FINISHED", "RUNNING")]
        if found:
            return max(found, key=lambda r: r.info.start_time or 0)
    return None


def log_explanation(uri: str | None, sweep: str, execution_ids: Sequence[str], text: str,
                    figures: Sequence[Path], metrics: dict[str, float], name: str) -> str | None:
    """Log to the parent run; returns its run id, or None when no parent run exists."""
    import os
    import tempfile

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    parent = find_parent_run(client, sweep, execution_ids)
    if parent is None:
        return None
    run_id = parent.info.run_id
    with tempfile.TemporaryDirectory(prefix="oomsweep-explain-") as tmp:
        d = Path(tmp)
        (d / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
        for f in figures:
            (d / Path(f).name).write_bytes(Path(f).read_bytes())
        client.log_artifacts(run_id, tmp, artifact_path="explain")
    now = int(time.time() * 1000)
    hist = client.get_metric_history(run_id, next(iter(metrics))) if metrics else []
    step = len(hist)
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()], synchronous=True)
    return run_id
