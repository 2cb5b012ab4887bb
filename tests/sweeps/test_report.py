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
        assert (row["p"], row["ci_low"], row["ci_high"]) == pytest.approx((est.p, est.low, est.high))
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


def test_policy_table_of_no_ok_rows_is_empty_with_columns() -> None:
    df = make_rows()
    table = policy_table(df[df["status"] == "error"])
    assert table.empty and list(table.columns) == list(TABLE_COLUMNS)


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
    assert f"{a_row['p']:.4f}" in lines[2] and f"{a_row['ci_high']:.4f}" in lines[2]
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
