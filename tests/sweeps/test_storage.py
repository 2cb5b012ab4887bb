"""The Parquet dataset: unique names, coalescing, provenance, resume keys, readers never see temp files."""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

from sweeps.storage import schema as S
from sweeps.errors import StorageError
from sweeps.storage import dataset as storage


def _schema(params=None) -> pa.Schema:
    return S.file_schema(params or {"machine.rt_runtime_share": pa.bool_()}, ["children", *S.FIXED_CPU_KEYS])


def _rows(n: int, start: int = 0, cell: str = "c0", share: bool = True) -> list[dict]:
    return [
        {
            "policy_name": "upstream_4_19",
            "policy_options": "{}",
            "cell_id": cell,
            "cell_index": 0,
            "replicate": i,
            "seed": 1000 + i,
            "execution_id": "e1",
            "model_version": "0.1.0",
            "machine.rt_runtime_share": share,
            "scenario_json": "{}",
            "lockup": i % 3 == 0,
            "lockup_reason": "stall" if i % 3 == 0 else "",
            "max_stall_s": float(i),
            "first_progress_s": None,
            "kills": 1,
            "cpu_s.children": 0.5,
            "status": "ok",
            "error": "",
            "wall_s": 0.001,
            "node_id": "n",
            "worker_pid": 1,
        }
        for i in range(start, start + n)
    ]


PROV = {"sweep": "s1", "sweep_hash": "abc", "seed": 7, "model_version": "0.1.0", "schema_version": S.SCHEMA_VERSION}


def _writer(tmp_path, **kw) -> storage.DatasetWriter:
    kw.setdefault("flush_rows", 1000)
    kw.setdefault("flush_seconds", 3600)
    return storage.DatasetWriter(tmp_path, "s1", _schema(), PROV, **kw)


def test_appending_twice_keeps_every_row_with_unique_file_names(tmp_path):
    for start in (0, 10):
        w = _writer(tmp_path)
        w.add("upstream_4_19", _rows(10, start))
        w.close()
    files = storage.list_files(tmp_path, "s1")
    assert len(files) == 2 and len({f.name for f in files}) == 2
    df = storage.read_sweep(tmp_path, "s1")
    assert sorted(df["replicate"]) == list(range(20))
    assert set(df["sweep"]) == {"s1"} and set(df["policy"]) == {"upstream_4_19"}


def test_rows_are_coalesced_into_few_files(tmp_path):
    w = _writer(tmp_path, flush_rows=1000)
    for start in range(0, 2500, 50):  # 50 small result batches
        w.add("upstream_4_19", _rows(50, start))
    assert w.rows_written == 2000 and w.buffered == 500
    w.close()
    sizes = sorted(pq.read_metadata(f).num_rows for f in storage.list_files(tmp_path, "s1"))
    assert sizes == [500, 1000, 1000]


def test_time_based_flush(tmp_path):
    w = _writer(tmp_path, flush_rows=10_000, flush_seconds=0.0)
    w.add("upstream_4_19", _rows(3))
    assert w.buffered == 0 and len(storage.list_files(tmp_path, "s1")) == 1


def test_every_file_carries_provenance_and_the_declared_schema(tmp_path):
    w = _writer(tmp_path, flush_rows=5)
    w.add("upstream_4_19", _rows(12))
    w.add("timeout_backoff[timeout_s=2.0]", _rows(3))
    w.close()
    files = storage.list_files(tmp_path, "s1")
    assert len(files) == 2  # one file per policy per flush
    for f in files:
        prov = storage.read_provenance(f)
        assert prov["seed"] == 7 and prov["sweep_hash"] == "abc" and prov["schema_version"] == S.SCHEMA_VERSION
        schema = pq.read_schema(f)
        assert "sweep" not in schema.names and "policy" not in schema.names  # partition columns live in paths
        assert schema.field("first_progress_s").type == pa.float64()
        assert schema.field("machine.rt_runtime_share").type == pa.bool_()
        assert schema.field("cpu_s.ksoftirqd").type == pa.float64()
    assert set(storage.read_sweep(tmp_path, "s1")["policy"]) == {"upstream_4_19", "timeout_backoff[timeout_s=2.0]"}


