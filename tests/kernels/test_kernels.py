"""infra/kernels and sweeps/calibrate/kernels.py without a boot: definitions, refusals, the patch series, the parser.

The boot of the patched kernel is tests/kernels/test_kernel_boot.py.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest

from oommodel import Scenario
from sweeps.calibrate import kernels as K
from sweeps.errors import CalibrationRefused

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "kernels"
HANDA = ROOT / "configs" / "scenarios" / "handa-2018-11-14.yaml"

# Message-ids of shared/reference/kernel-oom.md section 0 that the series ports.
PORTED = {
    "0003": "20181025082403.3806-2-mhocko@kernel.org",
    "0004": "20181025082403.3806-3-mhocko@kernel.org",
    "0005": "20181025082403.3806-4-mhocko@kernel.org",
    "0006": "9dfd5c87-ae48-8ffb-fbc6-706d627658ff@i-love.sakura.ne.jp",
    "0007": "2d7d4cf6-bdd4-741d-764b-beb96d7af296@i-love.sakura.ne.jp",
    "0008": "alpine.DEB.2.21.1806211434420.51095@chino.kir.corp.google.com",
    "0009": "1530627910-3415-4-git-send-email-penguin-kernel@I-love.SAKURA.ne.jp",
}
# Patch 0009 ports two policies from several of Handa's mails; each must be cited in the code.
HANDA_2018 = (
    "1530627910-3415-3-git-send-email-penguin-kernel@I-love.SAKURA.ne.jp",
    "1530627910-3415-4-git-send-email-penguin-kernel@I-love.SAKURA.ne.jp",
    "1536382452-3443-1-git-send-email-penguin-kernel@I-love.SAKURA.ne.jp",
    "d9595c92-6763-35cb-b989-0848cf626cb9@i-love.sakura.ne.jp",
)


def spec(**kw) -> K.KernelSpec:
    base = dict(name="5.10-oomsweep", image=Path("/nonexistent/bzImage"), release="5.10.223-oomsweep-x", hz=1000,
                preempt="full", preempt_dynamic=False,
                policies=("upstream_5_10", "upstream_4_19", "handoff_rfc_v2", "handoff_oom_lock"),
                instruments=("sched_at_handover", "handed_over_printk"), patch_hash="abc", build_hash="def",
                sched_features="/sys/kernel/debug/sched_features")
    base.update(kw)
    return K.KernelSpec(**base)


def test_definition_lists_the_ported_policies():
    assert K.policies_of("5.10-oomsweep") == ("upstream_5_10", "upstream_4_19", "handoff_rfc_v2", "handoff_oom_lock",
                                              "timeout_backoff", "stall_backoff", "direct_reap")
    with pytest.raises(K.KernelError, match="unknown kernel '4.19'"):
        K.policies_of("4.19")


def test_every_policy_of_the_definition_is_in_the_kernels_policy_table():
    """The series' name table and the definition agree (a policy the kernel lacks must not be offered)."""
    text = "".join(p.read_text() for p in sorted((INFRA / "patches" / "5.10").glob("*.patch")))
    table = set(re.findall(r'^\+\t\[OOMSWEEP_\w+\] = "(\w+)",$', text, re.M))
    assert table == set(K.policies_of("5.10-oomsweep"))
    assert {"stall_backoff", "direct_reap"} <= table


def test_every_kernel_policy_has_a_model_policy_of_the_same_name():
    """So `calibrate --kernel 5.10-oomsweep --kernel-policy P` can put the model's P beside the boots."""
    from oommodel import POLICIES

    assert set(K.policies_of("5.10-oomsweep")) <= set(POLICIES)


