#!/usr/bin/env bash
# A/B comparison of proxy builds or settings, alternating in every round, against the same cluster.
#
#   bench/ab.sh [--rounds N] [--no-predixy] [--quick] NAME=BINARY[@SETTING] ... [predixy]
#
#   NAME=BINARY                 a redisforge-proxy binary to compare (copy builds aside first:
#                               cp target/release/redisforge-proxy /tmp/proxy-before), run with
#                               [runtime] worker_threads = 1, as predixy runs with WorkerThreads 1
#   NAME=BINARY@SETTING         the same with one setting more: SECTION.KEY=VALUE, or KEY=VALUE for
#                               the [upstream] section, e.g.
#                               c1=target/release/redisforge-proxy@connections_per_node=1
#                               w2=target/release/redisforge-proxy@runtime.worker_threads=2
#   --quick                     GET and SET only (no MSET/MGET rows)
#   --rounds N                  rounds (default 3); medians are over rounds
#   predixy                     where the predixy row runs in a round (default: after the NAMEs)
#   --no-predixy                leave out the predixy row
#   --syscalls                  also count each proxy's socket syscalls per request (writes:
#                               write + writev + sendto; reads: read + recvfrom; epoll_wait), with perf's
#                               syscall tracepoints (Debian's linux-perf, run as root); printed as
#                               `sys w/r/e`. Tells a change that moves kernel work (batching)
#                               from one that moves only user space.
#
# When predixy has been built (bench/predixy.sh path), every round also runs a `predixy` row:
# predixy (C++, a benchmark peer only) with WorkerThreads 1 in front of the same cluster (config
# from bench/predixy.sh conf). Without the binary, one line says the row is skipped. The name
# predixy is reserved for that row.
#
# The cluster (3 masters + 3 replicas on 127.0.0.1:7800-7805, BENCH_AB_BASE moves it) is started in
# a temp dir and stopped on exit, as is every proxy (ports 7890 and up). Each round runs direct
# (redis-benchmark --cluster) and then every NAME in order, on six workloads: GET and SET, 50
# clients, without pipelining and with -P 16; MSET and MGET of 10 random keys (keys of different
# slots, split by the proxy; direct cannot send them and has no row). It prints ops/s, the ratio
# to direct and to predixy, the proxy's CPU µs per request (from /proc/PID/stat), and the
# cluster's: all six nodes' CPU µs per request together (`nodes`), which is higher when a proxy
# sends the nodes smaller batches (more reads and writes on the nodes for the same requests).
# Faster than bench/run.sh, for deciding between two builds; bench/run.sh remains the measurement
# of record. The raw results of the last run are kept in /tmp/redisforge-ab-results.last.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"
# shellcheck source=bench/proxy-config.sh
source "$ROOT/bench/proxy-config.sh"

ROUNDS=3
QUICK=0
BASE=${BENCH_AB_BASE:-7800}
PORT=7890
NAMES=()
declare -A BINS EXTRAS
PREDIXY=auto
SYSCALLS=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --no-predixy) PREDIXY=""; shift ;;
        --quick) QUICK=1; shift ;;
        --syscalls) SYSCALLS=1; shift ;;
        -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
        predixy) NAMES+=(predixy); shift ;;
        *=*)
            name=${1%%=*} spec=${1#*=}
            [ "$name" != predixy ] || { echo "ab: the name predixy is reserved for the predixy row" >&2; exit 2; }
            NAMES+=("$name")
            BINS[$name]=${spec%%@*}
            EXTRAS[$name]=""
            [[ "$spec" != *@* ]] || EXTRAS[$name]=${spec#*@}
            [ -x "${BINS[$name]}" ] || { echo "ab: ${BINS[$name]} is not an executable" >&2; exit 2; }
            shift ;;
        *) echo "ab: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$PREDIXY" = auto ]; then
    if PREDIXY=$("$ROOT/bench/predixy.sh" path 2>/dev/null); then
        [[ " ${NAMES[*]} " == *" predixy "* ]] || NAMES+=(predixy)
    else
        PREDIXY=""
        echo "ab: predixy row skipped: predixy is not built (PREDIXY_SRC=DIR bench/predixy.sh build; see bench/predixy.sh --help)" >&2
    fi
fi
if [ -z "$PREDIXY" ]; then
    kept=()
    for name in "${NAMES[@]}"; do
        [ "$name" = predixy ] || kept+=("$name")
    done
    NAMES=("${kept[@]}")
