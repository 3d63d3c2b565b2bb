#!/usr/bin/env bash
# A local multi-node Ray cluster on loopback for development: a head (dashboard + job server on 127.0.0.1)
# and worker nodes shaped like the real node types (rrsis/resources.py): an "accelerator" worker (plain CPUs
# here) and a CPU worker declaring `cpu_pool`, so `rrsis submit` exercises the same placement as a cluster.
#
#   cluster/local_cluster.sh start      # prints the address; then:
#   rrsis submit map --address http://127.0.0.1:8265 --config configs/map/waterland.yaml
#   cluster/local_cluster.sh status
#   cluster/local_cluster.sh stop       # stops only the processes this script started (by process group)
#
# Settings (environment): WORKERS (default 2; 0 = head only), HEAD_CPUS (1), WORKER_CPUS (1),
# GCS_PORT (6379), DASHBOARD_PORT (8265), PORT_BASE (first of the per-node port bands, 42000),
# STATE_DIR (/tmp/rrsis-local-cluster), RAY (the ray executable; default: .venv/bin/ray, else PATH),
# RAY_AUTH_MODE (disabled; `token` with RAY_AUTH_TOKEN set turns on Ray token authentication).
#
# Addresses: with WORKERS=0 every Ray listener binds 127.0.0.1. Ray's `ray start` refuses to place several
# nodes on 127.0.0.1 (it rewrites it to the routable IP), so with workers the nodes use the loopback aliases
# 127.0.0.2, 127.0.0.3, ... (traffic stays on `lo`); Ray then binds its gRPC ports on all interfaces, so keep
# a host firewall on shared machines. The dashboard/job server is always on 127.0.0.1 only.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
WORKERS="${WORKERS:-2}"
HEAD_CPUS="${HEAD_CPUS:-1}"
WORKER_CPUS="${WORKER_CPUS:-1}"
GCS_PORT="${GCS_PORT:-6379}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8265}"
PORT_BASE="${PORT_BASE:-42000}"
STATE_DIR="${STATE_DIR:-/tmp/rrsis-local-cluster}"
if [[ -z "${RAY:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/ray" ]]; then RAY="$REPO/.venv/bin/ray"; else RAY="$(command -v ray || true)"; fi
fi
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
# a loaded machine can take more than Ray's default 60 s to register a node's raylet with the GCS
export RAY_raylet_start_wait_time_s="${RAY_raylet_start_wait_time_s:-180}"
export RAY_USAGE_STATS_ENABLED=0
# jobs run `python ...`: make it the interpreter that has rrsis (the one next to `ray`)
export PATH="$(dirname "$RAY"):$PATH"

# node index -> "--flag=port ..." for every port a node listens on (10 ports + a 100-port worker band)
node_ports() {
  local base=$((PORT_BASE + $1 * 200))
  echo "--node-manager-port=$base --object-manager-port=$((base + 1))" \
       "--dashboard-agent-listen-port=$((base + 2)) --dashboard-agent-grpc-port=$((base + 3))" \
       "--runtime-env-agent-port=$((base + 4)) --metrics-export-port=$((base + 5))" \
       "--min-worker-port=$((base + 100)) --max-worker-port=$((base + 199))"
}

start_node() {  # name, then the ray start arguments
  local name="$1"; shift
  setsid "$RAY" start --block "$@" >"$STATE_DIR/$name.log" 2>&1 &
  echo $! >"$STATE_DIR/$name.pid"
}

wait_dashboard() {
  for _ in $(seq 240); do
    if curl -sf "http://127.0.0.1:$DASHBOARD_PORT/api/version" >/dev/null 2>&1; then return 0; fi
    kill -0 "$(cat "$STATE_DIR/head.pid")" 2>/dev/null || break
    sleep 0.5
  done
  echo "local_cluster: the dashboard did not come up; see $STATE_DIR/head.log" >&2
  return 1
}