def test_readers_never_see_temp_or_half_written_files(tmp_path):
    w = _writer(tmp_path)
    w.add("upstream_4_19", _rows(10))
    w.close()
    pdir = storage.partition_dir(tmp_path, "s1", "upstream_4_19")
    # What a writer killed mid-write leaves behind: a footer-less file under its temp name.
    good = storage.list_files(tmp_path, "s1")[0].read_bytes()
    (pdir / ".part-123-dead.parquet.tmp").write_bytes(good[: len(good) // 2])
    assert len(storage.read_sweep(tmp_path, "s1")) == 10
    assert len(pd.read_parquet(tmp_path)) == 10
    glob = str(tmp_path / "**" / "*.parquet")
    n = duckdb.sql(f"select count(*) from read_parquet('{glob}', hive_partitioning=true)").fetchall()[0][0]
    assert n == 10
    part = pds.partitioning(pa.schema([("sweep", pa.string()), ("policy", pa.string())]), flavor="hive")
    assert pds.dataset(tmp_path, partitioning=part).count_rows() == 10


def test_a_write_that_dies_halfway_leaves_nothing_visible(tmp_path, monkeypatch):
    def half_then_fail(table, where, **kw):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    w = _writer(tmp_path)
    w.add("upstream_4_19", _rows(5))
    monkeypatch.setattr(storage.pq, "write_table", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        w.flush()
    pdir = storage.partition_dir(tmp_path, "s1", "upstream_4_19")
    assert list(pdir.iterdir()) == []
    assert storage.read_sweep(tmp_path, "s1").empty


def test_done_keys_reads_only_identity(tmp_path):
    w = _writer(tmp_path)
    w.add("upstream_4_19", _rows(3, cell="a"))
    w.add("handoff_rfc_v2", _rows(2, cell="b"))
    w.close()
    assert storage.done_keys(tmp_path, "s1") == {
        ("a", "upstream_4_19", 0), ("a", "upstream_4_19", 1), ("a", "upstream_4_19", 2),
        ("b", "handoff_rfc_v2", 0), ("b", "handoff_rfc_v2", 1),
    }
    assert set(storage.read_keys(tmp_path, "s1").column_names) == {"sweep", "policy", "cell_id", "replicate"}
    assert storage.done_keys(tmp_path, "other") == set()


def test_another_seed_for_the_same_sweep_is_refused(tmp_path):
    w = _writer(tmp_path)
    w.add("upstream_4_19", _rows(1))
    w.close()
    storage.check_sweep_seed(tmp_path, "s1", 7)
    storage.check_sweep_seed(tmp_path, "another", 8)
    with pytest.raises(StorageError, match=r"^seed: .*seed 7.*8"):
        storage.check_sweep_seed(tmp_path, "s1", 8)


def test_sweeps_do_not_mix(tmp_path):
    w1 = _writer(tmp_path)
    w1.add("upstream_4_19", _rows(4))
    w1.close()
    w2 = storage.DatasetWriter(tmp_path, "s2", _schema(), {**PROV, "sweep": "s2"}, flush_rows=10)
    w2.add("upstream_4_19", _rows(6))
    w2.close()
    assert storage.list_sweeps(tmp_path) == ["s1", "s2"]
    assert len(storage.read_sweep(tmp_path, "s1")) == 4
    assert len(storage.read_sweep(tmp_path, "s2")) == 6


def test_a_column_added_later_is_read_back_with_nulls(tmp_path):
    w = _writer(tmp_path)
    w.add("upstream_4_19", _rows(2))
    w.close()
    params = {"machine.rt_runtime_share": pa.bool_(), "groups.0.sched.rt_priority": pa.int64()}
    w2 = storage.DatasetWriter(tmp_path, "s1", _schema(params), PROV)
    w2.add("upstream_4_19", [{**r, "groups.0.sched.rt_priority": 50} for r in _rows(2, start=2)])
    w2.close()
    df = storage.read_sweep(tmp_path, "s1").sort_values("replicate")
    assert df["groups.0.sched.rt_priority"].isna().tolist() == [True, True, False, False]


def test_param_types():
    assert S.param_type([True, False]) == pa.bool_()
    assert S.param_type([1, 50, 99]) == pa.int64()
    assert S.param_type([1, 2.5]) == pa.float64()
    assert S.param_type(["idle", "unchanged"]) == pa.string()
    assert S.param_value({"uniform": [0, 1]}, pa.string()) == '{"uniform":[0,1]}'


def test_outcome_columns_flatten_cpu_s():
    cols = S.outcome_columns({"lockup": True, "max_stall_s": 3.0, "cpu_s": {"children": 1, "oom_reaper": 0.5}})
    assert cols["lockup"] is True and cols["cpu_s.children"] == 1.0 and cols["cpu_s.oom_reaper"] == 0.5
    assert cols["first_kill_s"] is None
    assert json.dumps(cols)  # plain values only
    assert sorted(k for k in cols if k.startswith("cpu_s.")) == ["cpu_s.children", "cpu_s.oom_reaper"]


def test_schema_declares_every_outcome_field_in_order():
    """The Parquet schema and oommodel.Outcome must not drift apart."""
    from oommodel import Outcome
    from sweeps.storage.schema import OUTCOME_FIELDS

    model_fields = [name for name in Outcome.field_names() if name != "cpu_s"]
    assert [f.name for f in OUTCOME_FIELDS] == model_fields
