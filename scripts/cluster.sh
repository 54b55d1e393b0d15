#!/usr/bin/env bash
# A one-machine "cluster" for trying camp's scale-out path: PostgreSQL on 127.0.0.1 with two databases
# (optuna for the study, mlflow for tracking) and an `mlflow server` backed by it with an artifact store.
#
#   scripts/cluster.sh up      # start (creates everything on first use), print the settings to use
#   scripts/cluster.sh down    # stop the MLflow server and PostgreSQL (data stays in $CAMP_CLUSTER_DIR)
#   scripts/cluster.sh status
#
# Settings (environment): CAMP_CLUSTER_DIR (default .cluster), CAMP_PG_PORT (5433), CAMP_MLFLOW_PORT (5002),
# CAMP_MLFLOW_WORKERS (2), MLFLOW (the mlflow command, default .venv/bin/mlflow).
# Installs nothing except, when PostgreSQL is missing and we are root on Debian/Ubuntu,
# `apt-get install -y postgresql` (said on screen). initdb/postgres refuse to run as root: as root they
# run as the `postgres` user the Debian package creates.
# `up` writes $CAMP_CLUSTER_DIR/env (mode 600): `source` it for MLFLOW_TRACKING_URI and CAMP_STORAGE.
# The password is generated once into $CAMP_CLUSTER_DIR/password (mode 600) and printed only masked.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${CAMP_CLUSTER_DIR:-$ROOT/.cluster}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PG_PORT="${CAMP_PG_PORT:-5433}"
MLFLOW_PORT="${CAMP_MLFLOW_PORT:-5002}"
MLFLOW_WORKERS="${CAMP_MLFLOW_WORKERS:-2}"
MLFLOW="${MLFLOW:-$ROOT/.venv/bin/mlflow}"
PYTHON="$(dirname "$MLFLOW")/python"  # the environment mlflow runs in (psycopg must be there)
ROLE=camp
PGDATA="$DIR/pg"
pgreal() { readlink -f "$PGDATA"; }  # as root the data may live under /tmp, linked here (see init_pg)

say() { echo "cluster: $*"; }
die() { echo "cluster: error: $*" >&2; exit 1; }

find_pg_bin() {
  local candidate
  for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$candidate/pg_ctl" ] && { echo "$candidate"; return 0; }
  done
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0; fi
  return 1
}

ensure_pg() {
  if PG_BIN="$(find_pg_bin)"; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "PostgreSQL not found: installing the Debian package (apt-get install -y postgresql)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
      || die "apt-get install postgresql failed"
    PG_BIN="$(find_pg_bin)" || die "postgresql installed but pg_ctl not found under /usr/lib/postgresql/*/bin"
    return 0
  fi
  die "PostgreSQL server binaries (pg_ctl, initdb) not found: install them (Debian: sudo apt-get install postgresql)"
}

# run a PostgreSQL server binary: as root through the postgres user, else as ourselves
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user (created by the Debian package)"
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

password() {
  if [ ! -s "$DIR/password" ]; then
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(18))' > "$DIR/password")
  fi
  cat "$DIR/password"
}

psql_admin() {  # SQL as the superuser over TCP on 127.0.0.1
  PGPASSWORD="$(password)" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres \
    -d postgres "$@"
}

pg_running() { [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$(pgreal)" status >/dev/null 2>&1; }

init_pg() {
  [ -f "$PGDATA/PG_VERSION" ] && return 0
  say "initdb $PGDATA"
  mkdir -p "$PGDATA"
  local pwfile
  pwfile="$(mktemp /tmp/camp-pw.XXXXXX)"  # mode 600, readable by initdb wherever $DIR is
  password > "$pwfile"
  if [ "$(id -u)" = 0 ]; then
    # the postgres user must reach the data directory: when a parent folder is private (mode 700, e.g.
    # under /root or pytest's /tmp/pytest-of-root), keep the data under /tmp and link it here
    chmod o+x "$DIR" || true
    if ! runuser -u postgres -- test -x "$DIR"; then
      rmdir "$PGDATA"
      local real
      real="$(mktemp -d /tmp/camp-pg.XXXXXX)"
      ln -s "$real" "$PGDATA"
      say "the postgres user cannot reach $DIR: data in $real (linked as $PGDATA)"
    fi
    chown -R postgres: "$(readlink -f "$PGDATA")" "$pwfile"
  fi
  as_pg "$PG_BIN/initdb" -D "$(pgreal)" -U postgres --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 \
    --no-instructions >"$DIR/initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$DIR/initdb.log" >&2; die "initdb failed"; }
  rm -f "$pwfile"
}

start_pg() {
  if pg_running; then say "PostgreSQL already running on 127.0.0.1:$PG_PORT"; return 0; fi
  local log
  log="$(pgreal)/server.log"
  # loopback TCP only, no Unix socket (nothing outside this machine, nothing in /var/run)
  as_pg "$PG_BIN/pg_ctl" -D "$(pgreal)" -l "$log" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" start >/dev/null \
    || { tail -20 "$log" >&2; die "PostgreSQL did not start (log: $log)"; }
  say "PostgreSQL started on 127.0.0.1:$PG_PORT (data $PGDATA, log $log)"
}

create_databases() {
  local pw exists
  pw="$(password)"
  exists="$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname='$ROLE'")"
  if [ "$exists" != 1 ]; then
    psql_admin >/dev/null <<<"CREATE ROLE $ROLE LOGIN PASSWORD '$pw'"  # on stdin: not visible in ps
  fi
  local db
  for db in optuna mlflow; do  # separate databases: both keep an alembic_version table
    exists="$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname='$db'")"
    [ "$exists" = 1 ] || psql_admin -c "CREATE DATABASE $db OWNER $ROLE" >/dev/null
  done
}

