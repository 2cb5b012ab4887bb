#!/usr/bin/env bash
# Start a real MLflow tracking server for oomsweep: SQLite backend and proxied artifacts under a
# data directory, bound to 127.0.0.1 by default.  Runs in the foreground (use systemd, tmux or `&`).
#
#   infra/mlflow/serve.sh                               # http://127.0.0.1:5000, data in ./mlflow-data
#   MLFLOW_PORT=5055 MLFLOW_DATA=/srv/mlflow infra/mlflow/serve.sh
#   MLFLOW_TRACKING_URI=http://127.0.0.1:5000 oomsweep run configs/quick.yaml
#
# Environment (all optional):
#   MLFLOW_DATA      data directory (default ./mlflow-data): mlflow.db + artifacts/ are created in it
#   MLFLOW_HOST      interface to bind (default 127.0.0.1; 0.0.0.0 only behind a firewall/proxy, see below)
#   MLFLOW_PORT      port (default 5000)
#   MLFLOW_WORKERS   uvicorn worker processes (default 2; SQLite serialises writers anyway)
#   MLFLOW_BACKEND_STORE_URI   overrides the SQLite backend, e.g. postgresql://mlflow@db/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION  overrides the artifact store, e.g. s3://bucket/mlflow
#   MLFLOW_BIN       the mlflow executable (default: `mlflow` on PATH)
# Extra arguments are passed to `mlflow server` unchanged (e.g. --allowed-hosts, --app-name basic-auth).
#
# Shared deployment (a team, a Ray cluster whose driver logs from another machine):
#   * Backend: PostgreSQL, not SQLite — SQLite serialises writers and must not live on NFS:
#       MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:PASSWORD@db.internal:5432/mlflow   (pip install psycopg2-binary)
#   * Artifacts: keep --serve-artifacts (the default, set explicitly below) so clients upload through
#     the server and need no bucket credentials; point MLFLOW_ARTIFACTS_DESTINATION at shared storage
#     (s3://..., gs://..., or a path every server replica mounts).
#   * Network: bind MLFLOW_HOST=0.0.0.0 (or the LAN address) and list the names clients use in
#     --allowed-hosts (default: localhost and private IPs; anything else gets HTTP 403 — DNS
#     rebinding protection), e.g.  infra/mlflow/serve.sh --allowed-hosts "mlflow.internal,mlflow.internal:5000"
#     and --cors-allowed-origins for browsers on other origins.  Never --disable-security-middleware.
#   * Authentication: MLflow's server has none by default; put it behind a reverse proxy with auth
#     (TLS there too) or use `--app-name basic-auth`.
#   * Telemetry is disabled here (MLFLOW_DISABLE_TELEMETRY=true) unless you set it yourself.
set -euo pipefail

DATA="${MLFLOW_DATA:-./mlflow-data}"
HOST="${MLFLOW_HOST:-127.0.0.1}"
PORT="${MLFLOW_PORT:-5000}"
WORKERS="${MLFLOW_WORKERS:-2}"
MLFLOW="${MLFLOW_BIN:-mlflow}"

mkdir -p "$DATA/artifacts"
DATA="$(cd "$DATA" && pwd)"   # absolute: the SQLite URI and artifact root must not depend on cwd
BACKEND="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$DATA/mlflow.db}"
ARTIFACTS="${MLFLOW_ARTIFACTS_DESTINATION:-$DATA/artifacts}"

export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"

echo "mlflow server: http://$HOST:$PORT  backend $BACKEND  artifacts $ARTIFACTS" >&2
exec "$MLFLOW" server \
    --host "$HOST" \
    --port "$PORT" \
    --workers "$WORKERS" \
    --backend-store-uri "$BACKEND" \
    --serve-artifacts \
    --artifacts-destination "$ARTIFACTS" \
    "$@"
