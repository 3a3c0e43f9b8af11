#!/usr/bin/env bash
# Two proxy builds on one workload, run in ABBA order, for changes of a few per cent that
# bench/ab.sh's fixed order within a round cannot separate from the position effect (on this
# machine the second run of a pair is often faster: bench/RESULTS.md).
#
#   bench/abba.sh [--pairs N] A_BINARY B_BINARY [redis-benchmark args]
#
#   --pairs N   ABBA blocks (default 4): 2N runs of each build
#   redis-benchmark args default to `-t get -n 1000000 -c 50 -r 100000 -d 64 -P 16`
#   B_BINARY may be the word `predixy`: the peer built by bench/predixy.sh (one worker thread),
#               for a ratio to predixy without bench/ab.sh's fixed order (predixy last)
#
# Both proxies ([runtime] worker_threads = 1, plain listener) run side by side in front of one
# 3 masters + 3 replicas cluster (127.0.0.1:7860-7865, BENCH_ABBA_BASE moves it; proxies on the
# next free ports from 7960), each idle while the other is measured. Prints every run's ops/s,
# each build's median, the median of the per-block ratios B/A (each block's two B runs over its
# two A runs), and each build's median CPU µs per request (user + system time of its process
# over the run, from /proc/PID/stat). Every process started is stopped by its pid on exit;
# every run is bounded (240 s).

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"
# shellcheck source=bench/proxy-config.sh
source "$ROOT/bench/proxy-config.sh"

PAIRS=4
BASE=${BENCH_ABBA_BASE:-7860}
B_IS_PREDIXY=0
if [ "${1:-}" = --pairs ]; then
    PAIRS=$2
    shift 2
fi
[ "$#" -ge 2 ] || { sed -n '2,19p' "$0"; exit 2; }
A_BIN=$1 B_BIN=$2
shift 2
if [ "$B_BIN" = predixy ]; then
    B_BIN=$("$ROOT/bench/predixy.sh" path) || { echo "abba: predixy is not built (see bench/predixy.sh --help)" >&2; exit 2; }
    B_IS_PREDIXY=1
fi
[ -x "$A_BIN" ] && [ -x "$B_BIN" ] || { echo "abba: both binaries must be executables" >&2; exit 2; }
LOAD=("$@")
[ "${#LOAD[@]}" -gt 0 ] || LOAD=(-t get -n 1000000 -c 50 -r 100000 -d 64 -P 16)
ensure_redis_installed

WORK=$(mktemp -d /tmp/redisforge-abba.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    cluster_stop "$WORK/cluster" || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
cluster_start "$WORK/cluster" "$BASE" 3 1 'save ""' 'appendonly no' >&2

free_port() {
    local port=$1
    while port_open 127.0.0.1 "$port" || port_open 127.0.0.1 $((port + 100)); do
        port=$((port + 1))
    done
    echo "$port"
}

start_proxy() {
    local bin=$1 port=$2
    if [ "$bin" = "$B_BIN" ] && [ "$B_IS_PREDIXY" -eq 1 ]; then
        "$ROOT/bench/predixy.sh" conf "$port" $(seq "$BASE" $((BASE + 5))) >"$WORK/$port.conf"
        "$bin" "$WORK/$port.conf" >"$WORK/$port.log" 2>&1 &
        PIDS+=("$!")
        wait_answer "$bin" "$port"
        return
    fi
    bench_proxy_config "$port" "$BASE" >"$WORK/$port.toml"
    "$bin" --config "$WORK/$port.toml" >"$WORK/$port.log" 2>&1 &
    PIDS+=("$!")
    wait_answer "$bin" "$port"
}

wait_answer() {
    for _ in $(seq 100); do
        redis-cli -p "$2" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    echo "abba: $1 did not answer on $2" >&2
    exit 1
}

A_PORT=$(free_port 7960)
start_proxy "$A_BIN" "$A_PORT"
B_PORT=$(free_port $((A_PORT + 1)))
start_proxy "$B_BIN" "$B_PORT"
# Keys exist for GETs; both proxies warm.
for port in "$A_PORT" "$B_PORT"; do
    timeout 240 redis-benchmark -p "$port" -t set -n 100000 -c 50 -r 100000 -d 64 -P 16 -q >/dev/null
done

declare -A PID_OF
PID_OF[$A_PORT]=${PIDS[0]}
PID_OF[$B_PORT]=${PIDS[1]}
REQUESTS=$(printf '%s\n' "${LOAD[@]}" | awk 'prev == "-n" { print; exit } { prev = $0 }')
REQUESTS=${REQUESTS:-100000}
CPU_A=() CPU_B=()

ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# One run against the proxy on port $1: prints its ops/s; appends its CPU µs per request (from
# /proc/PID/stat, user + system) to CPU_A or CPU_B ($2).
run() {
    local pid=${PID_OF[$1]} before after
    before=$(ticks "$pid")
    timeout 240 redis-benchmark --csv -p "$1" "${LOAD[@]}" 2>/dev/null | grep -v '^"test"' | tail -n 1 | cut -d, -f2 | tr -d '"' >"$WORK/ops"
    after=$(ticks "$pid")
    local cpu
    cpu=$(awk -v t=$((after - before)) -v n="$REQUESTS" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
    if [ "$2" = A ]; then CPU_A+=("$cpu"); else CPU_B+=("$cpu"); fi
    cat "$WORK/ops"
}

echo "abba: ${LOAD[*]}; A=$A_BIN B=$B_BIN; $PAIRS ABBA blocks"
A_ALL=() B_ALL=() RATIOS=()
for block in $(seq "$PAIRS"); do
    run "$A_PORT" A >"$WORK/a1"
    run "$B_PORT" B >"$WORK/b1"
    run "$B_PORT" B >"$WORK/b2"
    run "$A_PORT" A >"$WORK/a2"
    a1=$(cat "$WORK/a1") b1=$(cat "$WORK/b1") b2=$(cat "$WORK/b2") a2=$(cat "$WORK/a2")
    A_ALL+=("$a1" "$a2") B_ALL+=("$b1" "$b2")
    ratio=$(awk -v a="$a1" -v b="$a2" -v c="$b1" -v d="$b2" 'BEGIN { printf "%.3f", (c + d) / (a + b) }')
    RATIOS+=("$ratio")
    echo "  block $block: A $a1 $a2  B $b1 $b2  B/A $ratio"
done
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo "  A median $(median "${A_ALL[@]}") ops/s, B median $(median "${B_ALL[@]}") ops/s, B/A per block: median $(median "${RATIOS[@]}")"
echo "  CPU µs per request (the proxy process, user + system): A median $(median "${CPU_A[@]}"), B median $(median "${CPU_B[@]}")"
