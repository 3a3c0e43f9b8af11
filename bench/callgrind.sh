#!/usr/bin/env bash
# Instructions per request of redisforge-proxy and of predixy, counted by valgrind's callgrind
# under the same load. Instruction counts do not depend on how busy the machine is, so they
# compare two proxies (or two builds) on a shared machine where ops/s and CPU time are noisy.
#
#   bench/callgrind.sh [--proxy BINARY] [--no-predixy] [--keep]
#   PIPE=16 bench/callgrind.sh ...      the GET run with -P 16
#   PIPE=16 PIPE_ALL=1 bench/callgrind.sh   the SET run with -P 16 too: every request pipelined
#   MULTI=1 bench/callgrind.sh ...      multi-key requests over slots instead: 5,000 MSETs and
#                                       5,000 MGETs of 10 random keys each (the proxy splits them)
#   CALLGRIND_OPTS='--dump-instr=yes' bench/callgrind.sh --keep ...
#                                       extra valgrind options (here: counts per instruction, for
#                                       callgrind_annotate or kcachegrind on the kept output)
#   TLS=1 bench/callgrind.sh ...        through the proxy's TLS listener (redisforge-proxy only:
#                                       predixy has no TLS); certificates from redisforge-ops certs
#                                       generate (cargo build --release -p redisforge-ops). The
#                                       client connections' handshakes (22: 2 × 10 clients and
#                                       redis-benchmark's CONFIG GET probe) are in the load run; the
#                                       idle run makes as many (one PING each), so (total - idle)
#                                       leaves them out
#   UPSTREAM_TLS=1 bench/callgrind.sh ... the cluster's nodes TLS only (scripts/lib/cluster.sh's
#                                       CLUSTER_TLS) and the proxy's node connections over TLS
#                                       (`upstream.tls`); with TLS=1 too, TLS on both sides.
#                                       redisforge-proxy only; the node connections' handshakes
#                                       are in both runs alike
#
#   --proxy BINARY   the redisforge-proxy to measure (default target/release/redisforge-proxy;
#                    build it with cargo build --release -p redisforge-proxy)
#   --no-predixy     measure redisforge-proxy only
#   --keep           keep the temp dir: callgrind.*.out for callgrind_annotate, configs, logs
#
# A 3 masters + 3 replicas cluster (scripts/lib/cluster.sh, 127.0.0.1:7830-7835, BENCH_CG_BASE
# moves it) is started in a temp dir. Then, one proxy at a time, each on a free port from 7930 up
# (BENCH_CG_PORT moves it) and each after a FLUSHALL of the masters, so both see the same data:
#   - valgrind --tool=callgrind redisforge-proxy, config: [runtime] worker_threads = 1, [log]
#     level = "warn", a plain listener, the cluster's nodes as seeds, metrics off;
#   - valgrind --tool=callgrind predixy, when built (bench/predixy.sh), config from
#     bench/predixy.sh conf (WorkerThreads 1);
# each under the load
#   redis-benchmark -t set -n 10000 -c 10 -r 10000 -d 64
#   redis-benchmark -t get -n 20000 -c 10 -r 10000 -d 64 [-P 16 with PIPE=16]
# and then stopped with SIGTERM, when callgrind writes its counts. Printed per proxy: total
# instructions (Ir, all threads) and total / 30000 requests. The total includes start-up, topology
# reads, shutdown and redis-benchmark's CONFIG GET probes, so it overstates the per-request cost a
# little, most with PIPE=16 where requests are cheap; each proxy is therefore also run once idle
# (start, one PING, stop) and (total - idle) / 30000 is printed too. Every process started here is
# stopped by its pid on exit; every wait is bounded (BENCH_CG_TIMEOUT s per redis-benchmark run,
# default 600; 120 s for a start or a stop under valgrind).

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"

PROXY_BIN=$ROOT/target/release/redisforge-proxy
BASE=${BENCH_CG_BASE:-7830}
NEXT_PORT=${BENCH_CG_PORT:-7930}
RUN_TIMEOUT=${BENCH_CG_TIMEOUT:-600}
PIPE=${PIPE:-}
TLS=${TLS:-}
UPSTREAM_TLS=${UPSTREAM_TLS:-}
OPS_BIN=$ROOT/target/release/redisforge-ops
WITH_PREDIXY=1
KEEP=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        --proxy) PROXY_BIN="$2"; shift 2 ;;
        --no-predixy) WITH_PREDIXY=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "callgrind: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -x "$PROXY_BIN" ] || {
    echo "callgrind: $PROXY_BIN is not an executable (cargo build --release -p redisforge-proxy)" >&2
    exit 2
}
if [ -n "$PIPE" ] && ! [[ "$PIPE" =~ ^[1-9][0-9]*$ ]]; then
    echo "callgrind: PIPE must be a positive number (the -P of the GET run)" >&2
    exit 2
fi
PREDIXY=""
CLIENT_TLS=()
if [ -n "$TLS$UPSTREAM_TLS" ]; then
    WITH_PREDIXY=0
    [ -x "$OPS_BIN" ] || {
        echo "callgrind: TLS=1 and UPSTREAM_TLS=1 need $OPS_BIN (cargo build --release -p redisforge-ops)" >&2
        exit 2
    }
