"""infra/cron/oomsweep-nightly.sh decisions, against a fake `ray` and a fake status lookup (no cluster).

The real path (a `ray start --head` and two runs of the script) is in test_ray_job_submit.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "cron" / "oomsweep-nightly.sh"

FAKE_RAY = """#!/bin/sh
printf '%s\\n' "$@" > "$STATE/submit-$(date +%s%N)"
exit "${FAKE_SUBMIT_RC:-0}"
"""
# Stands in for the Python that asks Ray's SDK: prints the status recorded for the id, if any.
FAKE_PYTHON = """#!/bin/sh
cat > /dev/null
python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$STATE/statuses.json" "$3"
"""


@pytest.fixture
def nightly(tmp_path):
    for name, text in (("ray", FAKE_RAY), ("python", FAKE_PYTHON)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)

    def call(statuses: dict[str, str], *, sweep: str = "tests/infra/data/tiny.yaml", submit_rc: int = 0,
             **extra_env: str):
        (tmp_path / "statuses.json").write_text(json.dumps(statuses))
        for old in tmp_path.glob("submit-*"):
            old.unlink()
        env = dict(os.environ, STATE=str(tmp_path), RAY_BIN=str(tmp_path / "ray"), OOMSWEEP_PYTHON=str(tmp_path / "python"),
                   OOMSWEEP_DATE="2026-11-26", OOMSWEEP_OUTPUT="/srv/results", RAY_ADDRESS="http://head:8265",
                   OOMSWEEP_SWEEP=sweep, FAKE_SUBMIT_RC=str(submit_rc))
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("OOMSWEEP_FRESH_SEEDS", None)
        env.update(extra_env)
        p = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
        submits = [f.read_text().splitlines() for f in sorted(tmp_path.glob("submit-*"))]
        return p, submits

    return call


@pytest.mark.slow
def test_first_run_of_the_day_submits_under_name_and_date(nightly):
    p, submits = nightly({})
    assert p.returncode == 0, p.stderr
    (args,) = submits
    assert args[:2] == ["job", "submit"]
    assert args[args.index("--submission-id") + 1] == "oomsweep-infra-tiny-2026-11-26"
    assert args[args.index("--working-dir") + 1] == str(ROOT)
    assert args[args.index("--address") + 1] == "http://head:8265"
    assert args[args.index("--") + 1:] == ["oomsweep", "run", "tests/infra/data/tiny.yaml", "--address", "auto",
                                           "--output", "/srv/results"]


@pytest.mark.slow
def test_fresh_seeds_run_the_block_of_the_day(nightly):
    p, submits = nightly({}, OOMSWEEP_FRESH_SEEDS="1")
    assert p.returncode == 0, p.stderr
    (args,) = submits
    # 2026-11-26 is day 20,783 since 1970-01-01: replicates 20783*R .. 20783*R+R-1
    assert args[-2:] == ["--replicate-block", "20783"]
    p, submits = nightly({}, OOMSWEEP_FRESH_SEEDS="1", OOMSWEEP_DATE="2026-11-27")
    assert submits[0][-2:] == ["--replicate-block", "20784"]


@pytest.mark.slow
@pytest.mark.parametrize("status", ["PENDING", "RUNNING", "SUCCEEDED"])
def test_todays_job_exists_nothing_is_submitted(nightly, status):
    p, submits = nightly({"oomsweep-infra-tiny-2026-11-26": status})
    assert p.returncode == 0 and submits == []
    assert status in p.stderr


@pytest.mark.slow
def test_failed_day_is_retried_under_a_new_id_until_the_limit(nightly):
    base = "oomsweep-infra-tiny-2026-11-26"
    p, submits = nightly({base: "FAILED"})
    assert p.returncode == 0 and [s[s.index("--submission-id") + 1] for s in submits] == [f"{base}-retry1"]
    p, submits = nightly({base: "FAILED", f"{base}-retry1": "STOPPED"})
    assert [s[s.index("--submission-id") + 1] for s in submits] == [f"{base}-retry2"]
    p, submits = nightly({base: "FAILED", f"{base}-retry1": "FAILED", f"{base}-retry2": "FAILED"})
    assert p.returncode == 1 and submits == [] and "not retrying" in p.stderr


@pytest.mark.slow
def test_failed_job_fails_the_script_and_bad_setup_exits_2(nightly):
    p, submits = nightly({}, submit_rc=1)
    assert p.returncode == 1 and len(submits) == 1
    p, submits = nightly({}, sweep="configs/nope.yaml")
    assert p.returncode == 2 and submits == [] and "no sweep file" in p.stderr
