"""Scenario discovery over the rows of a sweep: under which conditions does a policy lock up?

Pure functions over a pandas DataFrame of rows (one per cell, policy, replicate), as read by
``read_sweep``. Three views, each from a library that does it well:

- PRIM (Friedman & Fisher 1999) from ``ema_workbench``: peel the key space down to a box where the
  lockup rate is high. We report the peeling trajectory, the chosen box with its coverage (share of
  all lockups inside it), density (lockup rate inside it, with a Wilson interval) and support (share
  of rows inside it), and each restriction's quasi-p value (Bryant & Lempert 2010: a one-sided
  binomial test of the box against the box without that restriction).
- a shallow classification tree from ``scikit-learn`` (a second, greedy view of the same question).
- a ranking of the keys: the drop in held-out ROC AUC of a gradient-boosted classifier when one
  key's values are permuted (scikit-learn's ``permutation_importance``), and, for a sweep whose
  sample design is Saltelli's, Sobol first-order and total indices from ``SALib``.

The target is a boolean per row: "policy P locked up", or over a pair of policies "P locked up and Q
did not" on the same (cell, replicate), which share their seed.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from sweeps.analysis.stats import Proportion, wilson
from sweeps.errors import InputError
from sweeps.storage.schema import IDENTITY_FIELDS, OUTCOME_FIELDS, PARTITION_FIELDS, SCENARIO_FIELD, STATUS_FIELDS

__all__ = [
    "Restriction",
    "Box",
    "Ranking",
    "Explanation",
    "key_columns",
    "column_key",
    "discovery_frame",
    "prim_box",
    "tree_text",
    "rank_keys",
    "sobol_indices",
    "explain",
    "format_explanation",
]

# Columns of the row schema that are not sweep keys; anything else but cpu_s.* is a grid/sample key.
_NOT_KEYS = {f.name for f in (*PARTITION_FIELDS, *IDENTITY_FIELDS, SCENARIO_FIELD, *OUTCOME_FIELDS, *STATUS_FIELDS)}
_INDEX_COL = re.compile(r"\.(\d+)(?=\.|$)")


def column_key(column: str) -> str:
    """"groups.0.sched.rt_priority" -> "groups[0].sched.rt_priority" (the key path of a column)."""
    return _INDEX_COL.sub(r"[\1]", column)


def key_columns(df: pd.DataFrame) -> list[str]:
    """The grid and sample key columns of a rows frame that take more than one value."""
    out = []
    for c in df.columns:
        c = str(c)
        if c in _NOT_KEYS or c.startswith("cpu_s.") or c.startswith("_"):
            continue
        if df[c].nunique(dropna=False) > 1:
            out.append(c)
    return out


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if "status" in df.columns else df


def discovery_frame(
    df: pd.DataFrame, policy: str, against: str | None = None, keys: Sequence[str] | None = None
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """(X, y, ids): one row per (cell, replicate) of ``policy`` with status ok.

    X holds the key columns (bools and other non-numbers as strings, so that PRIM and the tree treat
    them as categories); y is lockup, or with ``against`` "lockup of policy and not of against" over
    the pairs both ran; ids holds cell_id and replicate.
    """
    ok = _ok(df)
    policies = sorted(str(p) for p in ok["policy"].unique())
    for name in (policy, against):
        if name is not None and name not in policies:
            raise InputError(f"{name}: no ok rows for this policy; policies: {', '.join(policies) or 'none'}")
    cols = list(keys) if keys is not None else key_columns(ok)
    if not cols:
        raise InputError("the sweep varies no key: nothing to explain")
    a = ok[ok["policy"] == policy]
    a = a.drop_duplicates(["cell_id", "replicate"])
    if against is None:
        frame = a[["cell_id", "replicate", *cols]].copy()
        y = a["lockup"].astype(bool).to_numpy()
    else:
        b = ok[ok["policy"] == against].drop_duplicates(["cell_id", "replicate"])
        merged = a[["cell_id", "replicate", *cols, "lockup"]].merge(
            b[["cell_id", "replicate", "lockup"]], on=["cell_id", "replicate"], suffixes=("", "_b")
        )
        frame = merged[["cell_id", "replicate", *cols]].copy()
        y = (merged["lockup"].astype(bool) & ~merged["lockup_b"].astype(bool)).to_numpy()
    x = frame[cols].reset_index(drop=True)
    for c in cols:
        s = x[c]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            x[c] = s.astype(str)
        elif pd.api.types.is_integer_dtype(s):
            x[c] = s.astype("int64")
        else:
            x[c] = s.astype("float64")
    ids = frame[["cell_id", "replicate"]].reset_index(drop=True)
    return x, y, ids


# ------------------------------------------------------------------ PRIM


@dataclass(frozen=True)
class Restriction:
    """One side of the box: a numeric range (low/high, None = open) or a set of categories."""

    key: str
    low: float | None = None
    high: float | None = None
    values: tuple[str, ...] = ()
    qp: float = math.nan  # quasi-p value of the restriction (Bryant & Lempert 2010)
    integer: bool = False

    def text(self) -> str:
        def num(v: float, up: bool) -> str:
            # PRIM cuts integer keys half-way between values: say the integer on the inside.
            if self.integer:
                return str(int(math.ceil(v)) if up else int(math.floor(v)))
            return f"{v:.3g}"

        if self.values:
            if len(self.values) == 1:
                return f"{self.key} = {self.values[0]}"
            return f"{self.key} in {{{', '.join(self.values)}}}"
        if self.low is not None and self.high is not None:
            return f"{num(self.low, True)} <= {self.key} <= {num(self.high, False)}"
        if self.low is not None:
            return f"{self.key} >= {num(self.low, True)}"
        return f"{self.key} <= {num(self.high, False)}"


@dataclass(frozen=True)
class Box:
    restrictions: tuple[Restriction, ...]
    index: int  # position on the peeling trajectory
    n: int  # rows in the box
    k: int  # cases (lockups) in the box
    total_n: int
    total_k: int

    @property
    def density(self) -> Proportion:
        return wilson(self.k, self.n)

    @property
    def coverage(self) -> Proportion:
        return wilson(self.k, self.total_k)

    @property
    def support(self) -> float:
        return self.n / self.total_n if self.total_n else math.nan

    def contains(self, x: pd.DataFrame) -> np.ndarray:
        inside = np.ones(len(x), dtype=bool)
        for r in self.restrictions:
            col = _column_of(x, r.key)
            if r.values:
                inside &= x[col].astype(str).isin(r.values).to_numpy()
            else:
                if r.low is not None:
                    inside &= (x[col] >= r.low).to_numpy()
                if r.high is not None:
                    inside &= (x[col] <= r.high).to_numpy()
        return inside


def _column_of(x: pd.DataFrame, key: str) -> str:
    if key in x.columns:
        return key
    flat = re.sub(r"\[(\d+)\]", r".\1", key)
    if flat in x.columns:
        return flat
    for c in x.columns:
        if column_key(str(c)) == key:
            return str(c)
    raise KeyError(key)


def _restrictions(box_lim: pd.DataFrame, box_init: pd.DataFrame, qp: dict, x: pd.DataFrame) -> list[Restriction]:
    out = []
    for col in box_lim.columns:
        lo, hi = box_lim[col].iloc[0], box_lim[col].iloc[1]
        lo0, hi0 = box_init[col].iloc[0], box_init[col].iloc[1]
        q = qp.get(col, [math.nan, math.nan])
        qv = [v for v in q if v is not None and not (isinstance(v, float) and math.isnan(v)) and v >= 0]
        qmax = max(qv) if qv else math.nan
        key = column_key(str(col))
        if isinstance(lo, set):
            if lo == lo0:
                continue
            out.append(Restriction(key, values=tuple(sorted(str(v) for v in lo)), qp=qmax))
            continue
        if lo == lo0 and hi == hi0:
            continue
        integer = pd.api.types.is_integer_dtype(x[col])
        out.append(Restriction(
            key,
            low=None if lo == lo0 else float(lo),
            high=None if hi == hi0 else float(hi),
            qp=qmax,
            integer=integer,
        ))
    return out


def _quiet_prim():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ema_workbench.analysis import prim  # heavy import (seaborn, SALib): only when asked
    return prim


def prim_box(
    x: pd.DataFrame, y: np.ndarray, *, peel_alpha: float = 0.05, mass_min: float = 0.02, select: int | None = None
) -> tuple[Box, pd.DataFrame, Any]:
    """Run PRIM once; return the chosen box, the peeling trajectory and ema_workbench's PrimBox.

    The chosen box is ``select`` if given, else the box on the trajectory with the best F1 score of
    coverage and density: the box that, read as a rule "lockup iff inside", classifies the rows best.
    """
    if y.sum() == 0:
        raise InputError("no case of interest (no lockup) among the rows: nothing to explain")
    prim = _quiet_prim()
    base = float(y.mean())
    # ema_workbench pastes fractional limits into integer columns, which pandas >= 2 refuses: give it
    # floats; _restrictions() reads the integer-ness from x.
    xf = x.copy()
    for c in xf.columns:
        if pd.api.types.is_integer_dtype(xf[c]):
            xf[c] = xf[c].astype("float64")
    p = prim.Prim(xf, y.astype(int), threshold=base, peel_alpha=peel_alpha, mass_min=mass_min)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pbox = p.find_box()
    traj = pbox.peeling_trajectory.copy()
    cov, dens = traj["coverage"].to_numpy(float), traj["density"].to_numpy(float)
    f1 = np.where(cov + dens > 0, 2 * cov * dens / np.maximum(cov + dens, 1e-300), 0.0)
    traj["f1"] = f1
    i = int(select) if select is not None else int(np.argmax(f1))
    if not 0 <= i < len(traj):
        raise InputError(f"--box {i}: the peeling trajectory has boxes 0..{len(traj) - 1}")
    pbox.select(i)
    restrictions = _restrictions(pbox.box_lims[i], p.box_init, pbox.qp[i], x)
    box = Box(
        restrictions=tuple(sorted(restrictions, key=lambda r: (r.qp if not math.isnan(r.qp) else 1.0))),
        index=i,
        n=int(traj["n"].iloc[i]),
        k=int(traj["k"].iloc[i]),
        total_n=int(len(y)),
        total_k=int(y.sum()),
    )
    return box, traj, pbox


# ------------------------------------------------------------------ tree and ranking


def _encoded(x: pd.DataFrame) -> pd.DataFrame:
    """One-hot for the category columns ("key=value"), numbers as they are."""
    parts = []
    for c in x.columns:
        if pd.api.types.is_numeric_dtype(x[c]):
            parts.append(x[[c]].astype(float))
        else:
            d = pd.get_dummies(x[c].astype(str), prefix=c, prefix_sep="=").astype(float)
            parts.append(d)
    return pd.concat(parts, axis=1)


def tree_text(x: pd.DataFrame, y: np.ndarray, *, max_depth: int = 3, min_leaf: float = 0.02) -> str:
    """A shallow CART tree (scikit-learn) as indented text, each leaf with P(lockup) and its interval."""
    from sklearn.tree import DecisionTreeClassifier

    enc = _encoded(x)
    leaf = max(5, int(math.ceil(min_leaf * len(y))))
    clf = DecisionTreeClassifier(max_depth=max_depth, min_samples_leaf=leaf, random_state=0)
    clf.fit(enc.to_numpy(), y.astype(int))
    t = clf.tree_
    names = list(enc.columns)
    leaves = clf.apply(enc.to_numpy())
    lines: list[str] = []

    def cond(node: int, left: bool) -> str:
        name = names[t.feature[node]]
        if "=" in name and name.split("=", 1)[0] in x.columns and not pd.api.types.is_numeric_dtype(
            x[name.split("=", 1)[0]]
        ):
            key, val = name.split("=", 1)
            return f"{column_key(key)} {'!=' if left else '='} {val}"
        thr = t.threshold[node]
        col = x[name]
        if pd.api.types.is_integer_dtype(col):
            return f"{column_key(name)} {'<=' if left else '>='} {math.floor(thr) if left else math.floor(thr) + 1}"
        return f"{column_key(name)} {'<=' if left else '>'} {thr:.3g}"

    def walk(node: int, depth: int) -> None:
        pad = "  " * depth
        if t.children_left[node] == -1:
            mask = leaves == node
            k, n = int(y[mask].sum()), int(mask.sum())
            w = wilson(k, n)
            lines.append(f"{pad}-> P = {w.p:.2f} [{w.low:.2f}, {w.high:.2f}]  ({k}/{n})")
            return
        for child, left in ((t.children_left[node], True), (t.children_right[node], False)):
            lines.append(f"{pad}{cond(node, left)}")
            walk(child, depth + 1)

    walk(0, 0)
    return "\n".join(lines)


@dataclass(frozen=True)
class Ranking:
    """Keys ranked by how much they explain: one row per key, the method said in ``method``."""

    table: pd.DataFrame  # key, score, sd (and for Sobol: S1, S1_conf, ST, ST_conf)
    method: str


def rank_keys(x: pd.DataFrame, y: np.ndarray, *, repeats: int = 5, seed: int = 0) -> Ranking:
    """Permutation importance: the drop in held-out ROC AUC of a gradient-boosted tree classifier
    (scikit-learn HistGradientBoosting, categories native) when one key is shuffled."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    xx = x.copy()
    for c in xx.columns:
        if not pd.api.types.is_numeric_dtype(xx[c]):
            xx[c] = xx[c].astype("category")
    yi = y.astype(int)
    strat = yi if 0 < yi.sum() < len(yi) and min(yi.sum(), len(yi) - yi.sum()) >= 2 else None
    xtr, xte, ytr, yte = train_test_split(xx, yi, test_size=0.3, random_state=seed, stratify=strat)
    clf = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=200, random_state=seed)
    # One OpenMP thread: on a machine shared with sweep workers, more threads make it much slower.
    with threadpool_limits(1):
        return _rank(clf, xx, xtr, xte, ytr, yte, repeats, seed)


