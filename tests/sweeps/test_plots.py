"""sweeps.analysis.plots: every figure renders to a real, non-empty PNG, including the awkward inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from sweeps.analysis import plots
from sweeps.analysis.stats import survival, wilson

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def policy_table(counts: dict[str, tuple[int, int]]) -> pd.DataFrame:
    records = []
    for policy, (k, n) in counts.items():
        w = wilson(k, n)
        records.append({"policy": policy, "lockup_probability": w.p, "ci_low": w.low, "ci_high": w.high,
                        "n": n, "lockups": k})
    return pd.DataFrame.from_records(records)


def assert_png(path, min_bytes: int = 5000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes


def png_pixels(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())


def test_lockup_probability_png_with_edges_and_an_empty_policy(tmp_path):
    # 0/50 and 50/50 (Wilson is exact at the edges) and a policy whose rows all failed (n == 0).
    table = policy_table({"upstream_4_19": (50, 50), "handoff_rfc_v2": (0, 50),
                          "timeout_backoff": (13, 40), "upstream_6_1": (0, 0)})
    fig = plots.lockup_probability_figure(table)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(table["policy"])
    assert any(t.get_text() == "no data" for t in ax.texts)
    assert any(t.get_text() == "13/40" for t in ax.texts)
    path = plots.save_png(fig, tmp_path / "sub" / "lockup.png")
    assert_png(path)


def test_error_bars_span_the_wilson_interval():
    table = policy_table({"a": (3, 10), "b": (7, 10)})
    fig = plots.lockup_probability_figure(table)
    container = fig.axes[0].containers[0]  # ErrorbarContainer: (line, caps, bar collections)
    segments = container.lines[2][0].get_segments()
    spans = [float(y) for s in segments for y in (s[0][1], s[1][1])]
    want = [wilson(3, 10).low, wilson(3, 10).high, wilson(7, 10).low, wilson(7, 10).high]
    assert spans == pytest.approx(want)


def cells_frame(rng: np.random.Generator, continuous: bool = False) -> pd.DataFrame:
    records = []
    for policy, base in (("upstream_4_19", 0.8), ("timeout_backoff", 0.1)):
        for i, handover in enumerate(("unchanged", "idle", "normal19")):
            for prio in (1, 50, 99):
                for other in (True, False):  # a third key that the heatmap pools over
                    x = float(rng.uniform(0, 10)) if continuous else handover
                    n = 20
                    k = int(rng.binomial(n, min(1.0, base * (0.5 + i / 4))))
                    records.append({"policy": policy, "victim.sched_at_handover": x,
                                    "groups.0.sched.rt_priority": prio, "machine.rt_runtime_share": other,
                                    "lockups": k, "n": n})
    return pd.DataFrame.from_records(records)


def test_heatmap_pools_other_keys_one_panel_per_policy(tmp_path):
    cells = cells_frame(np.random.default_rng(1))
    fig = plots.heatmap_figure(cells, "victim.sched_at_handover", "groups.0.sched.rt_priority")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["upstream_4_19", "timeout_backoff"]
    grid = panels[0].images[0].get_array()
    assert grid.shape == (3, 3)
    # Square (x = "idle", y = 50) pools the two rt_runtime_share cells: sum k / sum n.
    sel = cells[(cells["policy"] == "upstream_4_19") & (cells["victim.sched_at_handover"] == "idle")
                & (cells["groups.0.sched.rt_priority"] == 50)]
    xlabels = [t.get_text() for t in panels[0].get_xticklabels()]
    ylabels = [t.get_text() for t in panels[0].get_yticklabels()]
    assert grid[ylabels.index("50"), xlabels.index("idle")] == pytest.approx(sel["lockups"].sum() / sel["n"].sum())
    assert_png(plots.save_png(fig, tmp_path / "heat.png"))


def test_heatmap_bins_a_sampled_continuous_key(tmp_path):
    cells = cells_frame(np.random.default_rng(2), continuous=True)
    fig = plots.heatmap_figure(cells, "victim.sched_at_handover", "groups.0.sched.rt_priority")
    ax = [a for a in fig.axes if a.get_title()][0]
    assert ax.images[0].get_array().shape == (3, 10)  # 36 distinct values -> 10 bins
    assert_png(plots.save_png(fig, tmp_path / "heat.png"))


def test_survival_curves_png_and_steps(tmp_path):
    stalls = {"upstream_4_19": [0.5, 2.0, 30.0, 45.0], "timeout_backoff": [0.1, 0.2, 0.3, 5.0],
              "all_failed": []}
    thresholds = np.linspace(0, 50, 101)
    curves = {p: survival(v, thresholds) for p, v in stalls.items()}
    assert all(math.isnan(s) for _, s in curves["all_failed"])
    fig = plots.survival_figure(curves, lockup_after_s=20.0)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["upstream_4_19", "timeout_backoff"]  # an all-nan curve is not drawn
    ys = ax.get_lines()[0].get_ydata()
    assert ys[0] == 1.0 and ys[-1] == 0.0 and all(np.diff(ys) <= 0)
    assert_png(plots.save_png(fig, tmp_path / "survival.png"))


def test_lockup_after_beyond_the_data_does_not_stretch_the_axis():
    curves = {"a": survival([0.01, 0.2, 0.9], np.linspace(0, 1, 51))}
    ax = plots.survival_figure(curves, lockup_after_s=20.0).axes[0]
    assert ax.get_xlim()[1] < 2.0
    assert any("beyond every stall" in t.get_text() for t in ax.texts)


def test_figures_are_not_blank():
    fig = plots.lockup_probability_figure(policy_table({"a": (5, 10)}))
    pixels = png_pixels(fig)
    assert len(np.unique(pixels.reshape(-1, 4), axis=0)) > 10
