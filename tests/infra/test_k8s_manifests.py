"""infra/k8s: valid YAML, KubeRay v1 field names, and a CronJob script that creates one RayJob per day.

Field names are those of KubeRay's Go types (ray-operator/apis/ray/v1/{raycluster,rayjob}_types.go,
v1.7.0; ecosystem.md §1.5).  No cluster here: the CronJob's shell script is run for real against a
fake `kubectl` that records what it is asked to do.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"

RAYCLUSTER_SPEC = {"rayVersion", "headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling", "autoscalerOptions",
                   "gcsFaultToleranceOptions", "suspend", "managedBy", "headServiceAnnotations", "authOptions",
                   "upgradeStrategy"}
HEAD_GROUP = {"rayStartParams", "template", "serviceType", "headService", "enableIngress", "resources", "labels"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template", "scaleStrategy",
                "numOfHosts", "suspend", "idleTimeoutSeconds", "resources", "labels"}
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
               "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint", "runtimeEnvYAML",
               "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
               "entrypointMemory", "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend",
               "preRunningDeadlineSeconds"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
RAYCRONJOB_SPEC = {"schedule", "jobTemplate", "suspend", "timeZone"}
CRON = re.compile(r"^(\S+\s+){4}\S+$")


def _docs(name: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]
    assert docs, name
    return docs


def _one(name: str, kind: str) -> dict:
    found = [d for d in _docs(name) if d["kind"] == kind]
    assert len(found) == 1, f"{name}: expected one {kind}"
    return found[0]


def _check_pod_template(t: dict, where: str) -> None:
    containers = t["spec"]["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers), where
    mounted = {m["name"] for c in containers for m in c.get("volumeMounts", [])}
    declared = {v["name"] for v in t["spec"].get("volumes", [])}
    assert mounted <= declared, f"{where}: volumeMounts without volumes: {mounted - declared}"


def check_raycluster_spec(spec: dict, where: str) -> None:
    assert set(spec) <= RAYCLUSTER_SPEC, f"{where}: unknown fields {set(spec) - RAYCLUSTER_SPEC}"
    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_GROUP and {"rayStartParams", "template"} <= set(head), where
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), f"{where}: rayStartParams are strings"
    _check_pod_template(head["template"], f"{where}.headGroupSpec")
    for g in spec.get("workerGroupSpecs", []):
        assert set(g) <= WORKER_GROUP and {"groupName", "rayStartParams", "template"} <= set(g), where
        assert g.get("minReplicas", 0) <= g.get("replicas", 0) <= g.get("maxReplicas", 2**31), where
        _check_pod_template(g["template"], f"{where}.workerGroupSpecs[{g['groupName']}]")


def check_rayjob_spec(spec: dict, where: str) -> None:
    assert set(spec) <= RAYJOB_SPEC, f"{where}: unknown fields {set(spec) - RAYJOB_SPEC}"
    assert spec["entrypoint"].startswith("oomsweep run ") and "--address auto" in spec["entrypoint"]
    env = yaml.safe_load(spec["runtimeEnvYAML"])  # a YAML *string* holding a mapping
    assert isinstance(spec["runtimeEnvYAML"], str) and isinstance(env, dict), where
    assert env["env_vars"]["RAY_USAGE_STATS_ENABLED"] == "0"
    assert spec.get("submissionMode", "K8sJobMode") in SUBMISSION_MODES
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec), f"{where}: exactly one of rayClusterSpec/clusterSelector"
    if "rayClusterSpec" in spec:
        check_raycluster_spec(spec["rayClusterSpec"], f"{where}.rayClusterSpec")
        # An ephemeral cluster must go away, or clusters pile up; the TTL only works with shutdown on.
        assert spec["shutdownAfterJobFinishes"] is True and isinstance(spec["ttlSecondsAfterFinished"], int)


def test_raycluster():
    rc = _one("raycluster.yaml", "RayCluster")
    assert rc["apiVersion"] == "ray.io/v1" and rc["metadata"]["name"]
    check_raycluster_spec(rc["spec"], "RayCluster")
    pvc = _one("raycluster.yaml", "PersistentVolumeClaim")
    claims = {v["persistentVolumeClaim"]["claimName"] for v in rc["spec"]["headGroupSpec"]["template"]["spec"]["volumes"]}
    assert pvc["metadata"]["name"] in claims


def test_rayjob():
    rj = _one("rayjob.yaml", "RayJob")
    assert rj["apiVersion"] == "ray.io/v1"
    check_rayjob_spec(rj["spec"], "RayJob")
    assert rj["spec"]["ttlSecondsAfterFinished"] > 0


def test_raycronjob_alpha_option():
    rcj = _one("raycronjob-alpha.yaml", "RayCronJob")
    assert rcj["apiVersion"] == "ray.io/v1"
    assert set(rcj["spec"]) <= RAYCRONJOB_SPEC and CRON.match(rcj["spec"]["schedule"])
    assert "concurrencyPolicy" not in rcj["spec"]  # not in the v1.7.0 type: the API server would drop it
    check_rayjob_spec(rcj["spec"]["jobTemplate"], "RayCronJob.jobTemplate")


def test_cronjob_rbac_and_kustomization_fit_together():
    cj = _one("cronjob.yaml", "CronJob")
    assert cj["apiVersion"] == "batch/v1"
    spec = cj["spec"]
    assert CRON.match(spec["schedule"]) and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    _check_pod_template({"spec": pod}, "CronJob")
    sa = _one("rbac.yaml", "ServiceAccount")
    role = _one("rbac.yaml", "Role")
    binding = _one("rbac.yaml", "RoleBinding")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert {"kind": "ServiceAccount", "name": sa["metadata"]["name"]} in binding["subjects"]
    assert any("ray.io" in r["apiGroups"] and "rayjobs" in r["resources"] and "create" in r["verbs"] for r in role["rules"])
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert {"rbac.yaml", "cronjob.yaml"} <= set(kust["resources"])
    (gen,) = kust["configMapGenerator"]
    assert gen["files"] == ["rayjob.yaml"] and gen["options"]["disableNameSuffixHash"] is True
    assert pod["volumes"][0]["configMap"]["name"] == gen["name"]


FAKE_KUBECTL = """#!/bin/sh
# records calls; `get rayjob NAME` succeeds only once NAME was created
echo "$*" >> "$STATE/calls"
case "$1" in
  get) [ -f "$STATE/created-$3" ] && echo "$3 exists" && exit 0; exit 1 ;;
  create) name=$(sed -n 's/^  name: //p' "$3" | head -n1); cp "$3" "$STATE/created-$name"; echo "rayjob/$name created" ;;
