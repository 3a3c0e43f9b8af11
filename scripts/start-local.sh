#!/usr/bin/env bash
# Start everything locally: a Redis Cluster of 3 masters + 3 replicas on 127.0.0.1:7000-7005 and
# redisforge-proxy in front of it on 127.0.0.1:7379 (plain RESP), both in the background.
#
#   scripts/start-local.sh          build, start what is not running yet, print how to connect
#   scripts/start-local.sh --down   stop the proxy and the cluster this script started
#
# State lives in .local/ (git-ignored): cluster/<port>/ (redis.conf, redis.log, nodes.conf, pid),
# redisforge.toml, proxy.pid, proxy.log. A second run reuses a healthy cluster and a live proxy.
# Only processes named in those pid files are ever stopped.
#
# Each step is one `step_NAME` function, run in the order of STEPS; to add a step (TLS
# certificates, say) write its function and add its name to STEPS.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"

STEPS=(deps build cluster config proxy summary)

LOCAL_DIR="$ROOT/.local"
CLUSTER_DIR="$LOCAL_DIR/cluster"
CLUSTER_BASE_PORT=7000
CLUSTER_MASTERS=3
CLUSTER_REPLICAS=1
CLUSTER_LAST_PORT=$((CLUSTER_BASE_PORT + CLUSTER_MASTERS * (1 + CLUSTER_REPLICAS) - 1))
PROXY_HOST=127.0.0.1
PROXY_PORT=7379
PROXY_BIN="$ROOT/target/release/redisforge-proxy"
PROXY_CONFIG="$LOCAL_DIR/redisforge.toml"
PROXY_PID_FILE="$LOCAL_DIR/proxy.pid"
PROXY_LOG="$LOCAL_DIR/proxy.log"
PROXY_START_TIMEOUT=30
# SIGTERM lets in-flight replies finish within listen.shutdown_timeout (10 s by default).
PROXY_STOP_TIMEOUT=15

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

proxy_pid() {
    live_pid "$PROXY_PID_FILE" redisforge-proxy
}

proxy_pong() {
    [ "$(timeout 3 redis-cli -h "$PROXY_HOST" -p "$PROXY_PORT" ping 2>/dev/null)" = PONG ]
}

