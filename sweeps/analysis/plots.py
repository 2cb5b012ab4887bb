"""Figures for a sweep's MLflow parent run: rendering only, the numbers come in already computed.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through `pyplot`: no
global figure registry, no backend selection at import time, safe on a headless driver and in
threads. Each function returns the Figure; `save_png()` writes it and closes nothing global.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "lockup_probability_figure",
    "heatmap_figure",
    "survival_figure",
    "save_png",
    "MAX_HEATMAP_LEVELS",
]

MAX_HEATMAP_LEVELS = 24  # more distinct values than this on an axis (sampled keys) are binned


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def lockup_probability_figure(table: pd.DataFrame, title: str = "") -> Figure:
    """Lockup probability per policy with its Wilson interval as asymmetric error bars.

    `table`: one row per policy with columns policy, lockup_probability, ci_low, ci_high, n, lockups.
    A policy with n == 0 (every row failed) is drawn as an empty slot labelled "no data".
    """
    policies = [str(p) for p in table["policy"]]
    fig = _figure(max(4.0, 1.1 * len(policies) + 2.0), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(policies))
    p = table["lockup_probability"].to_numpy(dtype=float)
    low = table["ci_low"].to_numpy(dtype=float)
    high = table["ci_high"].to_numpy(dtype=float)
    ok = ~np.isnan(p)
    yerr = np.vstack([p - low, high - p])[:, ok]
    ax.errorbar(x[ok], p[ok], yerr=yerr, fmt="o", capsize=6, markersize=7, color="tab:red")
    for xi, pi, hi, k, n in zip(x, p, high, table["lockups"], table["n"]):
        label = "no data" if math.isnan(pi) else f"{int(k)}/{int(n)}"
        ax.annotate(label, (xi, 0.02 if math.isnan(pi) else hi), textcoords="offset points",
                    xytext=(0, 5), ha="center", fontsize=8)
    ax.set_xticks(x, policies, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(policies) - 0.4)
    ax.set_ylim(0.0, 1.08)
    ax.set_ylabel("P(lockup), Wilson 95 % CI")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "Lockup probability per policy")
    return fig


def _levels(values: pd.Series) -> tuple[pd.Series, list[str]]:
    """Axis positions for a grid key: its distinct values in order, or 10 bins if there are many."""
    distinct = list(pd.unique(values.dropna()))
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if len(distinct) > MAX_HEATMAP_LEVELS and numeric:
        binned = pd.cut(values.astype(float), bins=10)
        labels = [f"{c.left:.3g}..{c.right:.3g}" for c in binned.cat.categories]
        return pd.Series(binned.cat.codes, index=values.index).astype(int), labels
    try:
        ordered = sorted(distinct)
    except TypeError:  # mixed types in one column: order by text
        ordered = sorted(distinct, key=str)
    index = {v: i for i, v in enumerate(ordered)}
    return values.map(index).fillna(-1).astype(int), [_label(v) for v in ordered]


def _label(v: object) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def heatmap_figure(cells: pd.DataFrame, x: str, y: str, policies: Sequence[str] | None = None,
                   title: str = "") -> Figure:
    """Lockup probability over two grid keys, one panel per policy, on one colour scale.

    `cells`: one row per (cell, policy) with columns x, y, policy, lockups, n. Cells that differ in
    other grid keys are pooled (sum of lockups over sum of n), so each square is P(lockup | x, y).
    """
    if policies is None:
        policies = list(pd.unique(cells["policy"]))
    xs, xlabels = _levels(cells[x])
    ys, ylabels = _levels(cells[y])
    frame = pd.DataFrame({"policy": cells["policy"].astype(str).to_numpy(), "xi": xs.to_numpy(),
                          "yi": ys.to_numpy(), "lockups": cells["lockups"].to_numpy(dtype=float),
                          "n": cells["n"].to_numpy(dtype=float)})
    frame = frame[(frame["xi"] >= 0) & (frame["yi"] >= 0)]
    pooled = frame.groupby(["policy", "xi", "yi"], sort=False)[["lockups", "n"]].sum().reset_index()
    cols = len(policies)
    fig = _figure(max(4.5, 3.2 * cols + 1.2), 0.35 * len(ylabels) + 2.6)
    axes = fig.subplots(1, cols, squeeze=False, sharey=True)[0]
    image = None
    for ax, policy in zip(axes, policies):
        grid = np.full((len(ylabels), len(xlabels)), np.nan)
        sub = pooled[pooled["policy"] == str(policy)]
        with np.errstate(invalid="ignore", divide="ignore"):
            grid[sub["yi"].to_numpy(), sub["xi"].to_numpy()] = np.where(
                sub["n"] > 0, sub["lockups"] / sub["n"], np.nan)
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", origin="lower", aspect="auto")
        if grid.size <= 64:
            for (r, c), v in np.ndenumerate(grid):
                if not math.isnan(v):
                    ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 0.6 else "black")
        ax.set_xticks(range(len(xlabels)), xlabels, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(ylabels)), ylabels, fontsize=8)
        ax.set_xlabel(x, fontsize=8)
        ax.set_title(str(policy), fontsize=9)
    axes[0].set_ylabel(y, fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="P(lockup)", shrink=0.9)
    fig.suptitle(title or f"Lockup probability over {x} × {y}", fontsize=10)
    return fig


def survival_figure(curves: Mapping[str, Sequence[tuple[float, float]]],
                    lockup_after_s: float | None = None, title: str = "") -> Figure:
    """Stall survival curves P(max_stall_s > t), one step line per policy.

    `curves`: policy -> [(t, P(max_stall_s > t)), ...] as computed by sweeps.analysis.stats.survival.
    `lockup_after_s`, when known, marks the stall length the detector calls a lockup.
    """
    fig = _figure(6.5, 4.2)
    ax = fig.add_subplot()
    for policy, points in curves.items():
        pts = [(t, s) for t, s in points if not math.isnan(s)]
        if not pts:
            continue
        ts, ss = zip(*pts)
        ax.step(ts, ss, where="post", label=str(policy))
    right = max((t for pts in curves.values() for t, _ in pts), default=0.0)
    if lockup_after_s is not None and lockup_after_s <= right:
        ax.axvline(lockup_after_s, color="grey", linestyle="--", linewidth=1)
        ax.annotate("lockup_after_s", (lockup_after_s, 1.0), textcoords="offset points",
                    xytext=(3, -10), fontsize=8, color="grey")
    elif lockup_after_s is not None:  # drawing it would squash every curve against the y axis
        ax.text(0.99, 0.98, f"lockup_after_s = {lockup_after_s:g} s (beyond every stall)",
                transform=ax.transAxes, ha="right", va="top", fontsize=8, color="grey")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("t (s of simulated time)")
    ax.set_ylabel("P(max_stall_s > t)")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    ax.set_title(title or "Stall survival per policy")
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as PNG at `path` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