fi
[ "${#NAMES[@]}" -gt 0 ] || { echo "ab: name at least one NAME=BINARY (see --help)" >&2; exit 2; }
[ "$SYSCALLS" -eq 0 ] || command -v perf >/dev/null || { echo "ab: --syscalls needs perf (apt-get install linux-perf)" >&2; exit 2; }
ensure_redis_installed

WORK=$(mktemp -d /tmp/redisforge-ab.XXXXXX)
PROXY_PID="" PERF_PID=""
cleanup() {
    [ -z "$PERF_PID" ] || kill "$PERF_PID" 2>/dev/null || true
    [ -z "$PROXY_PID" ] || kill "$PROXY_PID" 2>/dev/null || true
    cluster_stop "$WORK/cluster" || true
    # The raw results outlive the run: a report that fails can be made again from them.
    [ ! -f "$WORK/results" ] || cp "$WORK/results" /tmp/redisforge-ab-results.last
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
cluster_start "$WORK/cluster" "$BASE" 3 1 'save ""' 'appendonly no' 'auto-aof-rewrite-percentage 0' >&2

WORKLOADS=(
    "-t get -n 200000 -c 50 -r 100000 -d 64"
    "-t set -n 200000 -c 50 -r 100000 -d 64"
    "-t get -n 1000000 -c 50 -r 100000 -d 64 -P 16"
    "-t set -n 800000 -c 50 -r 100000 -d 64 -P 16"
)
# Multi-key rows: redis-benchmark's MSET writes 10 keys; MGET reads 10 (a custom command, each
# __rand_int__ drawn on its own), keys of different slots.
MGET_KEYS=$(printf ' key:__rand_int__%.0s' {1..10})
[ "$QUICK" -eq 1 ] || WORKLOADS+=(
    "-t mset -n 100000 -c 50 -r 100000 -d 64"
    "-n 100000 -c 50 -r 100000 MGET$MGET_KEYS"
)

# Whether direct (redis-benchmark --cluster) can run a workload: not multi-key commands over slots.
direct_can() {
    [[ "$1" != *"-t mset"* && "$1" != *MGET* ]]
}

# The config of proxy NAME on PORT: one worker, as predixy's row, and its SETTING if any.
proxy_config() {
    bench_proxy_config "$2" "$BASE" "${EXTRAS[$1]}"
}

# ops/s of one redis-benchmark run (bounded: 240 s): the rps field of its CSV result line; empty
# when the run printed none (its output is kept in $WORK/last-run.out). --csv goes first: after a
# custom command (MGET ...) it would be one of the command's arguments.
ops() {
    timeout 240 redis-benchmark --csv "$@" >"$WORK/last-run.out" 2>&1 || true
    { grep -v '^"test"' "$WORK/last-run.out" || true; } | { grep '^"' || true; } | tail -n 1 | cut -d, -f2 | tr -d '"'
}

ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# With --syscalls: starts counting process $1's socket syscalls (perf stat into $WORK/perf.out).
count_syscalls() {
    [ "$SYSCALLS" -eq 1 ] || return 0
    local events=syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto
    events+=,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait
    perf stat -x, -o "$WORK/perf.out" -p "$1" -e "$events" 2>/dev/null &
    PERF_PID=$!
    # Time for perf to attach to the process's threads.
    sleep 0.5
}

# With --syscalls: stops the count and sets COUNTED to "writes reads epoll_waits" (totals); empty
# when perf counted nothing or without --syscalls. Not for a subshell: it waits for perf, its child.
COUNTED=""
stop_counting() {
    COUNTED=""
    [ -n "$PERF_PID" ] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    [ -f "$WORK/perf.out" ] || return 0
    COUNTED=$(awk -F, '$1 ~ /^[0-9]+$/ { split($3, e, ":"); n[e[2]] = $1 }
        END { w = n["sys_enter_write"] + n["sys_enter_writev"] + n["sys_enter_sendto"]; r = n["sys_enter_read"] + n["sys_enter_recvfrom"]
              if (w + r > 0) printf "%d %d %d", w, r, n["sys_enter_epoll_wait"] }' "$WORK/perf.out")
    rm -f "$WORK/perf.out"
}

# CPU ticks of all the cluster's nodes together: a proxy that sends the nodes smaller batches makes
# them read and write more often, which costs the machine as much as the proxy's own CPU.
NODE_PIDS=()
for node_port in $(cluster_ports "$WORK/cluster"); do
    NODE_PIDS+=("$(live_pid "$WORK/cluster/$node_port/redis.pid" redis-server)")
done
node_ticks() {
    local pid sum=0
    for pid in "${NODE_PIDS[@]}"; do
        sum=$((sum + $(ticks "$pid")))
    done
    echo "$sum"
}

results="$WORK/results"
for ((round = 1; round <= ROUNDS; round++)); do
    for workload in "${WORKLOADS[@]}"; do
        direct_can "$workload" || continue
        nodes_before=$(node_ticks)
        # shellcheck disable=SC2086 # a workload is a list of flags
        rps=$(ops --cluster -p "$BASE" $workload)
        requests=$(grep -oP '(?<=-n )\d+' <<<"$workload")
        echo "direct|$workload|$rps||$requests|$((($(node_ticks) - nodes_before) * 1000000 / $(getconf CLK_TCK)))|" >>"$results"
    done
    for name in "${NAMES[@]}"; do
        PORT=$((PORT + 1))
        if [ "$name" = predixy ]; then
            # shellcheck disable=SC2046 # one argument per node port
            "$ROOT/bench/predixy.sh" conf "$PORT" $(cluster_ports "$WORK/cluster") >"$WORK/$name.conf"
            "$PREDIXY" "$WORK/$name.conf" >"$WORK/$name.log" 2>&1 &
        else
            proxy_config "$name" "$PORT" >"$WORK/$name.toml"
            "${BINS[$name]}" --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
        fi
        PROXY_PID=$!
        wait_port 127.0.0.1 "$PORT" 10 || { cat "$WORK/$name.log" >&2; exit 1; }
        redis-benchmark -p "$PORT" -q -t get -n 20000 -c 50 -r 100000 >/dev/null 2>&1
        for workload in "${WORKLOADS[@]}"; do
            count_syscalls "$PROXY_PID"
            before=$(ticks "$PROXY_PID") nodes_before=$(node_ticks)
            # shellcheck disable=SC2086
            rps=$(ops -p "$PORT" $workload)
            after=$(ticks "$PROXY_PID") nodes_after=$(node_ticks)
            stop_counting
            requests=$(grep -oP '(?<=-n )\d+' <<<"$workload")
            tick_us=$((1000000 / $(getconf CLK_TCK)))
            echo "$name|$workload|$rps|$(((after - before) * tick_us))|$requests|$(((nodes_after - nodes_before) * tick_us))|$COUNTED" >>"$results"
        done
        kill "$PROXY_PID"
        wait "$PROXY_PID" 2>/dev/null || true
        PROXY_PID=""
    done
    echo "ab: round $round of $ROUNDS done" >&2
done

python3 - "$results" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(list)
order = []
for line in open(sys.argv[1]):
    name, workload, rps, cpu_us, requests, nodes_us, syscalls = line.rstrip("\n").split("|")
    if (workload, name) not in runs:
        order.append((workload, name))
    cpu = float(cpu_us) / float(requests) if cpu_us else None
    nodes = float(nodes_us) / float(requests) if nodes_us else None
    if not rps:
        print(f"ab: no result for {name} on {workload}", file=sys.stderr)
        continue
    calls = [int(c) / float(requests) for c in syscalls.split()] if syscalls else None
    runs[(workload, name)].append((float(rps), cpu, nodes, calls))
workloads = list(dict.fromkeys(w for w, _ in order))
for workload in workloads:
    print(workload)
    def median_ops(name):
        rows = runs.get((workload, name))
        return statistics.median(r[0] for r in rows) if rows else None
    direct, predixy = median_ops("direct"), median_ops("predixy")
    for w, name in order:
        if w != workload:
            continue
        rps = median_ops(name)
        if rps is None:
            print(f"  {name:12} no result")
            continue
        cpus = [r[1] for r in runs[(w, name)] if r[1] is not None]
        cpu = f"{statistics.median(cpus):6.2f} µs/req" if cpus else "      —"
        node_cpus = [r[2] for r in runs[(w, name)] if r[2] is not None]
        nodes = f"{statistics.median(node_cpus):6.2f}" if node_cpus else "     —"
        vs_direct = f"{rps / direct:5.2f}× direct" if direct else "   — direct"
        vs_predixy = f"{rps / predixy:5.2f}× predixy" if predixy and name != "predixy" else ""
        counted = [r[3] for r in runs[(w, name)] if r[3] is not None]
        sys_calls = ""
        if counted:
            w_r_e = [statistics.median(c[i] for c in counted) for i in range(3)]
            sys_calls = "  sys w/r/e " + "/".join(f"{v:.2f}" for v in w_r_e)
        print(f"  {name:12} {rps:10.0f} ops/s  {vs_direct}  CPU {cpu}  nodes {nodes}{sys_calls}  {vs_predixy}  ({len(runs[(w, name)])} runs)")
EOF