step_deps() {
    ensure_redis_installed
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo is required to build the proxy (https://rustup.rs)" >&2
        return 1
    fi
}

step_build() {
    echo "==> building release binaries"
    cargo build --release --locked --workspace --bins
}

step_cluster() {
    echo "==> cluster on 127.0.0.1:$CLUSTER_BASE_PORT-$CLUSTER_LAST_PORT"
    if ! cluster_running "$CLUSTER_DIR"; then
        # A proxy left from before would point at a cluster about to be recreated.
        stop_pid_file "$PROXY_PID_FILE" redisforge-proxy "$PROXY_STOP_TIMEOUT"
    fi
    cluster_start "$CLUSTER_DIR" "$CLUSTER_BASE_PORT" "$CLUSTER_MASTERS" "$CLUSTER_REPLICAS"
}

step_config() {
    local seeds=() port
    while read -r port; do
        seeds+=("\"127.0.0.1:$port\"")
    done < <(cluster_ports "$CLUSTER_DIR")
    mkdir -p "$LOCAL_DIR"
    cat >"$PROXY_CONFIG" <<EOF
# Written by scripts/start-local.sh; rewritten on every start of the proxy.
# No [tls] and no [auth]: allowed because every listener binds loopback.

[listen]
plain = "$PROXY_HOST:$PROXY_PORT"

[upstream]
seeds = [$(
        IFS=,
        echo "${seeds[*]}"
    )]

[metrics]
listen = ""

[log]
format = "text"
level = "info"
EOF
    "$PROXY_BIN" --config "$PROXY_CONFIG" --check
}

step_proxy() {
    if proxy_pid >/dev/null; then
        if proxy_pong; then
            echo "==> proxy already running (pid $(proxy_pid))"
            return 0
        fi
        echo "==> the proxy (pid $(proxy_pid)) does not answer PING; restarting it"
        stop_pid_file "$PROXY_PID_FILE" redisforge-proxy "$PROXY_STOP_TIMEOUT"
    fi
    if port_open "$PROXY_HOST" "$PROXY_PORT"; then
        echo "$PROXY_HOST:$PROXY_PORT is already in use by a process this script did not start" >&2
        return 1
    fi
    # Room for max_clients (10000 by default) client sockets plus the upstream ones.
    local hard
    hard=$(ulimit -Hn)
    if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
    ulimit -n "$hard" 2>/dev/null || true

    echo "==> starting redisforge-proxy on $PROXY_HOST:$PROXY_PORT"
    echo "=== $(date '+%F %T') start-local.sh: $PROXY_BIN --config $PROXY_CONFIG" >>"$PROXY_LOG"
    # setsid: detached from this terminal, so closing it does not stop the proxy.
    setsid nohup "$PROXY_BIN" --config "$PROXY_CONFIG" >>"$PROXY_LOG" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$PROXY_PID_FILE"
    local deadline=$((SECONDS + PROXY_START_TIMEOUT))
    until proxy_pong; do
        if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            if kill -0 "$pid" 2>/dev/null; then
                echo "the proxy does not answer PING on $PROXY_HOST:$PROXY_PORT after ${PROXY_START_TIMEOUT}s" >&2
                stop_pid_file "$PROXY_PID_FILE" redisforge-proxy "$PROXY_STOP_TIMEOUT"
            else
                echo "the proxy exited during startup" >&2
                rm -f "$PROXY_PID_FILE"
            fi
            echo "---- $PROXY_LOG (last 30 lines)" >&2
            tail -n 30 "$PROXY_LOG" >&2
            exit 1
        fi
        sleep 0.2
    done
}

step_summary() {
    cat <<EOF

RedisForge is running locally.
  connect:  redis-cli -p $PROXY_PORT
  proxy:    pid $(proxy_pid), config $PROXY_CONFIG
            log $PROXY_LOG
  cluster:  $CLUSTER_MASTERS masters + $((CLUSTER_MASTERS * CLUSTER_REPLICAS)) replicas on 127.0.0.1:$CLUSTER_BASE_PORT-$CLUSTER_LAST_PORT
            logs $CLUSTER_DIR/<port>/redis.log
  stop:     scripts/start-local.sh --down
EOF
}

# Everything already up: print the connection line (and whether the binary is newer).
print_reused() {
    local pid started built
    pid=$(proxy_pid)
    echo "RedisForge is already running (proxy pid $pid, cluster 127.0.0.1:$CLUSTER_BASE_PORT-$CLUSTER_LAST_PORT)."
    echo "  connect:  redis-cli -p $PROXY_PORT"
    echo "  stop:     scripts/start-local.sh --down"
    started=$(($(date +%s) - $(ps -o etimes= -p "$pid" | tr -d ' ')))
    built=$(stat -c %Y "$PROXY_BIN" 2>/dev/null || echo 0)
    if [ "$built" -gt "$started" ]; then
        echo "  note:     $PROXY_BIN is newer than the running proxy; --down and start again to use it"
    fi
}

down() {
    local stopped=0
    if proxy_pid >/dev/null; then
        echo "==> stopping redisforge-proxy (pid $(proxy_pid))"
        stopped=1
    fi
    stop_pid_file "$PROXY_PID_FILE" redisforge-proxy "$PROXY_STOP_TIMEOUT"
    if [ -s "$CLUSTER_DIR/ports" ]; then
        echo "==> stopping the cluster in $CLUSTER_DIR"
        stopped=1
    fi
    cluster_stop "$CLUSTER_DIR"
    if [ "$stopped" -eq 0 ]; then
        echo "nothing was running"
    else
        echo "stopped (logs kept in $LOCAL_DIR)"
    fi
}

main() {
    case "${1:-}" in
        "") ;;
        --down)
            down
            return 0
            ;;
        -h | --help)
            usage
            return 0
            ;;
        *)
            usage >&2
            return 2
            ;;
    esac
    if proxy_pid >/dev/null && cluster_running "$CLUSTER_DIR" && proxy_pong; then
        print_reused
        return 0
    fi
    local step
    for step in "${STEPS[@]}"; do
        "step_$step"
    done
}

main "$@"
