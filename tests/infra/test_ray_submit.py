"""`ray up` / `ray submit` / `ray down` with infra/ray/cluster-local.yaml through a real sshd on 127.0.0.1.

What Ray does here is the real thing: it rsyncs the project to ~/oomsweep (the YAML's file_mounts),
runs the setup and head start commands over SSH, copies only sweeps/submit.py to ~/submit.py and
runs `python ~/submit.py SWEEP` in a login shell; submit.py runs `python -m sweeps run SWEEP
--address auto` against the cluster.  The test adapts the YAML to its private sshd (user, key,
proxy to the port), to free Ray ports, and replaces the venv install (a full `pip install` of Ray
and MLflow would take minutes) with PYTHONPATH=~/oomsweep, so the synced copy is what runs.
Never `ray submit --stop` with provider local: it would shut this machine down.
"""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
import yaml

from infra_harness import ROOT, VENV_BIN, Sshd, free_ports, kill_marked, marked_pids, run, sshd_usable

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(sshd_usable()), reason=sshd_usable() or "ok"),
]


@pytest.fixture
def sshd(tmp_path_factory, infra_env, marker):
    import tempfile
    from pathlib import Path

    base = Path(tempfile.mkdtemp(prefix="oomsw-ssh-", dir="/tmp"))  # short: Ray's unix sockets live below
    server = Sshd(base, infra_env).start()
    try:
        yield server
    finally:
        server.stop()
        kill_marked(marker)
        import getpass
        import hashlib
        import shutil

        shutil.rmtree(base, ignore_errors=True)
        # Ray's ssh ControlPath dir for this cluster name: /tmp/ray_ssh_<user hash>/<cluster hash> (command_runner.py).
        user = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
        cluster = hashlib.sha256(f"oomsweep-ci-{marker}".encode()).hexdigest()[:10]
        shutil.rmtree(f"/tmp/ray_ssh_{user}/{cluster}", ignore_errors=True)
        try:
            os.rmdir(f"/tmp/ray_ssh_{user}")  # only if empty: other clusters may use it
        except OSError:
            pass


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _test_config(sshd: Sshd, marker: str, tmpdir: str) -> tuple[dict, int]:
    cfg = yaml.safe_load((ROOT / "infra" / "ray" / "cluster-local.yaml").read_text())
    gcs, dash, client, agent, grpc, metrics, rtenv = free_ports(7)
    cfg["cluster_name"] = f"oomsweep-ci-{marker}"
    cfg["auth"] = {"ssh_user": "root", "ssh_private_key": str(sshd.key), "ssh_proxy_command": str(sshd.proxy)}
    assert cfg["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    assert cfg["file_mounts"] == {"~/oomsweep": "."}
    cfg["setup_commands"] = ['python -c "import sweeps; print(\'sweeps from\', sweeps.__file__)"']
    cfg["head_start_ray_commands"] = [
        "ray start --head --node-ip-address=127.0.0.1 --num-cpus=2 --disable-usage-stats "
        f"--port={gcs} --dashboard-host=127.0.0.1 --dashboard-port={dash} --ray-client-server-port={client} "
        f"--dashboard-agent-listen-port={agent} --dashboard-agent-grpc-port={grpc} "
        f"--metrics-export-port={metrics} --runtime-env-agent-port={rtenv} "
        "--autoscaling-config=~/ray_bootstrap_config.yaml"
    ]
    return cfg, gcs


def test_ray_up_submit_down_through_sshd(sshd, infra_env, marker, tmp_path):
    t0 = time.monotonic()
    # The node's Ray temp dir (and with it the file `--address auto` reads) is private to this test.
    ray_tmp = str(sshd.base / "r")
    sshd.login_env(marker, [f"export RAY_TMPDIR={ray_tmp}", 'export PYTHONPATH="$HOME/oomsweep"'])
    assert sshd.ssh("echo $HOME").stdout.strip() == str(sshd.home)

    cfg, gcs = _test_config(sshd, marker, ray_tmp)
    cluster_yaml = tmp_path / "cluster.yaml"
    cluster_yaml.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # Launcher-side state (cluster-<name>.state, the config cache) is private too.
    (sshd.base / "t").mkdir()
    env = dict(infra_env, RAY_TMPDIR=ray_tmp, TMPDIR=str(sshd.base / "t"))
    ray = str(VENV_BIN / "ray")

    up = run([ray, "up", "-y", "--disable-usage-stats", "--no-config-cache", str(cluster_yaml)], env, timeout=300, cwd=ROOT)
    t_up = time.monotonic()
    assert f"sweeps from {sshd.home}/oomsweep/sweeps/__init__.py" in up.stdout + up.stderr
    assert (sshd.home / "oomsweep" / "configs" / "scenarios" / "handa-2018-11-14.yaml").exists()
    assert not (sshd.home / "oomsweep" / ".venv").exists()  # rsync_exclude honoured
    try:
        sub = run([ray, "submit", str(cluster_yaml), "sweeps/submit.py", "--", "tests/infra/data/tiny.yaml"],
                  env, timeout=300, cwd=ROOT)
        t_submit = time.monotonic()
        log = sub.stdout + sub.stderr
        assert "--address auto" in log  # what submit.py ran
        assert (sshd.home / "submit.py").read_bytes() == (ROOT / "sweeps" / "submit.py").read_bytes()

        # Results land relative to the job's cwd ($HOME on the head): Parquet rows and an MLflow store.
        df = pd.read_parquet(sshd.home / "results" / "sweep=infra-tiny")
        assert len(df) == 16 and (df["status"] == "ok").all()
        node = run([ray, "exec", str(cluster_yaml),
                    "python -c \"import ray,logging; ray.init(address='auto', logging_level=logging.ERROR); "
                    "print('NODE', ray.nodes()[0]['NodeID'], ray.nodes()[0]['NodeManagerAddress'])\""],
                   env, timeout=120, cwd=ROOT)
        node_line = [ln for ln in (node.stdout + node.stderr).splitlines() if ln.startswith("NODE ")][-1]
        assert set(df["node_id"]) == {node_line.split()[1]}  # computed on the cluster `ray up` started

        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{sshd.home / 'mlflow.db'}")
        exp = client.get_experiment_by_name("infra-tiny")
        assert exp is not None
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
        assert len(parents) == 1 and len(children) >= 2
    finally:
        down = run([ray, "down", "-y", str(cluster_yaml)], env, timeout=120, cwd=ROOT, check=False)
    t_down = time.monotonic()
    assert down.returncode == 0, down.stdout + down.stderr
    # The raylet and the GCS must be gone soon after `ray down`; their agents (DashboardAgent,
    # RuntimeEnvAgent) notice the dead raylet by polling and exit on their own, later under load.
    for grace_s, core_only in ((15, True), (60, False)):
        deadline = time.monotonic() + grace_s
        while (leftover := [c.strip() for c in map(_cmdline, marked_pids(marker))
                            if "ray" in c and "ssh" not in c and (not core_only or "Agent" not in c)]):
            assert time.monotonic() < deadline, f"`ray down` left Ray processes running: {leftover}\n{down.stdout[-3000:]}"
            time.sleep(0.5)
    print(f"\nray submit path: up {t_up - t0:.1f}s, submit {t_submit - t_up:.1f}s, down {t_down - t_submit:.1f}s")