fi
if [ "$WITH_PREDIXY" -eq 1 ]; then
    if ! PREDIXY=$("$ROOT/bench/predixy.sh" path 2>/dev/null); then
        PREDIXY=""
        echo "callgrind: predixy skipped: predixy is not built (PREDIXY_SRC=DIR bench/predixy.sh build; see bench/predixy.sh --help)" >&2
    fi
fi
ensure_redis_installed
if ! command -v valgrind >/dev/null 2>&1; then
    cluster_log "installing valgrind"
    cluster_apt_install valgrind
fi

SET_RUN=(-t set -n 10000 -c 10 -r 10000 -d 64)
GET_RUN=(-t get -n 20000 -c 10 -r 10000 -d 64)
[ -z "$PIPE" ] || GET_RUN+=(-P "$PIPE")
[ -z "$PIPE" ] || [ -z "${PIPE_ALL:-}" ] || SET_RUN+=(-P "$PIPE")
REQUESTS=30000
if [ -n "${MULTI:-}" ]; then
    # redis-benchmark's MSET writes 10 keys; MGET is a custom command, each __rand_int__ drawn
    # on its own.
    SET_RUN=(-t mset -n 5000 -c 10 -r 10000 -d 64)
    mapfile -t GET_RUN < <(printf '%s\n' -n 5000 -c 10 -r 10000 MGET; printf 'key:__rand_int__\n%.0s' {1..10})
    [ -z "$PIPE" ] || GET_RUN=(-P "$PIPE" "${GET_RUN[@]}")
    REQUESTS=10000
fi

WORK=$(mktemp -d /tmp/redisforge-callgrind.XXXXXX)
VG_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    if [ -n "$VG_PID" ]; then
        kill -TERM "$VG_PID" 2>/dev/null
        wait_exit "$VG_PID" 30 || kill -KILL "$VG_PID" 2>/dev/null
    fi
    cluster_stop "$WORK/cluster"
    if [ "$KEEP" -eq 1 ] || [ "$rc" -ne 0 ]; then
        echo "callgrind: configs, logs and callgrind output kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# wait_exit PID TIMEOUT_S: 0 once PID (a child of this shell) has exited, 1 after TIMEOUT_S.