def test_series_lists_every_patch_and_each_port_cites_its_message_id():
    d = INFRA / "patches" / "5.10"
    series = [ln for ln in (d / "series").read_text().split() if ln]
    assert series == sorted(p.name for p in d.glob("*.patch"))
    for prefix, mid in PORTED.items():
        patch = next(d / s for s in series if s.startswith(prefix))
        added = "\n".join(ln for ln in patch.read_text().splitlines() if ln.startswith("+"))
        assert mid in added, f"{patch.name} does not cite {mid}"
    handa = next(d / s for s in series if s.startswith("0009"))
    added = "\n".join(ln for ln in handa.read_text().splitlines() if ln.startswith("+"))
    for mid in HANDA_2018:
        assert mid in added, f"{handa.name} does not cite {mid}"


def test_check_refuses_what_the_kernel_lacks():
    s = spec()
    assert s.check(None) == "upstream_5_10"  # the kernel's default
    assert s.check("handoff_rfc_v2", "idle", "close") == "handoff_rfc_v2"
    with pytest.raises(K.KernelError, match="no policy 'direct_reap'.*the build is older, run infra/kernels/build.sh"):
        s.check("direct_reap")  # a build from before the definition listed it
    with pytest.raises(K.KernelError, match=r"no policy 'direct_reaper' \(it has: [a-z0-9_, ]+\)$"):
        s.check("direct_reaper")  # a name no definition has: no rebuild hint
    with pytest.raises(K.KernelError, match="applies to handoff_rfc_v2 only"):
        s.check("upstream_4_19", "unchanged", "close")
    with pytest.raises(K.KernelError, match="no oomsweep.sched_at_handover= hack"):
        spec(instruments=()).check("upstream_4_19", "idle")


def test_boot_plan_lifts_the_hack_refusal_and_selects_the_policy():
    sc = Scenario.from_yaml(HANDA).to_dict()
    assert sc["victim"]["sched_at_handover"] == "idle"
    assert K.boot_plan(sc, spec(), "handoff_rfc_v2")[2] == "handoff_rfc_v2"  # the file says ksoftirqd_defer
    inline = {**sc, "machine": {**sc["machine"], "softirq": "inline"}}
    with pytest.raises(CalibrationRefused, match="machine.softirq"):
        K.boot_plan(inline, spec(), "handoff_rfc_v2")
    plan, cmdline, policy, sched = K.boot_plan(inline, spec(), "handoff_rfc_v2", skip_after="close", match=True)
    assert (policy, sched) == ("handoff_rfc_v2", "idle")
    assert "oomsweep.policy=handoff_rfc_v2 oomsweep.skip_after=close oomsweep.sched_at_handover=idle" in cmdline
    paths = [p for p, _ in plan.sysctls]
    assert "/sys/kernel/debug/sched_features" in paths and "/sys/kernel/debug/sched/features" not in paths
    assert ("/sys/kernel/debug/sched_features", "RT_RUNTIME_SHARE") in plan.sysctls
    assert plan.cpus == 8 and len(plan.children) == 64


def test_boot_plan_refuses_a_preemption_model_the_build_does_not_have():
    sc = Scenario.from_yaml(HANDA).to_dict()
    sc["machine"]["preempt"] = "voluntary"
    sc["machine"]["softirq"] = "ksoftirqd_defer"
    with pytest.raises(CalibrationRefused, match="machine.preempt"):
        K.boot_plan(sc, spec(), "upstream_4_19")
    sc["machine"]["preempt"] = "full"
    sc["machine"]["hz"] = 250
    with pytest.raises(CalibrationRefused, match="machine.hz"):
        K.boot_plan(sc, spec(), "upstream_4_19")


