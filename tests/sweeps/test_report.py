"""Per-policy tables and paired comparisons, recomputed independently from the rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sweeps.analysis.report import TABLE_COLUMNS, compare_policies, format_table, policy_table
from sweeps.analysis.stats import paired_difference, wilson
from sweeps.errors import UnknownColumn


def make_rows() -> pd.DataFrame:
    """2 cells x 2 policies x 50 replicates; policy b locks up more often; a few error rows."""
    rng = np.random.default_rng(5)
    rows = []
    for cell_index, (cid, prio) in enumerate([("c0", 1), ("c1", 99)]):
        for rep in range(50):
            u = rng.random()
            for policy, threshold in (("a", 0.1 + 0.2 * cell_index), ("b", 0.3 + 0.2 * cell_index)):
                lockup = bool(u < threshold)  # common random numbers: b locks up whenever a does
                rows.append(
                    {
                        "sweep": "s",
                        "policy": policy,
                        "cell_id": cid,
                        "cell_index": cell_index,
                        "replicate": rep,
                        "groups.0.sched.rt_priority": prio,
                        "lockup": lockup,
                        "max_stall_s": float(20 + 10 * u) if lockup else float(5 * u),
                        "kills": 1 + int(lockup),
                        "handed_over": rep % 2 == 0,
                        "status": "ok",
                        "error": "",
                    }
                )
    # Error rows must not count (their outcome fields are meaningless).
    for rep in (50, 51):
        rows.append(
            {
                "sweep": "s", "policy": "a", "cell_id": "c0", "cell_index": 0, "replicate": rep,
                "groups.0.sched.rt_priority": 1, "lockup": True, "max_stall_s": 999.0, "kills": 0,
                "handed_over": False, "status": "error", "error": "boom",
            }
        )
    return pd.DataFrame(rows)


def test_policy_table_matches_a_recomputation() -> None:
    df = make_rows()
    table = policy_table(df)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table["policy"].tolist() == ["a", "b"]
    ok = df[df["status"] == "ok"]
    for _, row in table.iterrows():
        rows = ok[ok["policy"] == row["policy"]]
        k = int(rows["lockup"].sum())
        assert row["n"] == 100 and row["lockups"] == k
        est = wilson(k, 100)
        assert (row["lockup_probability"], row["ci_low"], row["ci_high"]) == pytest.approx((est.p, est.low, est.high))
        assert row["failed_rows"] == (2 if row["policy"] == "a" else 0)  # error rows: counted apart, not in n
        assert row["median_stall_s"] == pytest.approx(float(rows["max_stall_s"].median()))
        assert row["p99_stall_s"] == pytest.approx(float(np.quantile(rows["max_stall_s"], 0.99)))
        assert row["mean_kills"] == pytest.approx(float(rows["kills"].mean()))
        assert row["handed_over_rate"] == pytest.approx(0.5)
    assert table.loc[0, "lockups"] < table.loc[1, "lockups"]


def test_policy_table_by_grid_key_accepts_key_path_or_column() -> None:
    df = make_rows()
    t1 = policy_table(df, by=["groups[0].sched.rt_priority"])
    t2 = policy_table(df, by=["groups.0.sched.rt_priority"])
    pd.testing.assert_frame_equal(t1, t2)
    assert list(t1.columns[:2]) == ["groups.0.sched.rt_priority", "policy"]
    assert list(zip(t1.iloc[:, 0], t1["policy"])) == [(1, "a"), (1, "b"), (99, "a"), (99, "b")]
    assert t1["n"].tolist() == [50, 50, 50, 50]
    with pytest.raises(UnknownColumn, match="did you mean 'groups.0.sched.rt_priority'"):
        policy_table(df, by=["groups[0].sched.rt_prio"])


def test_policy_table_of_no_ok_rows_says_n_0_and_the_failed_rows() -> None:
    df = make_rows()
    table = policy_table(df[df["status"] == "error"])
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table[["policy", "n", "lockups", "failed_rows"]].values.tolist() == [["a", 0, 0, 2]]
    assert table["n"].dtype.kind == "i" and math.isnan(table.loc[0, "lockup_probability"])
    assert policy_table(df.iloc[:0]).empty


def test_policy_table_follows_the_sweeps_policy_order() -> None:
    df = make_rows()
    assert policy_table(df, policies=["b", "a"])["policy"].tolist() == ["b", "a"]
    assert policy_table(df, policies=["b"])["policy"].tolist() == ["b", "a"]  # others after, as found


def test_format_text_fits_a_mail_and_folds_by_keys() -> None:
    from sweeps.analysis.report import format_text

    df = make_rows()
    table = policy_table(df, by=["groups.0.sched.rt_priority"])
    text = format_text(table, "sweep s, block 0", ["groups.0.sched.rt_priority"])
    assert all(len(line) <= 72 for line in text.splitlines())
    assert "groups.0.sched.rt_priority = 1" in text and "groups.0.sched.rt_priority = 99" in text
    assert "Wilson 95 %" in text and text.splitlines()[0] == "sweep s, block 0"
    covers = ("sweep handoff-vs-priority: every stored row, all blocks pooled (replicates 0..199, "
              "2 executions): 12000 rows, 0 not ok")  # what `report` puts first: folded, not cut
    text = format_text(table, covers)
    assert all(len(line) <= 72 for line in text.splitlines())
    assert " ".join(text.splitlines()[:2]) == covers


def test_format_table_folds_by_keys_and_prints_values_as_written() -> None:
    df = make_rows().assign(**{"reaper.busy_elsewhere_p": lambda x: np.where(x["cell_id"] == "c0", 0.0, 0.02)})
    table = policy_table(df, by=["reaper.busy_elsewhere_p"])
    text = format_table(table, ["reaper.busy_elsewhere_p"])
    assert "reaper.busy_elsewhere_p = 0.0\n" in text and "reaper.busy_elsewhere_p = 0.02\n" in text
    assert text.splitlines()[1].split() == list(TABLE_COLUMNS)


def test_compare_policies_pairs_on_cell_and_replicate() -> None:
    df = make_rows()
    # Drop one b row: its a partner must leave the comparison too.
    df = df[~((df["policy"] == "b") & (df["cell_id"] == "c1") & (df["replicate"] == 7))]
    d = compare_policies(df, "a", "b")
    assert d.n_pairs == 99
    ok = df[df["status"] == "ok"]
    a = ok[ok["policy"] == "a"].set_index(["cell_id", "replicate"])["lockup"]
    b = ok[ok["policy"] == "b"].set_index(["cell_id", "replicate"])["lockup"]
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    expected = paired_difference(joined["a"].tolist(), joined["b"].tolist())
    assert d == expected
    assert d.b == 0 and d.c > 0  # a never locks up when b does not (common random numbers)
    assert d.diff < 0 and d.high < 0 and d.p_value < 0.001
    # Shuffling the rows changes nothing.
    shuffled = df.sample(frac=1.0, random_state=1)
    assert compare_policies(shuffled, "a", "b") == d


def test_compare_policies_unknown_policy_names_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'bb'") as e:
        compare_policies(make_rows().assign(policy=lambda x: x["policy"].map({"a": "a", "b": "bb"})), "a", "b")
    assert str(e.value).startswith("b: ")


def test_format_table_aligns_columns() -> None:
    table = policy_table(make_rows())
    text = format_table(table)
    lines = text.splitlines()
    assert lines[0].split() == list(TABLE_COLUMNS)
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 4
    assert lines[2].startswith("a ") and lines[3].startswith("b ")
    # Right-aligned numbers: every row ends at the same column as the header.
    assert len({len(line) for line in lines}) == 1
    a_row = table.iloc[0]
    assert f"{a_row['lockup_probability']:.4f}" in lines[2] and f"{a_row['ci_high']:.4f}" in lines[2]
    empty = format_table(policy_table(make_rows().iloc[:0]))
    assert "(no rows)" in empty


def test_format_table_shows_missing_as_dash() -> None:
    t = pd.DataFrame({"policy": ["x"], "n": [0], "p": [math.nan]})
    assert format_table(t).splitlines()[2].split() == ["x", "0", "-"]


def test_categorical_policy_column_as_read_from_hive_partitions() -> None:
    """pandas reads hive partition columns as categoricals; results must not change."""
    df = make_rows()
    cat = df.assign(policy=pd.Categorical(df["policy"], categories=["b", "a", "unused"]))
    pd.testing.assert_frame_equal(policy_table(cat), policy_table(df))
    assert compare_policies(cat, "a", "b") == compare_policies(df, "a", "b")


# ------------------------------------------------------------------ compare --by, pairing, censoring


def test_compare_by_adjusts_over_the_values() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from explain_synthetic import synthetic_rows
    from sweeps.analysis.report import compare_by
    from sweeps.analysis.stats import adjust_p_values

    rows = synthetic_rows(cells=300, replicates=4, seed=2)
    for method in ("holm", "fdr_bh"):
        t = compare_by(rows, "fragile", "sturdy", "victim.sched_at_handover", method).set_index(
            "victim.sched_at_handover")
        assert list(t.index) == ["idle", "unchanged"]
        assert t.loc["idle", "significant"] and not t.loc["unchanged", "significant"]
        assert t["p_adj"].tolist() == pytest.approx(adjust_p_values(t["p"].tolist(), method))
        assert (t["p_adj"] >= t["p"] - 1e-15).all()
        both = compare_policies(rows, "fragile", "sturdy")
        assert t["n_pairs"].sum() == both.n_pairs and t["a_only"].sum() == both.b
    with pytest.raises(ValueError, match="holm"):
        compare_by(rows, "fragile", "sturdy", "victim.sched_at_handover", "bonferonni")


def test_pairing_gain_on_common_random_numbers() -> None:
    from sweeps.analysis.report import compare_pairing_gain

    g = compare_pairing_gain(make_rows(), "a", "b")
    # b locks up whenever a does: the paired variance is the discordant share only, far below
    # the independent one
    assert g.ratio < 0.6 and g.high < 1.0


def test_censored_stalls_and_km_median_in_the_table() -> None:
    from sweeps.analysis.report import stall_censored

    df = pd.DataFrame({
        "policy": ["p"] * 4, "status": "ok", "cell_id": "c",
        "lockup": [True, True, True, False], "max_stall_s": [100.0, 100.0, 30.0, 1.0],
        "sim_time_s": [120.0, 120.0, 120.0, 3.0], "victims_pending_at_end": [1, 1, 0, 0],
        "kills": 1, "handed_over": False,
    })
    cens = stall_censored(df, 120.0)
    assert cens.tolist() == [True, True, True, False]
    row = policy_table(df, horizon_s=120.0).iloc[0]
    assert row["censored"] == 3 and row["median_stall_km_s"] == math.inf
    assert row["median_stall_s"] == pytest.approx(65.0)  # the plain median of the observed values
    assert "> horizon" in format_table(policy_table(df, horizon_s=120.0))
    assert math.isnan(policy_table(df.drop(columns="sim_time_s")).iloc[0]["median_stall_km_s"])
