#!/usr/bin/env bash
# Start everything locally: a Redis Cluster of 3 masters + 3 replicas on 127.0.0.1:7000-7005 and
# redisforge-proxy in front of it, with TLS on 127.0.0.1:6380 and plain RESP on 127.0.0.1:7379,
# a dev user (dev / dev-pass) and metrics on 127.0.0.1:9901, all in the background.
#
#   scripts/start-local.sh          build, start what is not running yet, print how to connect
#   scripts/start-local.sh --down   stop the proxy and the cluster this script started
#
# State lives in .local/ (git-ignored): cluster/<port>/ (redis.conf, redis.log, nodes.conf, pid),
# tls/ (dev CA and certificates, made once by `redisforge-ops certs generate`), users.acl (the dev
# user; edit it freely, it is never overwritten), redisforge.toml, proxy.pid, proxy.log. A second
# run reuses a healthy cluster, the certificates, the users and a live proxy. Only processes named
# in those pid files are ever stopped.
#
# Environment overrides (tests use them to run beside a developer's quick-start):
#   REDISFORGE_LOCAL_DIR     state directory (default .local in the repository)
#   REDISFORGE_BASE_PORT     first cluster port; the nodes use BASE..BASE+5 and +10000 (default 7000)
#   REDISFORGE_TLS_PORT      the proxy's TLS listener (default 6380)
#   REDISFORGE_PLAIN_PORT    the proxy's plain listener (default 7379)
#   REDISFORGE_METRICS_PORT  /metrics, /healthz, /readyz (default 9901)
#   REDISFORGE_BIN_DIR       where redisforge-proxy and redisforge-ops are (default target/release)
#   REDISFORGE_SKIP_BUILD=1  use the binaries in REDISFORGE_BIN_DIR as they are, no cargo build
# Relative paths are taken from the directory the script is started in.
#
# Each step is one `step_NAME` function, run in the order of STEPS; to add a step write its
# function and add its name to STEPS.
set -euo pipefail

CALLER_PWD=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"

STEPS=(deps build cluster certs users config proxy summary)

