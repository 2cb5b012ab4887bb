#!/usr/bin/env bash
# Submit the nightly sweep to a Ray cluster with `ray job submit`, at most once per sweep and day.
#
#   infra/cron/oomsweep-nightly.sh [SWEEP.yaml]          # from cron or oomsweep-nightly.service
#
# The submission id is oomsweep-<sweep name>-<YYYY-MM-DD> (UTC).  Ray rejects a reused id, and this
# script asks first: when today's job is PENDING/RUNNING/SUCCEEDED it does nothing (exit 0), so a
# retried timer, a second cron line or a manual rerun never runs the sweep twice.  When today's job
# FAILED or was STOPPED, it submits oomsweep-<name>-<date>-retry<N>; the rerun resumes from the rows
# already stored (rows are keyed by cell, policy and replicate).
#
# Environment:
#   RAY_ADDRESS         the cluster's dashboard/Jobs API (default http://127.0.0.1:8265)
#   OOMSWEEP_PROJECT    project checkout uploaded as the job's working dir (default: this repo)
#   OOMSWEEP_SWEEP      sweep file relative to the project (default configs/quick.yaml; or $1)
#   OOMSWEEP_OUTPUT     dataset directory as seen by the head node (default /srv/oomsweep/results)
#   OOMSWEEP_DATE       the day to submit for (default: today, UTC; set it to re-run a given day)
#   OOMSWEEP_MAX_RETRIES  resubmissions of a failed day (default 2)
#   OOMSWEEP_FRESH_SEEDS=1  each day runs a fresh block of replicates (`--replicate-block` = days
#                       since 1970-01-01): an unchanged sweep then adds R new replicates a night and
#                       `oomsweep history` compares independent nights; a retry of the day resumes its
#                       block. Default 0: the sweep's own replicates, so unchanged code adds nothing.
#   OOMSWEEP_NO_WAIT=1  return after submitting (default: wait, exit with the job's result)
#   RAY_BIN             the `ray` executable (default: `ray` on PATH)
#   OOMSWEEP_PYTHON     a Python with Ray installed (default: the `python` next to `ray`)
#   MLFLOW_TRACKING_URI passed to the job (default: whatever the cluster's environment has)
# Exit: 0 submitted and succeeded (or nothing to do), 1 the job failed, 2 bad setup.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="${OOMSWEEP_PROJECT:-$(cd "$here/../.." && pwd)}"
SWEEP="${1:-${OOMSWEEP_SWEEP:-configs/quick.yaml}}"
OUTPUT="${OOMSWEEP_OUTPUT:-/srv/oomsweep/results}"
ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
DAY="${OOMSWEEP_DATE:-$(date -u +%F)}"
MAX_RETRIES="${OOMSWEEP_MAX_RETRIES:-2}"
RAY="${RAY_BIN:-ray}"
PYTHON="${OOMSWEEP_PYTHON:-$(dirname "$(command -v "$RAY")")/python}"   # the Python that has Ray

log() { echo "oomsweep-nightly: $*" >&2; }

[ -f "$PROJECT/$SWEEP" ] || { log "no sweep file $PROJECT/$SWEEP"; exit 2; }
[[ "$DAY" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] || { log "OOMSWEEP_DATE must be YYYY-MM-DD, got '$DAY'"; exit 2; }
# The sweep's `name:` (a plain scalar by the schema: [A-Za-z0-9][A-Za-z0-9_.-]*), quotes stripped.
NAME="$(sed -n -E "s/^name:[[:space:]]*['\"]?([A-Za-z0-9][A-Za-z0-9_.-]*)['\"]?[[:space:]]*(#.*)?$/\1/p" "$PROJECT/$SWEEP" | head -n1)"
[ -n "$NAME" ] || { log "$SWEEP: no top-level 'name:'"; exit 2; }

# Status of a submission id: PENDING RUNNING SUCCEEDED FAILED STOPPED, or "" when there is none.
# Asked through Ray's Python SDK (the CLI prints prose such as "Job 'x' succeeded", not the status).
job_status() {
    "$PYTHON" - "$ADDRESS" "$1" <<'PY' 2>/dev/null || true
import sys
from ray.job_submission import JobSubmissionClient
try:
    print(JobSubmissionClient(sys.argv[1]).get_job_status(sys.argv[2]).value)
except RuntimeError as exc:  # 404 "Job X does not exist"
    if "does not exist" not in str(exc):
        raise
PY
}

BASE_ID="oomsweep-$NAME-$DAY"
ID="$BASE_ID"
for attempt in $(seq 0 "$MAX_RETRIES"); do
    [ "$attempt" -eq 0 ] && ID="$BASE_ID" || ID="$BASE_ID-retry$attempt"
    status="$(job_status "$ID")"
    case "$status" in
        "") break ;;                                   # free: submit under this id
        PENDING|RUNNING) log "$ID is $status: today's sweep is already running"; exit 0 ;;
        SUCCEEDED) log "$ID SUCCEEDED: today's sweep already ran"; exit 0 ;;
        FAILED|STOPPED) log "$ID $status"; ID="" ;;    # try the next retry id
    esac
done
[ -n "$ID" ] || { log "$BASE_ID failed $((MAX_RETRIES + 1)) times today; not retrying (OOMSWEEP_MAX_RETRIES)"; exit 1; }

cmd=("$RAY" job submit --address "$ADDRESS" --submission-id "$ID" --working-dir "$PROJECT"
     --metadata-json "{\"sweep\": \"$NAME\", \"date\": \"$DAY\"}")
[ "${OOMSWEEP_NO_WAIT:-0}" = 1 ] && cmd+=(--no-wait)
if [ -n "${MLFLOW_TRACKING_URI:-}" ]; then
    cmd+=(--runtime-env-json "{\"env_vars\": {\"MLFLOW_TRACKING_URI\": \"$MLFLOW_TRACKING_URI\", \"RAY_USAGE_STATS_ENABLED\": \"0\"}}")
fi
cmd+=(-- oomsweep run "$SWEEP" --address auto --output "$OUTPUT")
if [ "${OOMSWEEP_FRESH_SEEDS:-0}" = 1 ]; then
    cmd+=(--replicate-block "$(( $(date -u -d "$DAY" +%s) / 86400 ))")
fi
log "submitting $ID: ${cmd[*]}"
if "${cmd[@]}"; then
    log "$ID done; compare with earlier runs: oomsweep history $OUTPUT --sweep $NAME"
    exit 0
fi
# `ray job submit` exits 1 when the job fails, and also when Ray refused the id because another
# submitter won the race: report which.
status="$(job_status "$ID")"
log "$ID ended with status ${status:-unknown}"
[ "$status" = SUCCEEDED ] || [ "$status" = RUNNING ] || [ "$status" = PENDING ] && exit 0
exit 1
