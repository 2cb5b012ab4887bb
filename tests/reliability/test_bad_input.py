"""Bad input: generated sweep files get "ok" or exit 2 with a one-line key-path message, never a traceback.

Also: YAML safety (Python tags, billion laughs, recursive aliases), names and labels that try to leave
the output directory, and grids above the row limit.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeps.cli import main

from rel_helpers import HANDA, handa_sweep

pytestmark = pytest.mark.timeout(300)

TOP_KEYS = ["name", "base", "grid", "zip", "sample", "policies", "replicates", "seed", "output", "mlflow"]
GRID_KEYS = [
    "machine.cpus", "machine.hz", "victim.sched_at_handover", "groups[0].sched.rt_priority", "groups[0].count",
    "costs.alloc_loop_us", "horizon_s", "reaper.busy_elsewhere_p", "oom.limit_mb", "groups[5].name",
    "machine.nope", "", "[0]", "groups[-1]", "victim..memory", "ünïcode.kéy",
]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["all", "upstream_4_19", "timeout_backoff", "idle", "fifo50", "../../etc", "/abs", "名前", "a" * 200]),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _valid() -> dict:
    return {
        "name": "gen",
        "base": str(HANDA),
        "grid": {"victim.sched_at_handover": ["unchanged", "idle"]},
        "policies": ["upstream_4_19", "timeout_backoff"],
        "replicates": 2,
        "seed": 1,
        "output": "results/",
    }


@st.composite
def sweep_docs(draw):
    """A valid sweep with a few parts broken: wrong types, junk, unknown keys, empty lists, big grids."""
    doc = _valid()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "drop", "unknown", "grid", "empty", "policies", "replicates", "name"]))
        if kind == "replace":
            doc[draw(st.sampled_from(TOP_KEYS))] = draw(junk)
        elif kind == "drop":
            doc.pop(draw(st.sampled_from(TOP_KEYS)), None)
        elif kind == "unknown":
            doc[draw(st.text(min_size=1, max_size=10))] = draw(junk)
        elif kind == "grid":
            keys = draw(st.lists(st.sampled_from(GRID_KEYS), min_size=0, max_size=4, unique=True))
            doc["grid"] = {
                k: draw(st.one_of(st.lists(scalars, max_size=5), st.lists(st.integers(1, 64), min_size=0, max_size=60),
                                  junk))
                for k in keys
            }
        elif kind == "empty":
            doc[draw(st.sampled_from(["grid", "policies", "zip", "sample", "mlflow"]))] = draw(
                st.sampled_from([[], {}, "", None]))
        elif kind == "policies":
            doc["policies"] = draw(st.one_of(
                st.lists(st.one_of(st.sampled_from(["upstream_4_19", "nope", "all", "direct_reap"]),
                                   st.dictionaries(st.sampled_from(["timeout_backoff", "stall_backoff", "x"]), junk,
                                                   max_size=2)), max_size=3),
                junk))
        elif kind == "replicates":
            doc["replicates"] = draw(st.one_of(
                st.integers(-5, 10**9),
                st.fixed_dictionaries({"adaptive": st.dictionaries(
                    st.sampled_from(["ci_half_width", "min", "max", "batch", "bogus"]), scalars, max_size=4)}),
                junk))
        else:
            doc["name"] = draw(st.one_of(st.text(max_size=20), st.sampled_from(["../x", "/etc", "a/b", ".hidden", "ok-name"])))
    return doc


def _check(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)  # an exception escaping here is the failure this test looks for
    cap = capsys.readouterr()
    assert code in (0, 2), (code, cap.err)
    assert "Traceback" not in cap.err
    if code == 2:
        lines = [l for l in cap.err.splitlines() if l.strip()]
        assert len(lines) == 1, cap.err
        assert lines[0].startswith(f"oomsweep {argv[0]}: error: "), lines[0]
    return code, cap.err


def _check_path_named(err: str, doc: dict) -> None:
    """A failing message starts with a key path (a known key, or the unknown key of the file), or with
    the file's path for errors about the whole document."""
    msg = err.split(": error: ", 1)[1]
    head = msg.split(": ", 1)[0]
    root = head.split(".")[0].split("[")[0]
    from sweeps.errors import one_line as _one_line

    named = {_one_line(str(k)) for k in doc} | {_one_line(repr(str(k))) for k in doc}
    assert head and (root in TOP_KEYS or head in named or head.startswith("/")), msg


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])


@SETTINGS
@given(doc=sweep_docs())
def test_generated_sweep_files(doc, tmp_path, capsys):
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    code, err = _check(["validate", str(path), "--max-rows", "5000"], capsys)
    if code == 2:
        _check_path_named(err, yaml.safe_load(path.read_text(encoding="utf-8")))  # keys as YAML reads them
    # `run` goes through the same checks; --max-rows 0 stops a valid file before any work starts
    code_run, err_run = _check(["run", str(path), "--max-rows", "0", "--no-mlflow", "--serial"], capsys)
    assert code_run == 2
    if code == 2 and "pass --yes" not in err:
        if "pass --yes" in err_run:
            # the row limit is checked before the cells are validated: lift it, the cell error must follow
            code_run, err_run = _check(["run", str(path), "--max-rows", "5000", "--no-mlflow", "--serial"], capsys)
            assert code_run == 2
        assert err_run.split(": error: ", 1)[1] == err.split(": error: ", 1)[1]
    else:
        assert "pass --yes" in err_run
    assert not (tmp_path / "results").exists()  # nothing written for a file that never ran