esac
"""


def _run_cronjob_script(tmp_path, **env_overrides: str) -> list[subprocess.CompletedProcess]:
    """Runs the CronJob container's script twice (same day) against a fake kubectl, with the container's env."""
    cj = _one("cronjob.yaml", "CronJob")
    container = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    script = container["args"][0].replace("/template/rayjob.yaml", str(K8S / "rayjob.yaml"))
    script = script.replace("/tmp/rayjob.yaml", str(tmp_path / "rayjob.yaml"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", STATE=str(tmp_path))
    env.update({e["name"]: e["value"] for e in container.get("env", [])}, **env_overrides)
    return [subprocess.run(container["command"] + [script], env=env, capture_output=True, text=True, timeout=30)
            for _ in range(2)]


NEEDS_SH = pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs /bin/sh")


@pytest.mark.slow
@NEEDS_SH
def test_cronjob_script_creates_one_rayjob_per_day(tmp_path):
    runs = _run_cronjob_script(tmp_path)
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    created = list(tmp_path.glob("created-*"))
    assert len(created) == 1, "the second run of the same day must not create another RayJob"
    job = yaml.safe_load(created[0].read_text())
    name = job["metadata"]["name"]
    assert re.fullmatch(r"oomsweep-quick-\d{8}", name)
    assert job["spec"]["jobId"] == name  # the Ray submission id: Ray refuses a second job under it
    template = yaml.safe_load((K8S / "rayjob.yaml").read_text())
    job["metadata"]["name"] = template["metadata"]["name"]
    del job["spec"]["jobId"]
    assert job == template
    assert "already exists" in runs[1].stdout


@pytest.mark.slow
@NEEDS_SH
def test_cronjob_fresh_seeds_appends_the_block_of_the_day(tmp_path):
    runs = _run_cronjob_script(tmp_path, OOMSWEEP_FRESH_SEEDS="1")
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    (created,) = tmp_path.glob("created-*")
    entrypoint = yaml.safe_load(created.read_text())["spec"]["entrypoint"]
    m = re.search(r"--output /data/results --replicate-block (\d+)$", entrypoint)
    assert m, entrypoint
    assert abs(int(m.group(1)) - int(time.time()) // 86400) <= 1
