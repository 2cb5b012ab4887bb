"""The batching executor on a real local Ray, through the same code path the sweeps use.

The row function here is trivial (module-level, shipped to workers by value):
what is under test is batching, streaming, error capture, retries and stopping.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from ray import cloudpickle  # Ray's vendored copy is the one that pickles task arguments

from sweeps.execution.batching import BatchSizer, SerialExecutor, execute_batch
from sweeps.execution.ray_executor import RayExecutor
from sweeps.errors import RowFailed

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(300)


def square(x: int) -> dict:
    if x == 13:
        raise ValueError("unlucky")
    time.sleep(0.001)
    return {"y": x * x}


class DieOnce:
    """Kills its worker process the first time it sees item 7 (a marker file remembers)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, x: int) -> dict:
        if x == 7 and not os.path.exists(self.marker):
            Path(self.marker).write_text("died")
            os._exit(1)
        return {"y": x}


def taker(items):
    it = iter(items)
    calls = []

    def take(n):
        calls.append(n)
        out = []
        for x in it:
            out.append(x)
            if len(out) >= n:
                break
        return out

    take.calls = calls
    return take


def test_execute_batch_captures_errors_with_the_row():
    res = execute_batch(square, [12, 13, 14], False, "node")
    assert [r["status"] for r in res] == ["ok", "error", "ok"]
    assert res[1]["error"] == "ValueError: unlucky [13]"
    assert res[0]["y"] == 144 and res[0]["worker_pid"] == os.getpid() and res[0]["node_id"] == "node"
    with pytest.raises(RowFailed, match="unlucky"):
        execute_batch(square, [13], True, "node")


def test_batch_sizer_grows_gradually_towards_the_target():
    s = BatchSizer(target_s=0.5, start=2, growth=4.0)
    s.observe([{"wall_s": 0.001}] * 2)  # 1 ms per row -> wants 500, limited by growth
    assert s.size == 9
    for _ in range(5):
        s.observe([{"wall_s": 0.001}] * s.size)
    assert s.size == 500
    s.observe([{"wall_s": 0.1}] * 10)  # rows got slower: shrink at once
    assert s.size < 500


def test_serial_executor_same_results_as_a_loop():
    got = {}
    for b in SerialExecutor().stream(square, taker(range(100))):
        for x, r in zip(b.items, b.results):
            assert x not in got
            got[x] = r
    assert sorted(got) == list(range(100))
    assert all(got[x]["y"] == x * x for x in got if x != 13)


def test_ray_executor_runs_every_item_exactly_once_in_batches(ray_session):
    take = taker(range(3000))
    got = {}
    sizes = []
    for b in ray_session.stream(square, take):
        sizes.append(len(b.items))
        for x, r in zip(b.items, b.results):
            assert x not in got
            got[x] = r
    assert sorted(got) == list(range(3000))
    assert got[13]["status"] == "error" and "unlucky [13]" in got[13]["error"]
    assert got[12] == {**got[12], "status": "ok", "error": "", "y": 144}
    assert all(r["worker_pid"] != os.getpid() for r in got.values())  # ran on workers, not the driver
    assert {r["node_id"] for r in got.values()} == {ray_session.node_id}
    assert sizes[0] <= 4 and max(sizes) >= 50  # slow start, then batches of ~0.5 s


def test_ray_executor_stops_submitting_when_asked(ray_session):
    take = taker(range(100_000))
    seen = 0
    stop = {"now": False}
    for b in ray_session.stream(square, take, should_stop=lambda: stop["now"]):
        seen += len(b.items)
        stop["now"] = True
    taken = sum(take.calls)
    # nothing new is submitted, and the batches already running still deliver their rows (drained,
    # not cancelled), so every row taken comes back
    assert 0 < seen == taken < 5_000


def test_fail_fast_raises_in_the_driver(ray_session):
    ex = RayExecutor(workers=2, fail_fast=True).start()
    with pytest.raises(RowFailed, match="unlucky"):
        for _ in ex.stream(square, taker(range(50))):
            pass
    ex.close()  # reused session Ray: close leaves it running
    import ray

    assert ray.is_initialized()


def test_a_dead_worker_is_retried_by_ray(ray_session, tmp_path):
    fn = DieOnce(str(tmp_path / "died"))
    got = {}
    for b in ray_session.stream(fn, taker(range(20))):
        for x, r in zip(b.items, b.results):
            got[x] = r
    assert (tmp_path / "died").exists()  # the worker did die once
    assert sorted(got) == list(range(20))
    assert all(r["status"] == "ok" for r in got.values())


@pytest.mark.slow
def test_embedded_ray_uses_token_auth_without_touching_home(tmp_path):
    """Ray 2.60 writes ~/.ray/auth_token for a new local cluster; ours keeps the token in its env."""
    import subprocess

    code = (
        "import os, ray\n"
        "from sweeps.execution.ray_executor import RayExecutor\n"
        "ex = RayExecutor(workers=1).start()\n"
        "print(os.environ['RAY_AUTH_MODE'], len(os.environ['RAY_AUTH_TOKEN']))\n"
        "print(ray.get(ray.remote(lambda: 41 + 1).remote()))\n"
        "ex.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["token", "64", "42"]
    assert not (tmp_path / ".ray").exists()
