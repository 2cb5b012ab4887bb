"""What a user sees in the MLflow UI after a real sweep: a real `mlflow ui` on 127.0.0.1 over the
sweep's sqlite store, looked at in headless Chromium. Screenshots land in the test's temp dir
(and in $OOMSWEEP_UI_SHOTS when set, e.g. to refresh docs/mlflow-compare.png)."""

from __future__ import annotations

import io
import json
import os
import shutil
import urllib.parse
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweeps.run.runner import RunOptions, run_sweep
from sweeps.tracking.mlflow_log import TAG_ROLE, VIEW_NAME, runs_view_path

from ui_harness import start_mlflow_ui, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HANDA = Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "handa-2018-11-14.yaml"
GRID = {"victim.sched_at_handover": ["unchanged", "idle"], "reaper.busy_elsewhere_p": [0.0, 0.02]}
POLICIES = ["upstream_4_19", "handoff_rfc_v2"]


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("OOMSWEEP_UI_SHOTS"):
        target = Path(os.environ["OOMSWEEP_UI_SHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A tiny real sweep (4 cells × 2 policies × 3 replicates) logged to a fresh sqlite store.

    It runs on the serial executor: this test is about what the UI shows of a finished sweep, and
    a Ray start on a loaded machine (Ray waits 30 s for its raylet, hard-coded) is not its subject."""
    import yaml

    root = tmp_path_factory.mktemp("ui-sweep")
    path = root / "uiquick.yaml"
    path.write_text(yaml.safe_dump({"name": "uiquick", "base": str(HANDA), "grid": GRID, "policies": POLICIES,
                                    "replicates": 3, "seed": 11, "output": str(root / "results")}, sort_keys=False))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    err = io.StringIO()
    res = run_sweep(path, RunOptions(mlflow_uri=uri, executor="serial"), stdout=io.StringIO(), stderr=err)
    assert res.exit_code == 0, err.getvalue()
    assert res.tracking is not None, err.getvalue()
    return root, uri, res, err.getvalue()


@pytest.fixture(scope="module")
def ui(finished_sweep):
    root, uri, _, _ = finished_sweep
    proc, base = start_mlflow_ui(uri, root / "mlflow-ui.log")
    try:
        yield base
    finally:
        stop(proc)


def _headers(page) -> list[str]:
    """Column headers of the runs table, scrolled through from left to right: ag-grid draws only
    the columns in view, and oomsweep's view makes its columns wide enough to read
    `lockup_p/handoff_rfc_v2` whole, so with MLflow's assistant panel open they do not all fit."""
    seen: list[str] = []
    viewport = page.locator(".ag-body-horizontal-scroll-viewport").first
    for step in range(12):
        for t in page.locator("[role=columnheader]").all_inner_texts():
            if t.strip() and t.strip() not in seen:
                seen.append(t.strip())
        if not viewport.count():
            break
        at_end = viewport.evaluate("v => { const before = v.scrollLeft; v.scrollLeft += v.clientWidth * 0.8; "
                                   "return v.scrollLeft === before; }")
        page.wait_for_timeout(400)
        if at_end:
            break
    if viewport.count():
        viewport.evaluate("v => { v.scrollLeft = 0; }")
    return seen


def test_the_printed_link_opens_the_runs_table_with_lockup_metrics_and_grid_keys(finished_sweep, ui, browser,
                                                                                  tmp_path):
    _, uri, res, err = finished_sweep
    exp_id = res.tracking.experiment_id
    link = ui + runs_view_path(exp_id)
    assert runs_view_path(exp_id) in err  # the run printed where to look
    page = browser(link)
    page.get_by_text("Run Name").first.wait_for()
    page.locator("[role=columnheader]", has_text="lockup_probability").first.wait_for()
    page.wait_for_timeout(1500)
    headers = _headers(page)
    _shot(page, tmp_path, "mlflow-runs.png")
    assert "workflowType=machine_learning" in page.url and "/runs" in page.url
    assert not page.get_by_text("Token Usage").count()  # not the GenAI overview
    for metric in ("lockup_probability", "ci_low", "ci_high", "n", "lockups"):
        assert metric in headers, headers
    for key in GRID:
        assert key in headers, headers
    assert "policy" in headers
    for policy in POLICIES:  # the parent row's headline metrics, one per policy, side by side
        assert f"lockup_p/{policy}" in headers, headers
    # Run names say what the run is: the sweep's block and date, the policy and the cell's keys.
    body = page.inner_text("body")
    assert "uiquick block 0 ·" in body
    client = MlflowClient(uri)
    exp = client.get_experiment(exp_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"


def _click_past_popups(page, locator) -> None:
    """GenAI's first-visit pop-ups can lay a layer over the page ("<html> intercepts pointer
    events" in a CI run): Escape closes them; a last try dispatches the click to the element."""
    for _ in range(3):
        try:
            locator.click(timeout=20_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
    locator.dispatch_event("click")


def test_a_bare_click_lands_on_genai_until_model_training_is_chosen_then_the_views_menu_has_ours(
        finished_sweep, ui, browser, tmp_path):
    """MLflow 3.17.2's UI routes an experiment by a per-browser workflow type (URL parameter
    `workflowType`, else localStorage `mlflow.workflowType_v1`, default GenAI), not by the experiment
    tag mlflow.experimentKind (read only when a feature flag is off; it is compiled on), so a bare
    click in a fresh browser lands on the GenAI pages. This records that (and fails when an upgrade
    honours the tag: then the README can drop the long link), then does what the README tells a
    user: switch to *Model training* once (remembered), click the experiment again, pick oomsweep's
    view in the Views menu."""
    _, _, res, _ = finished_sweep
    page = browser(f"{ui}/#/experiments")
    page.get_by_role("link", name="uiquick", exact=True).first.click()
    page.get_by_text("Overview", exact=True).first.wait_for()  # GenAI's side navigation
    page.wait_for_timeout(2000)
    _shot(page, tmp_path, "mlflow-bare-click.png")
    assert f"/experiments/{res.tracking.experiment_id}" in page.url and "/runs" not in page.url
    assert page.evaluate("window.localStorage.getItem('mlflow.workflowType_v1')") is None  # the default: GenAI

    _click_past_popups(page, page.get_by_text("Model training", exact=True).first)  # the sidebar switch, top left
    page.wait_for_function("window.localStorage.getItem('mlflow.workflowType_v1') === '\"machine_learning\"'")
    page.goto(f"{ui}/#/experiments")
    page.get_by_text("Experiments", exact=True).first.wait_for()
    page.wait_for_timeout(1500)
    for _ in range(3):  # a click the first-visit pop-up layer swallowed is clicked again
        _click_past_popups(page, page.get_by_role("link", name="uiquick", exact=True).first)
        try:
            page.wait_for_url(lambda url: "/runs" in url, timeout=30_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError
            page.keyboard.press("Escape")
    try:
        page.wait_for_url(lambda url: "/runs" in url)
        page.locator("[role=columnheader]").first.wait_for()
    except Exception:
        _shot(page, tmp_path, "mlflow-bare-click-model-training-FAILED.png")
        (tmp_path / "failed-url.txt").write_text(page.url)
        raise
    page.wait_for_timeout(1500)
    assert "/runs" in page.url and "workflowType=machine_learning" in page.url
    _shot(page, tmp_path, "mlflow-bare-click-model-training.png")
    assert "lockup_probability" not in _headers(page)  # MLflow's default columns: Source, Models, Dataset

    _click_past_popups(page, page.get_by_role("button", name="Views").first)
    page.get_by_text(VIEW_NAME).first.click()
    page.locator("[role=columnheader]", has_text="lockup_probability").first.wait_for()
    page.wait_for_timeout(1500)
    _shot(page, tmp_path, "mlflow-views-menu.png")
    headers = _headers(page)
    for column in ("lockup_probability", "ci_low", "ci_high", *GRID):
        assert column in headers, headers


def test_compare_view_draws_parallel_coordinates_over_the_grid_keys(finished_sweep, ui, browser, tmp_path):
    _, uri, res, _ = finished_sweep
    client = MlflowClient(uri)
    exp_id = res.tracking.experiment_id
    cells = client.search_runs([exp_id], f"tags.`{TAG_ROLE}` = 'cell'", max_results=100)
    assert len(cells) == 4 * len(POLICIES)
    ids = json.dumps([r.info.run_id for r in cells])
    url = f"{ui}/#/compare-runs?runs={urllib.parse.quote(ids)}&experiments={urllib.parse.quote(json.dumps([exp_id]))}"
    page = browser(url)
    page.get_by_text("Parallel Coordinates Plot").first.wait_for()
    page.locator(".parcoords").first.wait_for()  # plotly's parallel-coordinates layer: the plot rendered
    page.wait_for_timeout(2000)
    text = page.inner_text("body")
    _shot(page, tmp_path, "mlflow-compare.png")
    for key in GRID:
        assert key in text
    # The plot's metric axis starts on the answer (the first metric the runs share, in logging order).
    axes = page.locator(".parcoords").first.text_content()
    assert "lockup_probability" in axes and "ci_high" not in axes, axes
