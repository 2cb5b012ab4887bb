"""Helpers for the infra tests: Ray clusters on 127.0.0.1 that never touch anybody else's Ray.

The machine may run other Ray clusters (other test sessions, a developer's `ray start`), so:
- every process we start carries OOMSWEEP_INFRA_TEST=<marker> in its environment, and we stop a
  cluster by finding exactly those processes (our own, by pid), never with `ray stop` (which kills
  every Ray process of the user on the machine);
- every port is a free one picked here, every cluster gets its own short --temp-dir, and drivers get
  an explicit address (with RAY_ADDRESS set, `--address auto` resolves to it, not to a stranger);
- RAY_AUTH_MODE is set explicitly (ecosystem.md §0.7), usage stats are off.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TINY = ROOT / "tests" / "infra" / "data" / "tiny.yaml"
MARKER_VAR = "OOMSWEEP_INFRA_TEST"
NODE_MARKER_VAR = "OOMSWEEP_INFRA_NODE"  # only on the "remote" side of the sshd test (what `ray stop` may end)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def marked_pids(marker: str) -> list[int]:
    """Pids of the processes whose environment holds MARKER_VAR=marker (ours, and only ours)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def kill_marked(marker: str, grace_s: float = 3.0, kill_wait_s: float = 15.0) -> int:
    """SIGTERM, then SIGKILL after grace_s, the processes carrying our marker; returns how many.

    SIGKILL is repeated until none is left (or kill_wait_s passes): a Ray daemon that is still
    alive between the two rounds may fork one more worker, and a killed process is not gone from
    /proc the instant kill() returns.
    """
    pids = marked_pids(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and marked_pids(marker):
        time.sleep(0.2)
    deadline = time.monotonic() + kill_wait_s
    while (left := marked_pids(marker)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return len(pids)


def base_env(marker: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN", "PYTHONPATH"):
        env.pop(k, None)
    env.update(
        {
            MARKER_VAR: marker,
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run(cmd: list[str], env: dict[str, str], timeout: float, cwd: Path | str | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, capture its output, and show it in the failure message."""
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} -> exit {p.returncode}\n--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}"
        )
    return p


class LocalRay:
    """A head (and optional workers) started with `ray start` on 127.0.0.1 with free ports."""

    def __init__(self, env: dict[str, str], marker: str) -> None:
        self.env = env
        self.marker = marker
        self.temp_dir = tempfile.mkdtemp(prefix="oomsw-i-", dir="/tmp")  # short: unix socket paths
        self.gcs_port = 0
        self.dashboard_port = 0

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_ports(self) -> list[str]:
        agent, grpc, metrics, rtenv, nm, om = free_ports(6)
        return [
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={rtenv}",
            f"--node-manager-port={nm}", f"--object-manager-port={om}",
        ]

    def start_head(self, num_cpus: int = 2, dashboard: bool = True) -> "LocalRay":
        self.gcs_port, self.dashboard_port, client = free_ports(3)
        cmd = [
            str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
            f"--port={self.gcs_port}", f"--ray-client-server-port={client}",
            f"--num-cpus={num_cpus}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
            *self._node_ports(),
        ]
        if dashboard:
            cmd += ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        else:
            cmd += ["--include-dashboard=false"]
        run(cmd, self.env, timeout=120)
        return self

    def add_worker(self, num_cpus: int = 1) -> None:
        cmd = [
            str(VENV_BIN / "ray"), "start", f"--address={self.gcs_address}", "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}", "--disable-usage-stats", *self._node_ports(),
        ]
        run(cmd, self.env, timeout=120)

    def alive_nodes(self) -> int:
        code = (
            "import ray, logging; ray.init(address=%r, logging_level=logging.ERROR, log_to_driver=False); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))" % self.gcs_address
        )
        p = run([sys.executable, "-c", code], self.env, timeout=60)
        return int(p.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        kill_marked(self.marker)
        shutil.rmtree(self.temp_dir, ignore_errors=True)




# ---------------------------------------------------------------------------------------------
# sshd on 127.0.0.1 for `ray up` / `ray submit` / `ray down` with the local provider

SSHD = Path("/usr/sbin/sshd")

_PROXY = """#!{python}
# ssh ProxyCommand: relay stdin/stdout to the test's sshd on 127.0.0.1:{port}
# (the cluster YAML has no ssh_port key, and ~/.ssh/config of the real user is not ours to edit).
import os, socket, sys, threading
s = socket.create_connection(("127.0.0.1", {port}))
def upstream():
    while True:
        data = os.read(0, 65536)
        if not data:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        s.sendall(data)
threading.Thread(target=upstream, daemon=True).start()
out = sys.stdout.buffer
while True:
    data = s.recv(65536)
    if not data:
        break
    out.write(data)
    out.flush()
"""

_RAY_SHIM = """#!{python}
# `ray` on the test node's PATH: `ray stop` would kill every Ray process on this machine (other
# people's clusters too), so here it stops only the processes this test's logins started (marked
# environment; the launcher side, e.g. `ray down` itself, carries another marker),
# except this command and its parents.  Everything else goes to the real `ray`.
import os, signal, sys, time
if sys.argv[1:2] != ["stop"]:
    os.execv({ray!r}, [{ray!r}, *sys.argv[1:]])
for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, signal.SIG_IGN)  # finish the job even if the ssh session goes away meanwhile
needle = ("{var}=" + os.environ["{var}"]).encode()
skip, pid = set(), os.getpid()
while pid > 1:
    skip.add(pid)
    with open(f"/proc/{{pid}}/stat") as f:
        pid = int(f.read().rsplit(")", 1)[1].split()[1])
def marked():
    found = []
    for e in os.listdir("/proc"):
        if e.isdigit() and int(e) not in skip:
            try:
                with open(f"/proc/{{e}}/environ", "rb") as f:
                    if needle in f.read().split(b"\\0"):
                        found.append(int(e))
            except OSError:
                pass
    return found
pids = marked()
for p in pids:
    try: os.kill(p, signal.SIGTERM)
    except ProcessLookupError: pass
deadline = time.time() + 5
while marked() and time.time() < deadline:
    time.sleep(0.2)
for p in marked():
    try: os.kill(p, signal.SIGKILL)
    except ProcessLookupError: pass
deadline = time.time() + 5
while marked() and time.time() < deadline:
    time.sleep(0.2)
print(f"stopped {{len(pids)}} Ray processes of this test")
"""


def sshd_usable() -> str:
    """'' if this machine can run the sshd test, else why not."""
    if not SSHD.exists():
        return "no /usr/sbin/sshd (run infra/ci-setup.sh)"
    if shutil.which("rsync") is None or shutil.which("ssh") is None:
        return "no rsync/ssh (run infra/ci-setup.sh)"
    if os.geteuid() != 0:
        return "sshd test logs in as root to 127.0.0.1 (needs root for /run/sshd)"
    return ""


class Sshd:
    """A private sshd on 127.0.0.1:<free port>: key auth, its own host key, and a private HOME.

    `SetEnv HOME=...` gives the login a home directory in the test's temp dir, so `ray up` and
    `ray submit` write ~/ray_bootstrap_config.yaml, ~/submit.py, ~/results, ~/mlflow.db there and
    never in root's real home.
    """

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.base = base
        self.env = env
        self.port = free_port()
        self.home = base / "home"
        self.key = base / "id_ed25519"
        self.proxy = base / "proxy"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sshd":
        b = self.base
        self.home.mkdir(parents=True, exist_ok=True)
        for name in ("host_ed25519", "id_ed25519"):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(b / name)], self.env, timeout=30)
        shutil.copy(b / "id_ed25519.pub", b / "authorized_keys")
        (b / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {b / 'host_ed25519'}\n"
            f"PidFile {b / 'sshd.pid'}\nAuthorizedKeysFile {b / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nMaxStartups 50\nMaxSessions 50\n"
            f"SetEnv HOME={self.home}\n"
        )
        self.proxy.write_text(_PROXY.format(python=sys.executable, port=self.port))
        self.proxy.chmod(0o755)
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        env = {k: v for k, v in self.env.items() if k != MARKER_VAR}  # logins get the marker from .bashrc
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(b / "sshd_config")],
            env=env, stdout=open(b / "sshd.log", "wb"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"sshd did not start: {(b / 'sshd.log').read_text()}")
                time.sleep(0.1)
        return self

    def login_env(self, marker: str, lines: list[str]) -> None:
        """The node's ~/.bashrc (what `ray submit` sources): PATH, Ray settings, cwd = HOME."""
        bin_dir = self.home / "bin"
        bin_dir.mkdir(exist_ok=True)
        shim = bin_dir / "ray"
        shim.write_text(_RAY_SHIM.format(python=sys.executable, ray=str(VENV_BIN / "ray"), var=NODE_MARKER_VAR))
        shim.chmod(0o755)
        rc = [
            f'export PATH="{bin_dir}:{VENV_BIN}:$PATH"',
            f"export {MARKER_VAR}={marker} {NODE_MARKER_VAR}={marker} RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0",
            "export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=true",
            *lines,
            'cd "$HOME"',
        ]
        (self.home / ".bashrc").write_text("\n".join(rc) + "\n")

    def ssh(self, command: str) -> subprocess.CompletedProcess:
        return run(["ssh", "-i", str(self.key), "-o", f"ProxyCommand={self.proxy}", "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "root@127.0.0.1", command],
                   self.env, timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