wait_nodes() {  # count, name: wait until that many nodes are alive; the named node's process must live
  for _ in $(seq 480); do
    if [[ "$(alive_nodes)" -ge "$1" ]]; then return 0; fi
    kill -0 "$(cat "$STATE_DIR/$2.pid")" 2>/dev/null || break
    sleep 0.5
  done
  echo "local_cluster: $2 did not join ($(alive_nodes) of $1 nodes alive); see $STATE_DIR/$2.log" >&2
  return 1
}

alive_nodes() {
  curl -sf "http://127.0.0.1:$DASHBOARD_PORT/nodes?view=summary" | grep -o '"state": "ALIVE"' | wc -l
}

cmd_start() {
  if [[ -z "$RAY" || ! -x "$RAY" ]]; then
    echo "local_cluster: no ray executable (run make install, or set RAY=/path/to/ray)" >&2
    exit 2
  fi
  if compgen -G "$STATE_DIR/*.pid" >/dev/null; then
    echo "local_cluster: already started (state in $STATE_DIR); run stop first" >&2
    exit 2
  fi
  # Ray's Unix sockets live in <temp dir>/session_<date>_<pid>/sockets/: a long STATE_DIR makes their paths
  # exceed the 107 bytes Linux allows, and the dashboard then fails to start (its MetricsHead socket)
  if ((${#STATE_DIR} > 30)); then
    echo "local_cluster: STATE_DIR=$STATE_DIR is too long for Ray's socket paths; use one of at most 30 characters" >&2
    exit 2
  fi
  mkdir -p "$STATE_DIR/tmp"
  local head_ip=127.0.0.1
  if [[ "$WORKERS" -gt 0 ]]; then head_ip=127.0.0.2; fi
  # shellcheck disable=SC2046
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=$([[ "$WORKERS" -gt 0 ]] && echo 1 || echo 0) \
  start_node head --head --node-ip-address="$head_ip" --port="$GCS_PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --include-dashboard=true \
    --ray-client-server-port=$((PORT_BASE + 10)) --temp-dir="$STATE_DIR/tmp" \
    --num-cpus="$HEAD_CPUS" --num-gpus=0 $(node_ports 0)
  wait_dashboard
  wait_nodes 1 head
  local i
  for ((i = 1; i <= WORKERS; i++)); do
    local resources='{}'
    # odd workers stand in for the accelerator node type, even ones for the CPU node type
    if ((i % 2 == 0)); then resources='{"cpu_pool": '"$WORKER_CPUS"'}'; fi
    # shellcheck disable=SC2046
    # each node its own temp dir: nodes sharing one would share (and clobber) socket and log file names
    mkdir -p "$STATE_DIR/tmp$i"
    start_node "worker$i" --address="$head_ip:$GCS_PORT" --node-ip-address="127.0.0.$((i + 2))" \
      --temp-dir="$STATE_DIR/tmp$i" --num-cpus="$WORKER_CPUS" --num-gpus=0 --resources="$resources" \
      $(node_ports "$i")
    # one at a time: nodes on one machine share the session dir and pick socket names on registration
    wait_nodes $((i + 1)) "worker$i"
  done
  echo "local_cluster: $(alive_nodes) node(s) up; job server at http://127.0.0.1:$DASHBOARD_PORT"
  echo "  rrsis submit map --address http://127.0.0.1:$DASHBOARD_PORT --config configs/map/waterland.yaml"
}

cmd_stop() {
  local pidfile pid
  for pidfile in "$STATE_DIR"/*.pid; do
    [[ -e "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  sleep 2
  for pidfile in "$STATE_DIR"/*.pid; do
    [[ -e "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  echo "local_cluster: stopped"
}

cmd_status() {
  if ! curl -sf "http://127.0.0.1:$DASHBOARD_PORT/api/version" >/dev/null 2>&1; then
    echo "local_cluster: not running (no job server at http://127.0.0.1:$DASHBOARD_PORT)"
    return 1
  fi
  echo "local_cluster: $(alive_nodes) node(s) alive; job server at http://127.0.0.1:$DASHBOARD_PORT"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
