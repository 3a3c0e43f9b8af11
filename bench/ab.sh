#!/usr/bin/env bash
# A/B comparison of proxy builds or settings, alternating in every round, against the same cluster.
#
#   bench/ab.sh [--rounds N] [--no-predixy] NAME=BINARY[@UPSTREAM_LINE] ... [predixy]
#
#   NAME=BINARY                 a redisforge-proxy binary to compare (copy builds aside first:
#                               cp target/release/redisforge-proxy /tmp/proxy-before)
#   NAME=BINARY@UPSTREAM_LINE   the same with one more line in its [upstream] section, e.g.
#                               c1=target/release/redisforge-proxy@connections_per_node=1
#   --rounds N                  rounds (default 3); medians are over rounds
#   predixy                     where the predixy row runs in a round (default: after the NAMEs)
#   --no-predixy                leave out the predixy row
#
# When predixy has been built (bench/predixy.sh path), every round also runs a `predixy` row:
# predixy (C++, a benchmark peer only) with WorkerThreads 1 in front of the same cluster (config
# from bench/predixy.sh conf). Without the binary, one line says the row is skipped. The name
# predixy is reserved for that row.
#
# The cluster (3 masters + 3 replicas on 127.0.0.1:7800-7805, BENCH_AB_BASE moves it) is started in
# a temp dir and stopped on exit, as is every proxy (ports 7890 and up). Each round runs direct
# (redis-benchmark --cluster) and then every NAME in order, on four workloads: GET and SET, 50
# clients, without pipelining and with -P 16. It prints ops/s, the ratio to direct and the proxy's
# CPU µs per request (from /proc/PID/stat). Faster than bench/run.sh, for deciding between two
# builds; bench/run.sh remains the measurement of record.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"

ROUNDS=3
BASE=${BENCH_AB_BASE:-7800}
PORT=7890
NAMES=()
declare -A BINS EXTRAS
PREDIXY=auto
while [ "$#" -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --no-predixy) PREDIXY=""; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
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
ensure_redis_installed

WORK=$(mktemp -d /tmp/redisforge-ab.XXXXXX)
PROXY_PID=""
cleanup() {
    [ -z "$PROXY_PID" ] || kill "$PROXY_PID" 2>/dev/null || true
    cluster_stop "$WORK/cluster" || true
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

# ops/s of one redis-benchmark run (bounded: 240 s).
ops() {
    timeout 240 redis-benchmark "$@" --csv 2>/dev/null | tail -n 1 | cut -d, -f2 | tr -d '"'
}

ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

results="$WORK/results"
for ((round = 1; round <= ROUNDS; round++)); do
    for workload in "${WORKLOADS[@]}"; do
        # shellcheck disable=SC2086 # a workload is a list of flags
        echo "direct|$workload|$(ops --cluster -p "$BASE" $workload)||" >>"$results"
    done
    for name in "${NAMES[@]}"; do
        PORT=$((PORT + 1))
        if [ "$name" = predixy ]; then
            # shellcheck disable=SC2046 # one argument per node port
            "$ROOT/bench/predixy.sh" conf "$PORT" $(cluster_ports "$WORK/cluster") >"$WORK/$name.conf"
            "$PREDIXY" "$WORK/$name.conf" >"$WORK/$name.log" 2>&1 &
        else
            cat >"$WORK/$name.toml" <<EOF
[listen]
plain = "127.0.0.1:$PORT"
[metrics]
listen = "127.0.0.1:$((PORT + 100))"
[upstream]
seeds = ["127.0.0.1:$BASE"]
${EXTRAS[$name]}
[log]
level = "warn"
EOF
            "${BINS[$name]}" --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
        fi
        PROXY_PID=$!
        wait_port 127.0.0.1 "$PORT" 10 || { cat "$WORK/$name.log" >&2; exit 1; }
        redis-benchmark -p "$PORT" -q -t get -n 20000 -c 50 -r 100000 >/dev/null 2>&1
        for workload in "${WORKLOADS[@]}"; do
            before=$(ticks "$PROXY_PID")
            # shellcheck disable=SC2086
            rps=$(ops -p "$PORT" $workload)
            after=$(ticks "$PROXY_PID")
            requests=$(grep -oP '(?<=-n )\d+' <<<"$workload")
            echo "$name|$workload|$rps|$(((after - before) * 1000000 / $(getconf CLK_TCK)))|$requests" >>"$results"
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
    name, workload, rps, cpu_us, requests = line.rstrip("\n").split("|")
    if (workload, name) not in runs:
        order.append((workload, name))
    cpu = float(cpu_us) / float(requests) if requests else None
    runs[(workload, name)].append((float(rps or 0), cpu))
workloads = list(dict.fromkeys(w for w, _ in order))
for workload in workloads:
    print(workload)
    direct = statistics.median(r for r, _ in runs[(workload, "direct")])
    for w, name in order:
        if w != workload:
            continue
        rps = statistics.median(r for r, _ in runs[(w, name)])
        cpus = [c for _, c in runs[(w, name)] if c is not None]
        cpu = f"{statistics.median(cpus):6.2f} µs/req" if cpus else "      —"
        print(f"  {name:12} {rps:10.0f} ops/s  {rps / direct:5.2f}× direct  CPU {cpu}  ({len(runs[(w, name)])} runs)")
EOF