def _rank(clf, xx, xtr, xte, ytr, yte, repeats: int, seed: int) -> Ranking:
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import roc_auc_score

    clf.fit(xtr, ytr)
    if len(set(yte)) < 2:
        auc = math.nan
        scores = np.zeros(len(xx.columns))
        sds = np.zeros(len(xx.columns))
    else:
        auc = float(roc_auc_score(yte, clf.predict_proba(xte)[:, 1]))
        imp = permutation_importance(clf, xte, yte, scoring="roc_auc", n_repeats=repeats, random_state=seed)
        scores, sds = imp.importances_mean, imp.importances_std
    table = pd.DataFrame({"key": [column_key(str(c)) for c in xx.columns], "score": scores, "sd": sds})
    table = table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    return Ranking(table, f"drop in held-out ROC AUC when the key is shuffled (classifier AUC {auc:.3f})")


def sobol_indices(problem: dict, y_design: np.ndarray, *, seed: int = 0) -> pd.DataFrame:
    """Sobol first-order and total indices (SALib, Saltelli 2010 / Jansen estimators) of an output
    evaluated on a Saltelli design: ``problem`` as SALib's, y_design in design order."""
    from SALib.analyze import sobol

    res = sobol.analyze(problem, np.asarray(y_design, dtype=float), calc_second_order=False,
                        print_to_console=False, seed=seed)
    t = pd.DataFrame({
        "key": problem["names"], "S1": res["S1"], "S1_conf": res["S1_conf"],
        "ST": res["ST"], "ST_conf": res["ST_conf"],
    })
    return t.sort_values("ST", ascending=False, kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------ the whole explanation


@dataclass
class Explanation:
    sweep: str
    policy: str
    against: str | None
    rows: int
    cells: int
    cases: int
    box: Box
    trajectory: pd.DataFrame
    tree: str
    ranking: Ranking
    sobol: pd.DataFrame | None = None
    prim_box: Any = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return f"{self.policy} locks up" if self.against is None else (
            f"{self.policy} locks up and {self.against} does not")


def explain(
    df: pd.DataFrame,
    policy: str,
    against: str | None = None,
    *,
    sweep: str = "",
    keys: Sequence[str] | None = None,
    select: int | None = None,
    saltelli_design: Sequence[dict] | None = None,
) -> Explanation:
    """The whole explanation. ``saltelli_design``: every point of the sweep's Saltelli sample design
    (grid.sample_design), to add Sobol indices of the lockup rate over the sample keys."""
    x, y, ids = discovery_frame(df, policy, against, keys)
    box, traj, pbox = prim_box(x, y, select=select)
    sob = None
    if saltelli_design:
        problem, y_design = saltelli_outputs(df, ids, y, saltelli_design, list(saltelli_design[0]))
        sob = sobol_indices(problem, y_design)
    return Explanation(
        sweep=sweep, policy=policy, against=against, rows=len(y), cells=int(ids["cell_id"].nunique()),
        cases=int(y.sum()), box=box, trajectory=traj, tree=tree_text(x, y), ranking=rank_keys(x, y),
        sobol=sob, prim_box=pbox,
    )


def _pct(p: Proportion) -> str:
    return f"{p.p:.0%} [{p.low:.0%}, {p.high:.0%}]"


def _wrap(text: str, indent: str = "") -> list[str]:
    import textwrap

    # An interval "[0.80, 0.86]" stays on one line: its space is held by a placeholder while wrapping.
    held = re.sub(r"\[([^\]\s]*), ([^\]\s]*)\]", "[\\1,\x00\\2]", text)
    lines = textwrap.wrap(held, width=72, initial_indent=indent, subsequent_indent=indent + "  ",
                          break_long_words=False, break_on_hyphens=False)
    return [line.replace("\x00", " ") for line in lines]


def format_explanation(e: Explanation, *, trajectory_rows: int = 12) -> str:
    """Plain text for a mail: prose wrapped at 72 columns, tables as they are."""
    b = e.box
    base = wilson(e.cases, e.rows)
    d = b.density
    what = "lockups" if e.against is None else f"rows where {e.policy} alone locks up"
    out = [*_wrap(f"oomsweep explain: sweep {e.sweep}: where {e.target}"), ""]
    out += _wrap(f"{e.rows} rows ({e.cells} cells x replicates), {e.cases} {what}: "
                 f"P = {base.p:.3f} [{base.low:.3f}, {base.high:.3f}] over the whole sweep "
                 "(95 % Wilson intervals throughout).")
    out += [""]
    if b.restrictions:
        out += _wrap(f"PRIM (box {b.index} of {len(e.trajectory) - 1} on the peeling trajectory): "
                     f"{e.target} with P = {d.p:.2f} [{d.low:.2f}, {d.high:.2f}] when")
        for j, r in enumerate(b.restrictions):
            out.append(f"    {'AND ' if j else ''}{r.text()}")
        out += _wrap(f"This box holds {_pct(b.coverage)} of the {what} (coverage) in "
                     f"{b.support:.1%} of the rows (support: {b.n} rows).")
        out += ["", f"  {'restriction':<46} {'quasi-p':>8}"]
        for r in b.restrictions:
            sig = "" if r.qp <= 0.05 else "  (n.s.)"
            out.append(f"  {r.text():<46} {r.qp:8.1e}{sig}")
        out += _wrap("(quasi-p: one-sided binomial test of the box against the box without that "
                     "restriction, Bryant and Lempert 2010)", "  ")
    else:
        out += _wrap(f"PRIM found no box better than the whole sweep for {e.target}.")
    out += ["", "peeling trajectory (chosen: the best F1 of coverage and density):",
            "  box  coverage  density  support  keys"]
    traj = e.trajectory
    step = max(1, math.ceil(len(traj) / trajectory_rows))
    shown = sorted(set(range(0, len(traj), step)) | {len(traj) - 1, b.index})
    for i in shown:
        r = traj.iloc[i]
        mark = "  <- chosen" if i == b.index else ""
        out.append(f"  {i:3d}  {r['coverage']:8.3f} {r['density']:8.3f} {r['mass']:8.3f}  {int(r['res_dim']):4d}{mark}")
    out += ["", "classification tree (scikit-learn CART, depth 3), P per leaf:", e.tree, ""]
    out += _wrap(f"keys ranked by how much they explain: {e.ranking.method}:")
    for r in e.ranking.table.itertuples(index=False):
        out.append(f"  {r.key:<40} {r.score:7.3f} +- {r.sd:.3f}")
    if e.sobol is not None:
        out += [""]
        out += _wrap("Sobol indices of the per-point rate over the sample keys (SALib, Saltelli "
                     "design; first-order S1 and total ST, +- 95 % bootstrap):")
        for r in e.sobol.itertuples(index=False):
            out.append(f"  {r.key:<30} S1 {r.S1:6.3f} +- {r.S1_conf:.3f}  ST {r.ST:6.3f} +- {r.ST_conf:.3f}")
    return "\n".join(out)


# ------------------------------------------------------------------ plots


def explanation_figures(e: Explanation, directory) -> list:
    """The PRIM trade-off curve (chosen box circled) and the chosen box (ema_workbench's box plot,
    restrictions against each key's full range, quasi-p values in the labels) as PNGs."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    stem = e.policy if e.against is None else f"{e.policy}_not_{e.against}"
    stem = re.sub(r"[^A-Za-z0-9_.=-]+", "_", stem)
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = e.prim_box.show_tradeoff(annotated=False)
        ax = fig.axes[0]
        b = e.trajectory.iloc[e.box.index]
        ax.scatter([b["coverage"]], [b["density"]], s=160, facecolors="none", edgecolors="red", linewidths=1.5,
                   label=f"chosen: box {e.box.index}")
        ax.legend(loc="lower left", fontsize=8)
        ax.set_title(f"PRIM peeling trajectory: {e.target}", fontsize=9)
        p = out / f"prim_tradeoff_{stem}.png"
        fig.savefig(p, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(p)
        if e.box.restrictions:
            figs = e.prim_box.inspect(e.box.index, style="graph")
            fig = figs[0] if not isinstance(figs[0], tuple) else figs[0][0]
            fig.suptitle(f"PRIM box {e.box.index}: {e.target}", fontsize=9)
            fig.set_size_inches(8, 1.2 + 0.5 * len(e.box.restrictions))
            p = out / f"prim_box_{stem}.png"
            fig.savefig(p, dpi=110, bbox_inches="tight")
            plt.close(fig)
            paths.append(p)
    return paths


def explanation_metrics(e: Explanation) -> dict[str, float]:
    """Numbers for MLflow, keyed by the target: explain.<policy>[_not_<q>].<name>."""
    stem = e.policy if e.against is None else f"{e.policy}_not_{e.against}"
    stem = re.sub(r"[^A-Za-z0-9_.=/-]+", "_", stem)
    d, c = e.box.density, e.box.coverage
    out = {
        "box_density": d.p, "box_density_low": d.low, "box_density_high": d.high,
        "box_coverage": c.p, "box_support": e.box.support, "box_restricted_keys": float(len(e.box.restrictions)),
        "rows": float(e.rows), "cases": float(e.cases),
    }
    return {f"explain.{stem}.{k}": float(v) for k, v in out.items()}


# ------------------------------------------------------------------ Saltelli designs


def _stored_text(v: Any) -> str:
    """A parameter value as its column stores it (schema.param_value), as text: the join key."""
    import json

    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def saltelli_outputs(df: pd.DataFrame, ids: pd.DataFrame, y: np.ndarray, design: Sequence[dict],
                     keys: Sequence[str]) -> tuple[dict, np.ndarray]:
    """SALib's problem and the output in design order for a Saltelli sample design.

    ``design``: every point of the design, repeats included (grid.sample_design); each point's
    output is the rate of y over the rows at that point (pooled over grid cells and replicates).
    Bounds are the unit cube the design was drawn in: the indices need only the design's structure.
    ``df``: the stored rows (key columns as stored); ``ids``: cell_id of each entry of y.
    """
    cols = [_column_of(df, k) for k in keys]
    per_cell = df.drop_duplicates("cell_id").set_index("cell_id")[cols]
    text = per_cell.apply(lambda r: "\x1f".join(_stored_text(v) for v in r), axis=1)
    row_key = ids["cell_id"].map(text)
    rate = pd.Series(y.astype(float)).groupby(row_key.to_numpy()).mean()
    out = np.empty(len(design))
    for i, point in enumerate(design):
        k = "\x1f".join(_stored_text(point[key]) for key in keys)
        if k not in rate.index:
            raise InputError(f"sample point {i} of the design ({', '.join(f'{a}={point[a]!r}' for a in keys)}) "
                             "has no stored rows: run the sweep to the end first")
        out[i] = rate[k]
    problem = {"num_vars": len(keys), "names": list(keys), "bounds": [[0.0, 1.0]] * len(keys)}
    return problem, out
