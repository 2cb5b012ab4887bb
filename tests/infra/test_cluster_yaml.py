"""Both cluster launcher YAMLs pass Ray's own schema check; broken copies fail it.

prepare_config + validate_config are what `ray up` runs (private API of the pinned Ray 2.60:
ray/autoscaler/_private/util.py); they fill provider defaults and validate against the
ray-schema.json shipped in the wheel, offline.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {name: ROOT / "infra" / "ray" / f"cluster-{name}.yaml" for name in ("local", "aws")}


def _ray_check(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def _load(name: str) -> dict:
    return yaml.safe_load(CONFIGS[name].read_text())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cluster_yaml_passes_rays_schema(name):
    cfg = _load(name)
    prepared = _ray_check(cfg)
    # What makes it a cluster for this project: the project on every node, installed, Ray started.
    assert cfg["file_mounts"] == {"~/oomsweep": "."}
    assert ".venv" in cfg["rsync_exclude"]
    assert any("pip install" in c and "~/oomsweep" in c for c in cfg["setup_commands"])
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in " ".join(cfg["head_start_ray_commands"])
    assert prepared["max_workers"] == cfg["max_workers"]


def test_local_yaml_is_the_127_0_0_1_head_with_no_workers():
    cfg = _load("local")
    assert cfg["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    prepared = _ray_check(cfg)
    assert list(prepared["available_node_types"]) == ["local.cluster.node"]  # Ray's synthesized type
    assert prepared["max_workers"] == 0
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--node-ip-address=127.0.0.1" in head and "--dashboard-host=127.0.0.1" in head


def test_aws_yaml_node_types_are_bounded():
    cfg = _load("aws")
    prepared = _ray_check(cfg)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types
    assert sum(t.get("max_workers", 0) for n, t in types.items() if n != cfg["head_node_type"]) <= cfg["max_workers"]


@pytest.mark.parametrize(
    "name, break_it, message",
    [
        ("local", lambda c: c.update(max_worker=c.pop("max_workers")), "max_worker"),
        ("aws", lambda c: c.update(max_worker=c.pop("max_workers")), "max_worker"),
        ("aws", lambda c: c.pop("provider"), "provider"),
        ("aws", lambda c: c["available_node_types"]["cpu_worker"].pop("node_config"), "node_config"),
        ("local", lambda c: c.update(idle_timeout_minutes="five"), "is not of type"),
    ],
    ids=["local-typo", "aws-typo", "aws-no-provider", "aws-no-node_config", "local-wrong-type"],
)
def test_broken_copy_fails_rays_schema(name, break_it, message, tmp_path):
    import jsonschema

    cfg = _load(name)
    break_it(cfg)
    broken = tmp_path / f"broken-{name}.yaml"  # a real broken copy on disk, as a user would have it
    broken.write_text(yaml.safe_dump(cfg))
    with pytest.raises((jsonschema.ValidationError, KeyError, ValueError)) as err:
        _ray_check(yaml.safe_load(broken.read_text()))
    assert message in str(err.value)