wait_exit() {
    local pid="$1" deadline=$((SECONDS + $2)) state
    while :; do
        state=$(sed 's/.*) \([A-Z]\).*/\1/' "/proc/$pid/stat" 2>/dev/null) || state=""
        if [ -z "$state" ] || [ "$state" = Z ]; then
            wait "$pid" 2>/dev/null || true
            return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# Sets PORT to the next port from NEXT_PORT on that nothing listens on.
pick_port() {
    while port_open 127.0.0.1 "$NEXT_PORT"; do
        NEXT_PORT=$((NEXT_PORT + 1))
    done
    PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
}

bench() {
    # --csv before the workload: after a custom command (MGET ...) it would be one of its arguments.
    timeout -k 5 "$RUN_TIMEOUT" redis-benchmark --csv -h 127.0.0.1 -p "$PORT" "${CLIENT_TLS[@]}" "$@" 2>>"$WORK/benchmark.err" |
        tail -n 1 | cut -d, -f2 | tr -d '"'
}

if [ -n "$TLS$UPSTREAM_TLS" ]; then
    "$OPS_BIN" certs generate "$WORK/certs" --hosts localhost,127.0.0.1 >"$WORK/certs.log" 2>&1 || {
        cat "$WORK/certs.log" >&2
        exit 1
    }
fi
[ -z "$TLS" ] || CLIENT_TLS=(--tls --cacert "$WORK/certs/ca.crt")
[ -z "$UPSTREAM_TLS" ] || export CLUSTER_TLS="$WORK/certs"
cluster_start "$WORK/cluster" "$BASE" 3 1 'save ""' 'appendonly no' 'auto-aof-rewrite-percentage 0' >&2
mapfile -t NODES < <(cluster_ports "$WORK/cluster")

# measure NAME MODE: callgrind one proxy; MODE load = under the load (appends a line to
# $WORK/results), idle = start, one PING, stop (appends a line to $WORK/idle).
measure() {
    local name="$1" mode="$2" out="$WORK/callgrind.$1.$2.out" cmd=()
    local node
    for node in "${NODES[@]}"; do
        # Replicas answer READONLY; the masters are what counts.
        cluster_cli 5 -h 127.0.0.1 -p "$node" flushall >/dev/null 2>&1 || true
    done
    pick_port
    case "$name" in
        redisforge)
            local seeds
            seeds=$(printf '"127.0.0.1:%s",' "${NODES[@]}")
            local listen="plain = \"127.0.0.1:$PORT\""
            [ -z "$TLS" ] || listen="tls = \"127.0.0.1:$PORT\""$'\n'"[tls]"$'\n'"cert = \"$WORK/certs/server.crt\""$'\n'"key = \"$WORK/certs/server.key\""
            local upstream_tls=""
            [ -z "$UPSTREAM_TLS" ] || upstream_tls="tls = true"$'\n'"ca = \"$WORK/certs/ca.crt\""
            cat >"$WORK/redisforge.toml" <<EOF
[listen]
$listen
[upstream]
seeds = [${seeds%,}]
$upstream_tls
[metrics]
listen = ""
[log]
level = "warn"
[runtime]
worker_threads = 1
EOF
            "$PROXY_BIN" --config "$WORK/redisforge.toml" --check >/dev/null
            cmd=("$PROXY_BIN" --config "$WORK/redisforge.toml")
            ;;
        predixy)
            PREDIXY_THREADS=1 "$ROOT/bench/predixy.sh" conf "$PORT" "${NODES[@]}" >"$WORK/predixy.conf"
            cmd=("$PREDIXY" "$WORK/predixy.conf")
            ;;
    esac
    echo "callgrind: $name ($mode) on 127.0.0.1:$PORT under valgrind --tool=callgrind" >&2
    # shellcheck disable=SC2086 # CALLGRIND_OPTS is a list of options
    valgrind --tool=callgrind ${CALLGRIND_OPTS:-} --callgrind-out-file="$out" "${cmd[@]}" >"$WORK/$name.$mode.log" 2>&1 </dev/null &
    VG_PID=$!
    # Start-up under valgrind is slow (tens of times slower than native).
    if ! wait_port 127.0.0.1 "$PORT" 120; then
        tail -n 30 "$WORK/$name.$mode.log" >&2
        echo "callgrind: $name did not listen on $PORT within 120 s" >&2
        exit 1
    fi
    local t0=$SECONDS set_rps="" get_rps="" secs
    if [ "$mode" = load ]; then
        set_rps=$(bench "${SET_RUN[@]}") || true
        [ -z "$set_rps" ] || get_rps=$(bench "${GET_RUN[@]}") || true
        if [ -z "$set_rps" ] || [ -z "$get_rps" ]; then
            tail -n 30 "$WORK/$name.$mode.log" "$WORK/benchmark.err" >&2
            echo "callgrind: a redis-benchmark run through $name failed or timed out" >&2
            exit 1
        fi
    else
        local pings=1 i
        [ -z "$TLS" ] || pings=22
        for ((i = 0; i < pings; i++)); do
            if [ "$(timeout 30 redis-cli -h 127.0.0.1 -p "$PORT" "${CLIENT_TLS[@]}" ping 2>/dev/null)" != PONG ]; then
                tail -n 30 "$WORK/$name.$mode.log" >&2
                echo "callgrind: $name did not answer PING" >&2
                exit 1
            fi
        done
    fi
    secs=$((SECONDS - t0))
    kill -TERM "$VG_PID"
    if ! wait_exit "$VG_PID" 120; then
        echo "callgrind: $name still running 120 s after SIGTERM; killed, no counts" >&2
        kill -KILL "$VG_PID" 2>/dev/null || true
        exit 1
    fi
    VG_PID=""
    # One file unless callgrind split it (threads, dumps): sum their totals.
    local total
    total=$(cat "$out"* 2>/dev/null | awk '/^totals:/ { s += $2; n++ } END { if (n) printf "%d", s }')
    if [ -z "$total" ]; then
        total=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$WORK/$name.$mode.log" | tail -n 1)
    fi
    [ -n "$total" ] || { tail -n 30 "$WORK/$name.$mode.log" >&2; echo "callgrind: no counts for $name" >&2; exit 1; }
    if [ "$mode" = load ]; then
        echo "$name|$total|$set_rps|$get_rps|$secs" >>"$WORK/results"
    else
        echo "$name|$total" >>"$WORK/idle"
    fi
}

NAMES=(redisforge)
[ -z "$PREDIXY" ] || NAMES+=(predixy)
for name in "${NAMES[@]}"; do
    measure "$name" load
done
for name in "${NAMES[@]}"; do
    measure "$name" idle
done

echo
echo "callgrind: instructions (Ir) of the whole process, start-up and shutdown included"
echo "load: redis-benchmark ${SET_RUN[*]}; redis-benchmark ${GET_RUN[*]} ($REQUESTS requests)"
echo "redisforge-proxy: $PROXY_BIN"
[ -z "$PREDIXY" ] || echo "predixy: $PREDIXY ($(cat "$(dirname "$(dirname "$PREDIXY")")/SOURCE" 2>/dev/null || echo unknown commit))"
while IFS='|' read -r name total set_rps get_rps secs; do
    idle=$(awk -F'|' -v n="$name" '$1 == n { print $2 }' "$WORK/idle")
    printf '  %-11s %13s instructions  %7.0f instructions/request (start-up included)  [under valgrind: SET %s, GET %s ops/s, %ss]\n' \
        "$name" "$total" "$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN { print t / n }')" "$set_rps" "$get_rps" "$secs"
    printf '  %-11s %13s instructions in an idle run (start, 1 PING, stop); without them: %7.0f instructions/request\n' \
        "" "$idle" "$(awk -v t="$total" -v i="$idle" -v n="$REQUESTS" 'BEGIN { print (t - i) / n }')"
done <"$WORK/results"