def test_load_names_the_build_command_when_not_built(tmp_path, monkeypatch):
    monkeypatch.setenv("OOMSWEEP_KERNELS_CACHE", str(tmp_path))
    with pytest.raises(K.KernelError, match=r"not built: run infra/kernels/build.sh 5.10-oomsweep"):
        K.load("5.10-oomsweep")
    (tmp_path / "5.10-oomsweep").mkdir()
    (tmp_path / "5.10-oomsweep" / "manifest.json").write_text(json.dumps({
        "name": "5.10-oomsweep", "image": "/x/bzImage", "kernel_release": "5.10.223-oomsweep-1", "hz": 1000,
        "preempt": "full", "policies": ["upstream_5_10", "handoff_rfc_v2"], "patch_hash": "p"}))
    s = K.load("5.10-oomsweep")
    assert s.hz == 1000 and s.preempt == "full" and s.policies == ("upstream_5_10", "handoff_rfc_v2")


CONSOLE = """\
[    0.101000] oomsweep: policy=handoff_rfc_v2 skip_after=pgtables sched_at_handover=idle
@@oomsweep-dmesg-begin
[    0.101000] oomsweep: policy=handoff_rfc_v2 skip_after=pgtables sched_at_handover=idle
[   10.000000] Memory cgroup out of memory: Killed process 101 (oomrepro) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:1000
[   10.020000] oomsweep: MMF_OOM_SKIP pid=101 by=reaper
[   11.000000] Memory cgroup out of memory: Killed process 102 (oomrepro) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:1000
[   11.004000] oomsweep: handover point pid=102
[   11.110000] oom_reaper: handed over pid:102 (oomrepro) to exit path
[   11.110000] Handed over 102 to exit path.
@@oomsweep-dmesg-end
"""


def test_instruments_are_counted_once_from_dmesg():
    ins = K.parse_instruments(CONSOLE)
    assert ins.policy == "handoff_rfc_v2" and ins.sched_at_handover == "idle"
    assert ins.handed_over == ((11.11, 102),) and ins.handovers == 1
    assert ins.skip_by == {101: (10.02, "reaper")}
    assert ins.handover_points == {102: 11.004}
    cols = K.kernel_columns(CONSOLE, spec(), "handoff_rfc_v2", "idle", "pgtables")
    assert cols["handovers"] == 1 and cols["handed_over"] is True
    assert cols["kill_to_handover_s"] == "0.110"
    assert cols["skip_by_first"] == "reaper" and cols["skip_by_reaper"] == 1 and cols["skip_by_exit"] == 0
    assert cols["instrument_errors"] == ""


def test_the_console_excerpt_keeps_handas_give_up_line():
    import sys

    sys.path.insert(0, str(ROOT / "infra" / "qemu"))
    from excerpt_log import excerpt

    line = "[   15.000000] Gave up waiting for process 102 (oomrepro) total-vm:1kB, anon-rss:0kB"
    assert excerpt(f"[    1.0] random boot noise\n{line}\n") == line + "\n"


def test_direct_reaps_and_stall_back_offs_are_counted_by_who_set_the_flag():
    later = ("[   14.900000] oomsweep: direct reap pid=101 by pid=110 (oomrepro), now anon-rss:0kB\n"
             "[   15.000000] Gave up waiting for process 102 (oomrepro) total-vm:1kB, anon-rss:0kB, file-rss:0kB, "
             "shmem-rss:0kB\n"
             "[   15.000000] oomsweep: MMF_OOM_SKIP pid=102 by=timeout\n")
    console = CONSOLE.replace("policy=handoff_rfc_v2", "policy=direct_reap").replace(
        "MMF_OOM_SKIP pid=101 by=reaper", "MMF_OOM_SKIP pid=101 by=direct").replace(
        "@@oomsweep-dmesg-end", later + "@@oomsweep-dmesg-end")
    cols = K.kernel_columns(console, spec(policies=("direct_reap",)), "direct_reap", "idle", "pgtables")
    assert cols["skip_by_first"] == "direct" and cols["skip_by_direct"] == 1 and cols["skip_by_reaper"] == 0
    assert cols["stall_give_ups"] == 1 and cols["direct_reaps"] == 1 and cols["skip_by_timeout"] == 1
    assert cols["kill_to_give_up_s"] == "4.000"  # pid 102 was killed at 11.0
    assert cols["instrument_errors"] == ""


