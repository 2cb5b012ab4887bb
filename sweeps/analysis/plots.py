"""Figures of a sweep: rendering only, the numbers come in already computed (sweeps.stats).

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through `pyplot`: no
global figure registry, no backend selection at import time, safe on a headless driver and in
threads. Each function returns the Figure; `save_png()` writes it and closes nothing global.

Every policy keeps one style (colour, line style, marker) in every figure, in the sweep's order,
so two curves that coincide stay visible (a thick solid line under a thin dashed one) and a
figure printed in black and white still tells them apart. Every axis has a label; every
probability carries its Wilson 95 % interval and its n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sweeps.analysis.stats import KaplanMeier, wilson

__all__ = [
    "PolicyStyle",
    "policy_styles",
    "lockup_probability_figure",
    "heatmap_figure",
    "cell_probability_figure",
    "survival_figure",
    "save_png",
    "write_plots",
    "MAX_HEATMAP_LEVELS",
    "MAX_PANELS",
]

MAX_HEATMAP_LEVELS = 24  # more distinct values than this on an axis (sampled keys) are binned
MAX_PANELS = 6  # cell_probability_figure: more combinations of the other keys than this are pooled
_TEXT_CELLS = 48  # heatmap panels with more squares than this show colour only (no numbers)

_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")  # Okabe–Ito
_LINES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 3)), (0, (3, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass(frozen=True)
class PolicyStyle:
    colour: str
    line: object
    marker: str
    width: float  # earlier policies are drawn thicker, so a later one on top never hides them


def policy_styles(policies: Sequence[str]) -> dict[str, PolicyStyle]:
    """One style per policy, by position in `policies` (the sweep's order)."""
    n = len(policies)
    return {
        str(p): PolicyStyle(_COLOURS[i % len(_COLOURS)], _LINES[i % len(_LINES)], _MARKERS[i % len(_MARKERS)],
                            1.2 + 1.6 * (n - 1 - i) / max(1, n - 1))
        for i, p in enumerate(policies)
    }


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _footer(fig: Figure, text: str) -> None:
    """Which rows the figure shows, in small print under everything (laid out, never overlapping)."""
    if text:
        fig.supxlabel(text, fontsize=8, color="#444444", x=0.01, ha="left")


def lockup_probability_figure(table: pd.DataFrame, title: str = "", covers: str = "") -> Figure:
    """Lockup probability per policy with its Wilson 95 % interval as asymmetric error bars.

    `table`: one row per policy (in the order to draw) with columns policy, p (or
    lockup_probability), ci_low, ci_high, n, lockups. A policy with n == 0 (every row failed) is an
    empty slot labelled "no data". `covers`: which rows the figure shows, printed under it.
    """
    policies = [str(p) for p in table["policy"]]
    styles = policy_styles(policies)
    fig = _figure(max(5.0, 1.2 * len(policies) + 2.2), 4.4)
    ax = fig.add_subplot()
    x = np.arange(len(policies))
    p = table["p" if "p" in table else "lockup_probability"].to_numpy(dtype=float)
    low = table["ci_low"].to_numpy(dtype=float)
    high = table["ci_high"].to_numpy(dtype=float)
    for xi, pol, pi, lo, hi, k, n in zip(x, policies, p, low, high, table["lockups"], table["n"]):
        st = styles[pol]
        if not math.isnan(pi):
            ax.errorbar([xi], [pi], yerr=[[pi - lo], [hi - pi]], fmt=st.marker, color=st.colour, capsize=7,
                        markersize=8, elinewidth=1.6, clip_on=False, zorder=3)
        label = "no data" if math.isnan(pi) else f"{int(k)}/{int(n)}\n[{lo:.2f}, {hi:.2f}]"
        ax.annotate(label, (xi, 0.0 if math.isnan(pi) else hi), textcoords="offset points",
                    xytext=(0, 6), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, policies, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(policies) - 0.4)
    ax.set_ylim(-0.04, 1.18)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.axhline(0.0, color="#999999", linewidth=0.8, zorder=1)
    ax.set_xlabel("policy")
    ax.set_ylabel("P(lockup), Wilson 95 % interval")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "Lockup probability per policy (lockups/n above each interval)")
    _footer(fig, covers)
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
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def _pool(cells: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Sum lockups and n over the cells that share `keys`, in first-seen order."""
    frame = cells[[*keys, "lockups", "n"]].copy()
    frame["lockups"] = frame["lockups"].astype(float)
    frame["n"] = frame["n"].astype(float)
    return frame.groupby(list(keys), sort=False, dropna=False)[["lockups", "n"]].sum().reset_index()


def heatmap_figure(cells: pd.DataFrame, x: str, y: str, policies: Sequence[str] | None = None,
                   title: str = "", covers: str = "") -> Figure:
    """Lockup probability over two grid keys, one panel per policy, on one colour scale.

    `cells`: one row per (cell, policy) with columns x, y, policy, lockups, n. Cells that differ in
    other grid keys are pooled (sum of lockups over sum of n), so each square is P(lockup | x, y);
    it is labelled with p, its Wilson 95 % interval and n while the panel has few squares.
    """
    if policies is None:
        policies = list(pd.unique(cells["policy"].astype(str)))
    xs, xlabels = _levels(cells[x])
    ys, ylabels = _levels(cells[y])
    frame = pd.DataFrame({"policy": cells["policy"].astype(str).to_numpy(), "xi": xs.to_numpy(),
                          "yi": ys.to_numpy(), "lockups": cells["lockups"].to_numpy(dtype=float),
                          "n": cells["n"].to_numpy(dtype=float)})
    frame = frame[(frame["xi"] >= 0) & (frame["yi"] >= 0)]
    pooled = frame.groupby(["policy", "xi", "yi"], sort=False)[["lockups", "n"]].sum().reset_index()
    cols = min(len(policies), 4)
    rows = math.ceil(len(policies) / cols)
    text = len(xlabels) * len(ylabels) <= _TEXT_CELLS
    cell_w, cell_h = (1.25, 0.85) if text else (0.3, 0.25)
    panel_w = max(2.6, cell_w * len(xlabels) + 1.0)
    panel_h = max(2.2, cell_h * len(ylabels) + 1.3)
    fig = _figure(panel_w * cols + 1.8, panel_h * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= len(policies):
            ax.set_visible(False)
            continue
        policy = str(policies[i])
        grid = np.full((len(ylabels), len(xlabels)), np.nan)
        sub = pooled[pooled["policy"] == policy]
        for r in sub.itertuples(index=False):
            if r.n > 0:
                grid[r.yi, r.xi] = r.lockups / r.n
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", origin="lower", aspect="auto")
        if text:
            for r in sub.itertuples(index=False):
                if r.n <= 0:
                    continue
                est = wilson(int(r.lockups), int(r.n))
                ax.text(r.xi, r.yi, f"{est.p:.2f}\n[{est.low:.2f}, {est.high:.2f}]\nn={int(r.n)}",
                        ha="center", va="center", fontsize=8.5, linespacing=1.15,
                        color="white" if est.p < 0.6 else "black")
        ax.set_xticks(range(len(xlabels)), xlabels, rotation=0 if text else 45,
                      ha="center" if text else "right", fontsize=9)
        ax.set_yticks(range(len(ylabels)), ylabels, fontsize=9)
        ax.set_xlabel(x, fontsize=9)
        if i % cols == 0:
            ax.set_ylabel(y, fontsize=9)
        ax.set_title(policy, fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), label="P(lockup)", shrink=0.9)
    fig.suptitle(title or f"P(lockup) over {x} × {y}: p [Wilson 95 %], n", fontsize=11)
    _footer(fig, covers)
    return fig


def cell_probability_figure(cells: pd.DataFrame, x: str, others: Sequence[str] = (),
                            policies: Sequence[str] | None = None, title: str = "",
                            covers: str = "") -> Figure:
    """P(lockup) with its Wilson 95 % interval against the main grid key `x`, one series per policy.

    One panel per combination of the `others` keys while there are at most MAX_PANELS of them
    (each point is then one cell); beyond that, and for keys not in `others`, cells are pooled.
    `cells`: one row per (cell, policy) with columns x, *others, policy, lockups, n.
    """
    if policies is None:
        policies = list(pd.unique(cells["policy"].astype(str)))
    styles = policy_styles([str(p) for p in policies])
    others = [k for k in others if k != x]
    combos = _pool(cells, others).drop(columns=["lockups", "n"]) if others else pd.DataFrame([{}])
    pooled_note = ""
    if len(combos) > MAX_PANELS:
        pooled_note = f"pooled over {', '.join(others)}"
        others, combos = [], pd.DataFrame([{}])
    data = cells.assign(policy=cells["policy"].astype(str))
    xs, xlabels = _levels(data[x])
    data = data.assign(xpos=xs.to_numpy())
    panels = len(combos)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    width = max(3.6, 0.55 * len(xlabels) * len(policies) + 1.4)
    fig = _figure(width * cols + 0.6, 3.4 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    dodge = 0.7 / max(1, len(policies))
    for i, ax in enumerate(axes.flat):
        if i >= panels:
            ax.set_visible(False)
            continue
        combo = combos.iloc[i].to_dict() if others else {}
        sel = np.ones(len(data), dtype=bool)
        for k, v in combo.items():
            sel &= (data[k] == v).to_numpy() if not (isinstance(v, float) and math.isnan(v)) else data[k].isna().to_numpy()
        part = _pool(data[sel], ["policy", "xpos"])
        for j, policy in enumerate(policies):
            st = styles[str(policy)]
            sub = part[part["policy"] == str(policy)].sort_values("xpos")
            px, pp, lo, hi = [], [], [], []
            for r in sub.itertuples(index=False):
                if r.n <= 0:
                    continue
                est = wilson(int(r.lockups), int(r.n))
                px.append(r.xpos + (j - (len(policies) - 1) / 2) * dodge)
                pp.append(est.p)
                lo.append(est.p - est.low)
                hi.append(est.high - est.p)
            if px:
                ax.errorbar(px, pp, yerr=[lo, hi], fmt=st.marker, color=st.colour, capsize=3, markersize=6,
                            elinewidth=1.3, clip_on=False, label=str(policy) if i == 0 else None, zorder=3)
        ax.set_xticks(range(len(xlabels)), xlabels, fontsize=9)
        ax.set_xlim(-0.6, len(xlabels) - 0.4)
        ax.set_ylim(-0.04, 1.04)
        ax.axhline(0.0, color="#999999", linewidth=0.8, zorder=1)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlabel(x, fontsize=9)
        if i % cols == 0:
            ax.set_ylabel("P(lockup), Wilson 95 %", fontsize=9)
        if combo:
            ax.set_title(", ".join(f"{k} = {_label(v)}" for k, v in combo.items()), fontsize=9)
    fig.legend(loc="outside right upper", fontsize=9, title="policy", title_fontsize=9)
    fig.suptitle(title or f"P(lockup) per cell against {x}" + (f" ({pooled_note})" if pooled_note else ""),
                 fontsize=11)
    _footer(fig, covers)
    return fig


def survival_figure(curves: Mapping[str, KaplanMeier], lockup_after_s: float | None = None,
                    horizon_s: float | None = None, title: str = "", covers: str = "") -> Figure:
    """Stall survival P(max_stall_s > t), Kaplan–Meier with censoring, one step line per policy.

    `curves`: policy -> sweeps.stats.KaplanMeier, in the order to draw (the sweep's). The time axis
    is logarithmic, so 25 ms and 1 s stalls are as far apart as 1 s and 40 s. `lockup_after_s`
    (the detector's threshold) and `horizon_s` (where observation stops; stalls still running
    there are censored, drawn as "+") are marked when known.
    """
    styles = policy_styles(list(curves))
    fig = _figure(7.8, 4.8)
    ax = fig.add_subplot()
    times = [t for km in curves.values() for t in km.t if t > 0]
    left = min(times) / 2 if times else 1e-3
    right = max([*times, lockup_after_s or 0.0, horizon_s or 0.0]) * 1.6 if times else 1.0
    for i, (policy, km) in enumerate(curves.items()):
        st = styles[str(policy)]
        label = f"{policy} (n={km.n}" + (f", {km.censored} censored)" if km.censored else ")")
        if not km.t:  # no stall ended: S stays at 1 over what was observed
            ax.plot([left, right], [1.0, 1.0], color=st.colour, linestyle=st.line, linewidth=st.width, label=label,
                    marker=st.marker, markevery=(0.03 + 0.045 * i, 0.18), markerfacecolor="white")
            continue
        t = np.concatenate([[left], np.maximum(km.t, left)])
        s = np.concatenate([[1.0], km.s])
        ax.step(t, s, where="post", color=st.colour, linestyle=st.line, linewidth=st.width, label=label,
                marker=st.marker, markersize=6, markevery=(0.03 + 0.045 * i, 0.18), markerfacecolor="white")
        lo = np.concatenate([[1.0], km.low])
        hi = np.concatenate([[1.0], km.high])
        ax.fill_between(t, lo, hi, step="post", color=st.colour, alpha=0.10, linewidth=0)
        if km.censored and km.s[-1] > 0:
            ax.plot([km.t[-1]], [km.s[-1]], marker="+", markersize=11, color=st.colour, linestyle="none")
    if lockup_after_s:
        ax.axvline(lockup_after_s, color="#B00000", linestyle="--", linewidth=1.2)
        ax.text(lockup_after_s, 1.035, f" lockup: ≥ {lockup_after_s:g} s", color="#B00000", fontsize=8.5,
                ha="left", va="bottom")
    if horizon_s:
        ax.axvline(horizon_s, color="#555555", linestyle=":", linewidth=1.2)
        ax.text(horizon_s, -0.015, f"horizon {horizon_s:g} s ", color="#555555", fontsize=8.5, ha="right", va="bottom")
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    ax.set_ylim(-0.02, 1.08)
    ax.set_xlabel("stall length t (s of simulated time, log scale)")
    ax.set_ylabel("P(longest allocator stall > t)")
    ax.grid(alpha=0.3, which="both")
    if curves:
        ax.legend(fontsize=8.5, loc="lower left")
    ax.set_title(title or "Stall survival per policy (Kaplan–Meier, shaded: 95 % interval)", fontsize=11)
    _footer(fig, covers)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as PNG at `path` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path



def write_plots(directory: str | Path, table: pd.DataFrame, cells: pd.DataFrame,
                curves: Mapping[str, KaplanMeier], grid: Sequence[str], policies: Sequence[str],
                lockup_after_s: float | None = None, horizon_s: float | None = None,
                covers: str = "") -> list[Path]:
    """The sweep's figures as PNGs in `directory` (MLflow's parent run, `oomsweep report --plots`).

    `table`: per policy; `cells`: per (cell, policy) with the grid columns; `curves`: per policy.
    Heatmap and per-cell figures only when the grid varies (over the first two varying keys).
    """
    directory = Path(directory)
    out = [save_png(lockup_probability_figure(table, covers=covers), directory / "lockup_probability.png")]
    varying = [c for c in grid if c in cells and cells[c].nunique(dropna=True) > 1]
    if varying:
        out.append(save_png(cell_probability_figure(cells, varying[0], varying[1:], policies, covers=covers),
                            directory / "lockup_per_cell.png"))
    if len(varying) >= 2:
        out.append(save_png(heatmap_figure(cells, varying[0], varying[1], policies, covers=covers),
                            directory / "lockup_heatmap.png"))
    out.append(save_png(survival_figure(curves, lockup_after_s, horizon_s, covers=covers),
                        directory / "stall_survival.png"))
    return out