# An absolute path for $1, relative ones taken from where the script was started.
from_caller() {
    case "$1" in
        /*) echo "${1%/}" ;;
        *) echo "$CALLER_PWD/${1%/}" ;;
    esac
}

# $1 shortened to a path relative to the repository when it lies inside it (for printed lines).
show_path() {
    case "$1" in
        "$ROOT"/*) echo "${1#"$ROOT"/}" ;;
        *) echo "$1" ;;
    esac
}

# Fails with a message unless $2 is a TCP port number.
check_port_var() {
    if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then
        echo "$1 must be a port number, not '$2'" >&2
        exit 2
    fi
}

LOCAL_DIR=$(from_caller "${REDISFORGE_LOCAL_DIR:-$ROOT/.local}")
CLUSTER_DIR="$LOCAL_DIR/cluster"
CLUSTER_BASE_PORT=${REDISFORGE_BASE_PORT:-7000}
CLUSTER_MASTERS=3
CLUSTER_REPLICAS=1
PROXY_HOST=127.0.0.1
TLS_PORT=${REDISFORGE_TLS_PORT:-6380}
PLAIN_PORT=${REDISFORGE_PLAIN_PORT:-7379}
METRICS_PORT=${REDISFORGE_METRICS_PORT:-9901}
check_port_var REDISFORGE_BASE_PORT "$CLUSTER_BASE_PORT"
check_port_var REDISFORGE_TLS_PORT "$TLS_PORT"
check_port_var REDISFORGE_PLAIN_PORT "$PLAIN_PORT"
check_port_var REDISFORGE_METRICS_PORT "$METRICS_PORT"
CLUSTER_LAST_PORT=$((CLUSTER_BASE_PORT + CLUSTER_MASTERS * (1 + CLUSTER_REPLICAS) - 1))
BIN_DIR=$(from_caller "${REDISFORGE_BIN_DIR:-$ROOT/target/release}")
SKIP_BUILD=${REDISFORGE_SKIP_BUILD:-0}
PROXY_BIN="$BIN_DIR/redisforge-proxy"
OPS_BIN="$BIN_DIR/redisforge-ops"
TLS_DIR="$LOCAL_DIR/tls"
ACL_FILE="$LOCAL_DIR/users.acl"
DEV_USER=dev
DEV_PASS=dev-pass
PROXY_CONFIG="$LOCAL_DIR/redisforge.toml"
PROXY_PID_FILE="$LOCAL_DIR/proxy.pid"
PROXY_LOG="$LOCAL_DIR/proxy.log"
PROXY_START_TIMEOUT=30
# SIGTERM lets in-flight replies finish within listen.shutdown_timeout (10 s by default).
PROXY_STOP_TIMEOUT=15

usage() {
    sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

proxy_pid() {
    live_pid "$PROXY_PID_FILE" redisforge-proxy
}

# How to stop: --down needs the state directory when it is not the default one.
stop_line() {
    if [ "$LOCAL_DIR" = "$ROOT/.local" ]; then
        echo "scripts/start-local.sh --down"
    else
        echo "REDISFORGE_LOCAL_DIR=$LOCAL_DIR scripts/start-local.sh --down"
    fi
}

# The line printed for users; proxy_pong below is the same check.
connect_line() {
    echo "redis-cli --tls --cacert $(show_path "$TLS_DIR")/ca.crt -p $TLS_PORT --user $DEV_USER --pass $DEV_PASS"
}

proxy_pong() {
    [ "$(REDISCLI_AUTH=$DEV_PASS timeout 3 redis-cli --tls --cacert "$TLS_DIR/ca.crt" \
        -h "$PROXY_HOST" -p "$TLS_PORT" --user "$DEV_USER" ping 2>/dev/null)" = PONG ]
}

step_deps() {
    ensure_redis_installed
    if [ "$SKIP_BUILD" = 1 ]; then
        return 0
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo is required to build the proxy (https://rustup.rs)" >&2
        return 1
    fi
}

step_build() {
    if [ "$SKIP_BUILD" != 1 ]; then
        echo "==> building release binaries"
        cargo build --release --locked --workspace --bins
    fi
    local bin
    for bin in "$PROXY_BIN" "$OPS_BIN"; do
        if [ ! -x "$bin" ]; then
            echo "$bin is missing (build it, or point REDISFORGE_BIN_DIR at the binaries)" >&2
            return 1
        fi
    done
}

step_cluster() {
    echo "==> cluster on 127.0.0.1:$CLUSTER_BASE_PORT-$CLUSTER_LAST_PORT"
    if ! cluster_running "$CLUSTER_DIR"; then
        # A proxy left from before would point at a cluster about to be recreated.
        stop_pid_file "$PROXY_PID_FILE" redisforge-proxy "$PROXY_STOP_TIMEOUT"
    fi
    cluster_start "$CLUSTER_DIR" "$CLUSTER_BASE_PORT" "$CLUSTER_MASTERS" "$CLUSTER_REPLICAS"
}

# Dev CA, server certificate (localhost, 127.0.0.1) and client certificate, made once.
step_certs() {
    local files=("$TLS_DIR/ca.crt" "$TLS_DIR/server.crt" "$TLS_DIR/server.key") f complete=1
    for f in "${files[@]}"; do
        [ -s "$f" ] || complete=0
    done
    if [ "$complete" = 1 ]; then
        echo "==> reusing the dev certificates in $(show_path "$TLS_DIR")"
        return 0
    fi
    echo "==> dev certificates in $(show_path "$TLS_DIR")"
    # --force: a half-written set from an interrupted run is replaced whole.
    "$OPS_BIN" certs generate "$TLS_DIR" --hosts localhost,127.0.0.1 --force
}

# The proxy's client users; written once, then the developer's to edit (SIGHUP reloads it).
step_users() {
    if [ -s "$ACL_FILE" ]; then
        echo "==> reusing the users in $(show_path "$ACL_FILE")"
        return 0
    fi
    echo "==> dev user $DEV_USER in $(show_path "$ACL_FILE")"
    mkdir -p "$LOCAL_DIR"
    cat >"$ACL_FILE" <<EOF
# Client users of the local proxy, written once by scripts/start-local.sh; edit freely and apply
# with: kill -HUP \$(cat $(show_path "$PROXY_PID_FILE"))
# Redis ACL syntax; in production store #<sha256> hashes, never >plaintext (see config/users.acl).
user $DEV_USER on >$DEV_PASS ~* &* +@all
EOF
}

step_config() {
    local seeds=() port
    while read -r port; do
        seeds+=("\"127.0.0.1:$port\"")
    done < <(cluster_ports "$CLUSTER_DIR")
    mkdir -p "$LOCAL_DIR"
    cat >"$PROXY_CONFIG" <<EOF
# Written by scripts/start-local.sh; rewritten on every start of the proxy.

[listen]
tls = "$PROXY_HOST:$TLS_PORT"
plain = "$PROXY_HOST:$PLAIN_PORT"

[tls]
cert = "$TLS_DIR/server.crt"
key = "$TLS_DIR/server.key"

[upstream]
seeds = [$(
        IFS=,
        echo "${seeds[*]}"
    )]

# Clients log in (AUTH dev dev-pass) on both listeners, as they would in production.
[auth]
acl_file = "$ACL_FILE"

[metrics]
listen = "$PROXY_HOST:$METRICS_PORT"

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
        echo "==> the proxy (pid $(proxy_pid)) does not answer PING over TLS; restarting it"
        stop_pid_file "$PROXY_PID_FILE" redisforge-proxy "$PROXY_STOP_TIMEOUT"
    fi
    local port
    for port in "$TLS_PORT" "$PLAIN_PORT" "$METRICS_PORT"; do
        if port_open "$PROXY_HOST" "$port"; then
            echo "$PROXY_HOST:$port is already in use by a process this script did not start" \
                "(see REDISFORGE_*_PORT in scripts/start-local.sh --help)" >&2
            return 1
        fi
    done
    # Room for max_clients (10000 by default) client sockets plus the upstream ones.
    local hard
    hard=$(ulimit -Hn)
    if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
    ulimit -n "$hard" 2>/dev/null || true

    echo "==> starting redisforge-proxy: TLS $PROXY_HOST:$TLS_PORT, plain $PROXY_HOST:$PLAIN_PORT"
    echo "=== $(date '+%F %T') start-local.sh: $PROXY_BIN --config $PROXY_CONFIG" >>"$PROXY_LOG"
    # setsid: detached from this terminal, so closing it does not stop the proxy.
    setsid nohup "$PROXY_BIN" --config "$PROXY_CONFIG" >>"$PROXY_LOG" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$PROXY_PID_FILE"
    local deadline=$((SECONDS + PROXY_START_TIMEOUT))
    until proxy_pong; do
        if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            if kill -0 "$pid" 2>/dev/null; then
                echo "the proxy does not answer PING on $PROXY_HOST:$TLS_PORT (TLS, user $DEV_USER)" \
                    "after ${PROXY_START_TIMEOUT}s" >&2
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
  connect:  $(connect_line)
            redis-cli -p $PLAIN_PORT --user $DEV_USER --pass $DEV_PASS   (plain, no TLS)
  metrics:  http://$PROXY_HOST:$METRICS_PORT/metrics  (/healthz, /readyz)
  proxy:    pid $(proxy_pid), config $(show_path "$PROXY_CONFIG")
            log $(show_path "$PROXY_LOG"), users $(show_path "$ACL_FILE"), certificates $(show_path "$TLS_DIR")
  cluster:  $CLUSTER_MASTERS masters + $((CLUSTER_MASTERS * CLUSTER_REPLICAS)) replicas on 127.0.0.1:$CLUSTER_BASE_PORT-$CLUSTER_LAST_PORT
            logs $(show_path "$CLUSTER_DIR")/<port>/redis.log
  stop:     $(stop_line)
EOF
}

# Everything already up: print the connection line (and whether the binary is newer).
print_reused() {
    local pid started built
    pid=$(proxy_pid)
    echo "RedisForge is already running (proxy pid $pid, cluster 127.0.0.1:$CLUSTER_BASE_PORT-$CLUSTER_LAST_PORT)."
    echo "  connect:  $(connect_line)"
    echo "  stop:     $(stop_line)"
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
        echo "==> stopping the cluster in $(show_path "$CLUSTER_DIR")"
        stopped=1
    fi
    cluster_stop "$CLUSTER_DIR"
    if [ "$stopped" -eq 0 ]; then
        echo "nothing was running"
    else
        echo "stopped (logs, certificates and users kept in $(show_path "$LOCAL_DIR"))"
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