def test_a_kernel_that_ran_another_policy_is_an_error():
    cols = K.kernel_columns(CONSOLE, spec(), "upstream_4_19", "idle", "pgtables")
    assert "ran policy=handoff_rfc_v2" in cols["instrument_errors"]
    bad = CONSOLE.replace("[    0.101000] oomsweep: policy", "[    0.1] oomsweep: unknown parameter value 'x'\n"
                          "[    0.101000] oomsweep: policy")
    assert "did not know x" in K.kernel_columns(bad, spec(), "handoff_rfc_v2", "idle", "pgtables")["instrument_errors"]
    none = "\n".join(ln for ln in CONSOLE.splitlines() if "policy=" not in ln)
    assert "not an oomsweep kernel" in K.kernel_columns(none, spec(), "handoff_rfc_v2", "idle",
                                                         "pgtables")["instrument_errors"]


def _fake_def(tmp_path: Path, patch_text: str) -> tuple[Path, dict]:
    """A definition whose source is already in a fake cache (no download) and whose patch is `patch_text`."""
    cache = tmp_path / "cache"
    src = cache / "src" / "linux-source-9.9_9.9-1"
    (src / "linux-source-9.9" / "mm").mkdir(parents=True)
    (src / "linux-source-9.9" / "mm" / "oom_kill.c").write_text("int a;\n")
    (src / ".complete").write_text("")
    pdir = tmp_path / "patches"
    pdir.mkdir()
    (pdir / "0001-x.patch").write_text(patch_text)
    (pdir / "series").write_text("0001-x.patch\n")
    frag = tmp_path / "frag"
    frag.write_text("CONFIG_SMP=y\n")
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "fake.env").write_text(f"NAME=fake\nSUITE=nowhere\nSRC_PKG=linux-source-9.9\nSRC_VERSION=9.9-1\n"
                                   f"FRAGMENTS={frag}\nPATCHES={pdir}\nPOLICIES=upstream_5_10\n")
    env = {"OOMSWEEP_KERNELS_CACHE": str(cache), "OOMSWEEP_KERNELS_DEFS": str(defs), "PATH": "/usr/bin:/bin"}
    return cache, env


