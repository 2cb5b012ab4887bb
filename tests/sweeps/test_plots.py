"""sweeps.analysis.plots: every figure renders to a real, non-empty PNG, including the awkward inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from sweeps.analysis import plots
from sweeps.analysis.stats import kaplan_meier, wilson

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
    assert any(t.get_text().startswith("13/40\n[0.20, 0.48]") for t in ax.texts)  # k/n and the interval
    assert ax.get_xlabel() == "policy" and "Wilson 95 %" in ax.get_ylabel()
    assert ax.get_ylim()[0] < 0  # a point at 0 is drawn whole, not cut by the axis
    path = plots.save_png(fig, tmp_path / "sub" / "lockup.png")
    assert_png(path)


def test_error_bars_span_the_wilson_interval():
    table = policy_table({"a": (3, 10), "b": (7, 10)})
    fig = plots.lockup_probability_figure(table)
    # one ErrorbarContainer (line, caps, bar collections) per policy, in order
    segments = [c.lines[2][0].get_segments()[0] for c in fig.axes[0].containers]
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


def test_heatmap_squares_say_p_interval_and_n():
    cells = cells_frame(np.random.default_rng(1))
    fig = plots.heatmap_figure(cells, "victim.sched_at_handover", "groups.0.sched.rt_priority")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(texts) == 2 * 9
    sel = cells[(cells["policy"] == "upstream_4_19") & (cells["victim.sched_at_handover"] == "idle")
                & (cells["groups.0.sched.rt_priority"] == 50)]
    est = wilson(int(sel["lockups"].sum()), int(sel["n"].sum()))
    assert f"{est.p:.2f}\n[{est.low:.2f}, {est.high:.2f}]\nn=40" in texts
    assert all(t.get_fontsize() >= 8 for ax in fig.axes for t in ax.texts)


def test_cell_probability_one_point_per_cell_with_its_interval(tmp_path):
    cells = cells_frame(np.random.default_rng(3))
    cells = cells[cells["machine.rt_runtime_share"]]  # one cell per (handover, prio, policy)
    fig = plots.cell_probability_figure(cells, "victim.sched_at_handover", ["groups.0.sched.rt_priority"],
                                        ["upstream_4_19", "timeout_backoff"])
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == [f"groups.0.sched.rt_priority = {p}" for p in (1, 50, 99)]
    ax = panels[1]
    assert ax.get_xlabel() == "victim.sched_at_handover" and "Wilson 95 %" in panels[0].get_ylabel()
    first = ax.containers[0]  # upstream_4_19's error bars in the prio = 50 panel
    xlabels = [t.get_text() for t in ax.get_xticklabels()]
    row = cells[(cells["policy"] == "upstream_4_19") & (cells["groups.0.sched.rt_priority"] == 50)
                & (cells["victim.sched_at_handover"] == xlabels[0])].iloc[0]
    est = wilson(int(row["lockups"]), int(row["n"]))
    seg = first.lines[2][0].get_segments()[0]
    assert (seg[0][1], seg[1][1]) == pytest.approx((est.low, est.high))
    assert_png(plots.save_png(fig, tmp_path / "cells.png"))


def test_cell_probability_pools_when_there_are_too_many_panels():
    cells = cells_frame(np.random.default_rng(4), continuous=True)  # 36 x values, 3 × 2 other combinations
    fig = plots.cell_probability_figure(cells, "groups.0.sched.rt_priority",
                                        ["victim.sched_at_handover", "machine.rt_runtime_share"])
    assert "pooled over" in fig.get_suptitle()
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1


def test_survival_is_kaplan_meier_on_a_log_axis_with_every_policy_visible(tmp_path):
    # Two policies with identical stalls must both stay visible (different line style, marker, width).
    same = [0.025, 0.026, 0.03, 0.04, 0.09]
    curves = {"upstream_4_19": kaplan_meier(same, [False] * 5), "upstream_6_1": kaplan_meier(same, [False] * 5),
              "handoff_rfc_v2": kaplan_meier([0.02, 0.03, 119.0, 119.5], [False, False, True, True]),
              "all_failed": kaplan_meier([], [])}
    fig = plots.survival_figure(curves, lockup_after_s=20.0, horizon_s=120.0)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] < 0.02 and ax.get_xlim()[1] > 120.0
    lines = {ln.get_label().split(" ")[0]: ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert list(lines) == ["upstream_4_19", "upstream_6_1", "handoff_rfc_v2", "all_failed"]
    a, b = lines["upstream_4_19"], lines["upstream_6_1"]
    assert (a.get_linestyle(), a.get_marker()) != (b.get_linestyle(), b.get_marker())
    assert a.get_linewidth() > b.get_linewidth()  # the one drawn first is wider: the later one shows on it
    assert "2 censored" in lines["handoff_rfc_v2"].get_label()
    # Censored stalls do not end: the curve stays at 1/2 past both of them, up to the horizon.
    assert lines["handoff_rfc_v2"].get_ydata()[-1] == pytest.approx(0.5)
    assert any("lockup" in t.get_text() for t in ax.texts) and any("horizon" in t.get_text() for t in ax.texts)
    assert ax.get_xlabel().startswith("stall length") and ax.get_ylabel()
    assert_png(plots.save_png(fig, tmp_path / "survival.png"))


def test_figures_are_not_blank():
    fig = plots.lockup_probability_figure(policy_table({"a": (5, 10)}))
    pixels = png_pixels(fig)
    assert len(np.unique(pixels.reshape(-1, 4), axis=0)) > 10