url() { echo "postgresql://$ROLE:$(password)@127.0.0.1:$PG_PORT/$1"; }

mlflow_pid() { [ -f "$DIR/mlflow.pid" ] && cat "$DIR/mlflow.pid"; }

# the recorded pid is ours only while it still runs `mlflow server` (a stale pid may be reused)
mlflow_running() {
  local pid; pid="$(mlflow_pid)" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "mlflow server"
}

mlflow_answers() {
  "$PYTHON" - "$MLFLOW_PORT" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=3).read()
EOF
}

start_mlflow() {
  [ -x "$MLFLOW" ] || die "$MLFLOW not found (make setup, or MLFLOW=/path/to/mlflow)"
  "$PYTHON" -c "import psycopg" 2>/dev/null || die "the psycopg package is missing from $("$PYTHON" -c 'import sys; print(sys.prefix)') (pip install 'psycopg[binary]')"
  if mlflow_running; then say "MLflow server already running (pid $(mlflow_pid))"; else
    mkdir -p "$DIR/artifacts"
    # the backend URI (with its password) goes in through MLFLOW_BACKEND_STORE_URI, not the command line;
    # job execution (GenAI background jobs) is off: a sweep does not need it and it starts ~8 processes
    MLFLOW_BACKEND_STORE_URI="$(url mlflow)" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
      setsid nohup "$MLFLOW" server --artifacts-destination "$DIR/artifacts" \
      --host 127.0.0.1 --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" >"$DIR/mlflow.log" 2>&1 < /dev/null &
    echo $! > "$DIR/mlflow.pid"
  fi
  local deadline=$((SECONDS + 120))
  until mlflow_answers; do
    mlflow_running || { tail -30 "$DIR/mlflow.log" >&2; die "the MLflow server exited (log: $DIR/mlflow.log)"; }
    [ $SECONDS -lt $deadline ] || { tail -30 "$DIR/mlflow.log" >&2; die "the MLflow server did not answer within 120 s"; }
    sleep 1
  done
  say "MLflow server http://127.0.0.1:$MLFLOW_PORT (pid $(mlflow_pid), artifacts $DIR/artifacts, log $DIR/mlflow.log)"
}

write_env() {
  (umask 077 && cat > "$DIR/env" <<EOF
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export CAMP_STORAGE=$(url optuna)
EOF
  )
}

up() {
  ensure_pg
  init_pg
  start_pg
  create_databases
  start_mlflow
  write_env
  cat <<EOF

cluster up. In each shell that runs a sweep:
  source $DIR/env
    # MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
    # CAMP_STORAGE=postgresql://$ROLE:***@127.0.0.1:$PG_PORT/optuna   (camp sweep's default --storage)
  camp sweep sweeps/default.yaml --workers 2     # --storage defaults to \$CAMP_STORAGE
  # MLflow UI: http://127.0.0.1:$MLFLOW_PORT   stop: make cluster-down
EOF
}

stop_pid() {  # SIGTERM to a process (and its group, which setsid made its own), then SIGKILL after 30 s
  local pid="$1" name="$2" waited=0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ $waited -lt 30 ]; do sleep 1; waited=$((waited + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    say "$name (pid $pid) killed after 30 s"
  else
    say "$name (pid $pid) stopped"
  fi
}

down() {
  local pid
  if mlflow_running; then stop_pid "$(mlflow_pid)" "MLflow server"; fi
  rm -f "$DIR/mlflow.pid"
  if [ -f "$PGDATA/postmaster.pid" ]; then
    PG_BIN="$(find_pg_bin)" || die "pg_ctl not found"
    pid="$(head -1 "$PGDATA/postmaster.pid")"
    as_pg "$PG_BIN/pg_ctl" -D "$(pgreal)" -m fast -w -t 60 stop >/dev/null 2>&1 || stop_pid "$pid" "PostgreSQL"
    say "PostgreSQL (pid $pid) stopped; data kept in $PGDATA (rm -rf $DIR to start afresh)"
  fi
}

status() {
  PG_BIN="$(find_pg_bin)" || die "PostgreSQL binaries not found"
  if pg_running; then say "PostgreSQL running on 127.0.0.1:$PG_PORT"; else say "PostgreSQL stopped"; fi
  if mlflow_running; then say "MLflow server running (pid $(mlflow_pid)) on 127.0.0.1:$MLFLOW_PORT"; else say "MLflow server stopped"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