def test_build_names_the_failing_step_and_its_log(tmp_path):
    bad = ("--- a/mm/oom_kill.c\n+++ b/mm/oom_kill.c\n@@ -1 +1 @@\n-int b;\n+int c;\n")
    cache, env = _fake_def(tmp_path, bad)
    res = subprocess.run([str(INFRA / "build.sh"), "fake"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    m = re.search(r"kernels: fake: step patch failed; log: (\S+)", res.stderr)
    assert m, res.stderr
    log = Path(m.group(1))
    assert log.is_file() and "FAILED" in log.read_text()
    # the shared pristine tree was not touched
    assert (cache / "src" / "linux-source-9.9_9.9-1" / "linux-source-9.9" / "mm" / "oom_kill.c").read_text() == "int a;\n"


def test_build_refuses_an_unknown_kernel(tmp_path):
    _, env = _fake_def(tmp_path, "")
    res = subprocess.run([str(INFRA / "build.sh"), "nope"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "unknown kernel 'nope' (have: fake" in res.stderr


def test_reference_table_counts_ok_boots_with_wilson_intervals(tmp_path):
    cols = ["scenario", "kernel_policy", "sched_at_handover", "skip_after", "accelerator", "status", "lockup",
            "kills", "handovers", "skip_by_exit", "skip_by_reaper", "skip_by_timeout", "kill_to_handover_s"]
    rows = [
        ["h.yaml", "handoff_rfc_v2", "idle", "pgtables", "tcg", "ok", "True", "3", "1", "0", "2", "0", "0.110"],
        ["h.yaml", "handoff_rfc_v2", "idle", "pgtables", "tcg", "ok", "False", "5", "0", "1", "4", "0", ""],
        ["h.yaml", "handoff_rfc_v2", "idle", "pgtables", "tcg", "timeout", "", "", "0", "0", "0", "0", ""],
        ["h.yaml", "upstream_4_19", "idle", "pgtables", "tcg", "ok", "False", "4", "0", "4", "0", "0", ""],
    ]
    path = tmp_path / "runs.csv"
    path.write_text("\n".join(",".join(r) for r in [cols] + rows) + "\n")
    table = K.summarize(path)
    lines = [ln for ln in table.splitlines() if "handoff_rfc_v2" in ln]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    # 2 ok boots, 1 not ok, 1 lockup: Wilson 95 % of 1/2 is [0.09, 0.91]
    assert cells[5] == "?"  # no QEMU command recorded
    assert cells[6:9] == ["2", "1", "1"] and cells[9] == "0.50 [0.09, 0.91]"
    assert cells[10:13] == ["8", "1", "0.125"] and cells[13] == "exit 1, reaper 6"
    assert cells[14] == "0.110 / 0.110 s"
    assert "0.00 [0.00, 0.79]" in table  # upstream_4_19: 0 of 1


@pytest.mark.parametrize("command, topology", [
    ("qemu-system-x86_64 -accel tcg -smp 8 -m 2048", "shared_llc"),
    ("qemu-system-x86_64 -smp 8,sockets=1,cores=8,threads=1 -m 2048", "shared_llc"),
    ("qemu-system-x86_64 -smp 8,sockets=8,cores=1,threads=1 -m 2048", "core_per_socket"),
    ("qemu-system-x86_64 -smp 8,sockets=2,cores=4,threads=1", "-smp 8,sockets=2,cores=4,threads=1"),
    ("", "?"),
])
def test_boot_topology_reads_the_smp_option(command, topology):
    assert K.boot_topology(command) == topology


def test_reference_table_never_pools_boots_of_different_topologies(tmp_path):
    cols = ["scenario", "kernel_policy", "sched_at_handover", "skip_after", "accelerator", "status", "lockup",
            "kills", "handovers", "skip_by_exit", "skip_by_reaper", "kill_to_handover_s", "command"]
    key = ["h.yaml", "handoff_rfc_v2", "idle", "pgtables", "tcg", "ok"]
    rows = [key + ["True", "3", "1", "0", "2", "0.1", "q -smp 8"],
            key + ["False", "3", "0", "0", "3", "", "q -smp 8,sockets=8,cores=1,threads=1"]]
    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([cols] + rows)
    lines = [ln for ln in K.summarize(path).splitlines() if "h.yaml" in ln]
    assert sorted(c.strip() for ln in lines for c in [ln.strip("|").split("|")[5]]) == ["core_per_socket", "shared_llc"]


REAL = ROOT / "calibration" / "reference" / "kernel-5.10" / "logs" / \
    "handa-2018-11-14-handoff_rfc_v2-idle-pgtables-20261202T122033-run0.log"


def test_a_real_boot_of_handoff_rfc_v2_with_the_hack():
    """The first reference boot: six victims reaped, the seventh (856 kB, the running FIFO child) handed
    over 1 ms after its kill, then made SCHED_IDLE and starved until the watchdog freed CPU 0."""
    from sweeps.calibrate.kernel_log import parse_run

    console = REAL.read_text()
    ins = K.parse_instruments(console)
    assert ins.policy == "handoff_rfc_v2" and ins.sched_at_handover == "idle" and not ins.unknown
    assert [p for _, p in ins.handed_over] == [96]
    assert {p: by for p, (_, by) in ins.skip_by.items()} == {101: "reaper", 98: "reaper", 102: "reaper",
                                                            97: "reaper", 100: "reaper", 95: "reaper", 96: "exit"}
    cols = K.kernel_columns(console, spec(), "handoff_rfc_v2", "idle", "pgtables")
    assert cols["kill_to_handover_s"] == "0.001" and cols["instrument_errors"] == ""
    assert (cols["skip_by_reaper"], cols["skip_by_exit"]) == (6, 1)
    assert (cols["kills_before_stall"], cols["handovers_before_stall"]) == (7, 1)
    run = parse_run(console, ("children",))
    assert run.outcome["lockup"] and run.outcome["kills"] == 7 and run.end_reason == "stall"


def test_a_row_with_a_new_column_widens_the_runs_csv_and_keeps_the_older_rows(tmp_path):
    path = tmp_path / "runs.csv"
    K._append_row(path, {"scenario": "h.yaml", "lockup": "True"})
    K._append_row(path, {"scenario": "h.yaml", "lockup": "False", "host_share": 0.48})
    K._append_row(path, {"scenario": "h.yaml", "lockup": "True", "host_share": 0.97})
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["host_share"] for r in rows] == ["", "0.48", "0.97"]
    assert [r["lockup"] for r in rows] == ["True", "False", "True"]


def test_host_share_is_qemus_cpu_time_over_the_hosts():
    from sweeps.calibrate.qemu import Boot

    b = Boot("", "tcg", wall_s=10.0, timed_out=False, returncode=0, command=(), qemu_cpu_s=10.0, host_cpus=2)
    assert b.host_share == 0.5
    assert Boot("", "tcg", 10.0, False, 0, ()).host_share is None


def test_reference_table_keeps_boots_beside_host_hogs_apart_and_shows_the_host_share(tmp_path):
    cols = ["scenario", "kernel_policy", "sched_at_handover", "skip_after", "accelerator", "status", "lockup",
            "kills", "handovers", "skip_by_exit", "skip_by_reaper", "kill_to_handover_s", "command",
            "host_hogs", "host_share"]
    key = ["h.yaml", "handoff_rfc_v2", "idle", "pgtables", "tcg", "ok"]
    rows = [key + ["True", "3", "1", "0", "2", "0.1", "q -smp 8", "0", "0.70"],
            key + ["False", "64", "0", "0", "64", "", "q -smp 8", "0", "0.66"],
            key + ["True", "5", "1", "0", "4", "0.2", "q -smp 8", "2", "0.41"]]
    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([cols] + rows)
    table = K.summarize(path)
    head = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    lines = {c[head.index("host hogs")]: c for ln in table.splitlines() if "h.yaml" in ln
             for c in [[x.strip() for x in ln.strip("|").split("|")]]}
    assert set(lines) == {"0", "2"}
    assert lines["0"][head.index("boots")] == "2" and lines["2"][head.index("boots")] == "1"
    assert lines["0"][head.index("host share median (min-max)")] == "0.68 (0.66-0.70)"
    assert lines["2"][head.index("host share median (min-max)")] == "0.41 (0.41-0.41)"


def test_measure_refuses_a_negative_host_hogs_before_any_boot(tmp_path, capsys):
    code = K.main(["measure", "configs/scenarios/handa-2018-11-14.yaml", "--kernel", "no-such-kernel",
                   "--out", str(tmp_path), "--host-hogs", "-1"])
    assert code == 2 and "refused: --host-hogs: must be >= 0, got -1" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_cpu_hogs_run_for_the_block_and_are_gone_after_it():
    import os
    import time

    from sweeps.calibrate.host_load import cpu_hogs

    def children_cpu_s(pids):
        return sum(int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[11]) for p in pids)

    before = set(os.listdir("/proc"))
    with cpu_hogs(2):
        time.sleep(0.5)
        pids = [p for p in set(os.listdir("/proc")) - before if p.isdigit()
                and "while True" in open(f"/proc/{p}/cmdline").read().replace("\0", " ")]
        assert len(pids) == 2
        assert children_cpu_s(pids) > 0  # they spin (utime in clock ticks)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)
