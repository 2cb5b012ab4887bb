"""explain: PRIM must find the region of a synthetic sweep where it was planted; the tree, the key
ranking and the Sobol indices must point at the keys that matter and away from those that do not."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from explain_synthetic import IN_BOX_P, in_true_box, synthetic_rows

from sweeps.analysis import explain as X

TRUE_KEYS = {"victim.sched_at_handover", "reaper.busy_elsewhere_p", "groups[0].sched.rt_priority"}
NOISE_KEYS = {"machine.rt_runtime_share", "machine.ksoftirqd_awake_p"}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return synthetic_rows(cells=600, replicates=5, seed=1)


@pytest.fixture(scope="module")
def explained(rows):
    return X.explain(rows, "fragile", sweep="synthetic")


def _check_true_box(box, x: pd.DataFrame) -> None:
    by_key = {r.key: r for r in box.restrictions}
    assert set(by_key) == TRUE_KEYS, [r.text() for r in box.restrictions]
    assert by_key["victim.sched_at_handover"].values == ("idle",)
    busy, prio = by_key["reaper.busy_elsewhere_p"], by_key["groups[0].sched.rt_priority"]
    assert busy.high is None and 0.04 <= busy.low <= 0.06
    assert prio.high is None and 44 <= prio.low <= 56
    assert all(r.qp < 1e-6 for r in box.restrictions)
    inside, truth = box.contains(x), in_true_box(x)
    assert (inside & truth).sum() / (inside | truth).sum() >= 0.8  # Jaccard overlap with the planted box


def test_prim_recovers_the_planted_box(explained, rows):
    e = explained
    x, y, _ = X.discovery_frame(rows, "fragile")
    _check_true_box(e.box, x)
    d = e.box.density
    assert d.low <= IN_BOX_P <= d.high
    assert e.box.coverage.p >= 0.75
    assert e.box.k == int(y[e.box.contains(x)].sum()) and e.box.n == int(e.box.contains(x).sum())
    traj = e.trajectory
    assert traj["coverage"].iloc[0] == 1.0 and traj["mass"].iloc[0] == 1.0  # the trajectory starts at the whole sweep


def test_prim_over_a_pair_of_policies_finds_the_same_box(rows):
    x, y, ids = X.discovery_frame(rows, "fragile", against="sturdy")
    lock = rows.set_index(["policy", "cell_id", "replicate"])["lockup"]
    expect = [bool(lock[("fragile", c, r)] and not lock[("sturdy", c, r)]) for c, r in ids.itertuples(index=False)]
    assert y.tolist() == expect
    box, _, _ = X.prim_box(x, y)
    _check_true_box(box, x)


def test_tree_and_ranking_point_at_the_true_keys(explained):
    ranked = explained.ranking.table
    assert set(ranked["key"].head(3)) == TRUE_KEYS
    noise = ranked[ranked["key"].isin(NOISE_KEYS)]
    assert (noise["score"] < 0.02).all(), ranked
    assert "victim.sched_at_handover" in explained.tree and "-> P = 0.9" in explained.tree


def test_text_fits_a_mail(explained):
    text = X.format_explanation(explained)
    flat = " ".join(text.split())
    assert re.search(r"fragile locks up with P = 0\.[89]\d \[0\.\d\d, 0\.\d\d\] when", flat), flat
    assert "AND " in text and "coverage" in text and "support" in text
    too_wide = [line for line in text.splitlines() if len(line) > 72]
    assert not too_wide, too_wide


def test_no_lockup_is_bad_input_not_a_crash(rows):
    quiet = rows.assign(lockup=False)
    with pytest.raises(ValueError, match="no lockup"):
        X.explain(quiet, "fragile")
    with pytest.raises(ValueError, match="nope: no ok rows"):
        X.discovery_frame(rows, "nope")


def test_sobol_indices_on_a_saltelli_design():
    from sweeps.spec.grid import sample_design, sample_points
    from sweeps.spec.model import SampleSpec

    sample = SampleSpec("saltelli", 256, 3, {
        "reaper.busy_elsewhere_p": {"uniform": [0.0, 0.1]},
        "victim.sched_at_handover": {"choice": ["unchanged", "idle"]},
        "machine.cpus": {"int": [1, 8]},
    })
    design = sample_design(sample)
    assert len(design) == 256 * (3 + 2)
    points = sample_points(sample)
    assert len(points) < len(design)  # choice and int columns repeat points of A in A_B^i
    # y depends on busy_elsewhere_p alone
    df = pd.DataFrame(points)
    df = df.rename(columns={"machine.cpus": "machine.cpus"})
    df["cell_id"] = [f"c{i}" for i in range(len(df))]
    df["replicate"] = 0
    df["policy"] = "p"
    df["status"] = "ok"
    df["lockup"] = df["reaper.busy_elsewhere_p"] > 0.05
    x, y, ids = X.discovery_frame(df, "p")
    problem, yd = X.saltelli_outputs(df, ids, y, design, list(sample.params))
    s = X.sobol_indices(problem, yd).set_index("key")
    assert s.loc["reaper.busy_elsewhere_p", "ST"] > 0.8
    assert s.loc["reaper.busy_elsewhere_p", "S1"] > 0.7
    for k in ("victim.sched_at_handover", "machine.cpus"):
        assert abs(s.loc[k, "ST"]) < 0.1 and abs(s.loc[k, "S1"]) < 0.1