@SETTINGS
@given(doc=junk)
def test_generated_documents_of_any_shape(doc, tmp_path, capsys):
    path = tmp_path / "any.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    _check(["validate", str(path)], capsys)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_generated_yaml_text(text, tmp_path, capsys):
    path = tmp_path / "raw.yaml"
    path.write_text(text, encoding="utf-8")
    _check(["validate", str(path)], capsys)


def test_not_utf8(tmp_path, capsys):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: \xff\xfe\x00")
    assert _check(["validate", str(path)], capsys)[0] == 2


# ------------------------------------------------------------------ YAML safety

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_is_refused_quickly(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB + "name: bomb\nbase: *i\npolicies: all\nreplicates: 1\ngrid: {horizon_s: *i}\n")
    t0 = time.process_time()
    code, err = _check(["validate", str(path)], capsys)
    assert code == 2 and "expands to more than" in err
    assert time.process_time() - t0 < 5  # CPU time, not wall time: the machine is shared


def test_billion_laughs_in_the_scenario_file_is_refused(tmp_path, capsys):
    (tmp_path / "scn.yaml").write_text(BOMB)
    path = handa_sweep(tmp_path, "b", base="scn.yaml")
    code, err = _check(["validate", str(path)], capsys)
    assert code == 2 and "base: " in err and "expands to more than" in err


@pytest.mark.parametrize("doc", [
    "name: !!python/object/apply:os.system ['touch {marker}']\n",
    "!!python/object/new:os.system ['touch {marker}']\n",
    "name: x\nbase: !!python/name:os.system\n",
    "a: &a [*a]\nname: x\n",
])
def test_python_tags_and_recursive_aliases_are_refused(doc, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    path = tmp_path / "tag.yaml"
    path.write_text(doc.format(marker=marker))
    code, err = _check(["validate", str(path)], capsys)
    assert code == 2
    assert not marker.exists()


# ------------------------------------------------------------------ paths and sizes


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/b", "..", ".hidden", "x" * 101, "a\x00b", "a\\b"])
def test_sweep_names_cannot_leave_the_output(name, tmp_path, capsys):
    doc = {**_valid(), "name": name}
    path = tmp_path / "esc.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    code, err = _check(["run", str(path), "--serial", "--no-mlflow"], capsys)
    assert code == 2 and "name" in err.split(": error: ", 1)[1].split(":")[0]
    assert not (tmp_path / "results").exists() and not (tmp_path.parent / "escape").exists()


def test_odd_policy_labels_stay_inside_their_partition(tmp_path, capsys):
    """A label is quoted into one directory name; everything lands under output/sweep=<name>/."""
    path = handa_sweep(tmp_path, "labels", replicates=1, grid={},
                       policies=[{"timeout_backoff": {"timeout_s": 0.5}}, "upstream_4_19"],
                       output=str(tmp_path / "results"))
    assert _check(["run", str(path), "--serial", "--no-mlflow"], capsys)[0] == 0
    files = [p for p in tmp_path.rglob("*.parquet")]
    root = (tmp_path / "results" / "sweep=labels").resolve()
    assert files and all(root in p.resolve().parents and p.parent.parent.resolve() == root for p in files)


def test_huge_grid_needs_yes_and_is_refused_quickly(tmp_path, capsys):
    grid = {"costs.alloc_loop_us": list(range(1, 1001)), "costs.exit_ms": [i / 100 for i in range(1, 1001)],
            "costs.oom_kill_us": list(range(1, 1001)), "reaper.busy_elsewhere_p": [i / 1000 for i in range(1000)]}
    path = handa_sweep(tmp_path, "huge", grid=grid, replicates=100)
    t0 = time.process_time()
    for cmd in (["validate", str(path)], ["run", str(path), "--no-mlflow"]):
        code, err = _check(cmd, capsys)
        assert code == 2 and "pass --yes" in err and str(10**12 * 2 * 100) in err
    assert time.process_time() - t0 < 20
    assert not (tmp_path / "results").exists()


def test_row_limit_is_configurable(tmp_path, capsys, monkeypatch):
    path = handa_sweep(tmp_path, "lim", replicates=3)  # 12 rows
    assert _check(["validate", str(path), "--max-rows", "11"], capsys)[0] == 2
    monkeypatch.setenv("OOMSWEEP_MAX_ROWS", "12")
    assert _check(["validate", str(path)], capsys)[0] == 0
    monkeypatch.setenv("OOMSWEEP_MAX_ROWS", "11")
    assert _check(["run", str(path), "--serial", "--no-mlflow"], capsys)[0] == 2
    assert _check(["validate", str(path), "--yes"], capsys)[0] == 0


@pytest.mark.parametrize("key", ["\x85", " ", "grid "])
def test_a_blank_or_space_edged_key_is_named_quoted(key, tmp_path, capsys):
    """YAML reads a NEL key back as a space: the message must still show which key it is."""
    doc = {"name": "gen", "base": str(HANDA), "policies": ["upstream_4_19"], key: None}
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    code, err = _check(["validate", str(path)], capsys)
    read_back = next(k for k in yaml.safe_load(path.read_text(encoding="utf-8")) if k not in doc or k == key)
    assert code == 2
    assert f"error: {read_back!r}: unknown key" in err
