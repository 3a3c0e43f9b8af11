#!/usr/bin/env bash
# Benchmark redisforge-proxy against the cluster behind it and against twemproxy (nutcracker).
#
#   bench/run.sh [--rounds N] [--quick] [--write] [--targets LIST] [--workloads LIST]
#                [--no-build] [--keep]
#
#   --rounds N        rounds over every (workload, target); medians are over rounds (default 3)
#   --quick           a tenth of the requests per run: a smoke test, not a measurement
#   --write           also write the table to bench/RESULTS.md (its "Latest run" section)
#   --targets LIST    comma-separated subset of: direct,proxy,proxy-tls,nutcracker,nutcracker-r,
#                     predixy (default all; predixy only when built with bench/predixy.sh, else
#                     skipped with a line saying so)
#   --workloads LIST  comma-separated subset of: set,get,set-p16,get-p16,mset,get-1c,get-1000c
#                     (default all)
#   --no-build        use target/release/redisforge-proxy as it is
#   --keep            keep the temp dir (configs, logs, raw results) and print its path
#
# Everything runs on 127.0.0.1 in a temp dir: a 3 masters + 3 replicas cluster on 7600-7605 (bus
# 17600-17605), the proxy on 7690 (plain) and, with proxy-tls, 7691 (TLS, same process), three
# standalone redis-servers on 7700-7702 and nutcracker on 7710 (stats 7711); for nutcracker-r three
# more on 7703-7705 with a replica each on 7706-7708, and nutcracker on 7712 (stats 7713). Ports can be moved with
# BENCH_CLUSTER_BASE, BENCH_PROXY_PORT, BENCH_PROXY_TLS_PORT, BENCH_STANDALONE_BASE,
# BENCH_NUTCRACKER_PORT. With predixy (a benchmark peer only, built by bench/predixy.sh), predixy on
# 7692 (BENCH_PREDIXY_PORT) in front of the same cluster as the proxy. Every process started here
# is stopped on exit, Ctrl-C or failure.
#
# A target is one `target_NAME` function (verbs: start, flags, pid, log, about); a workload is one
# `workload_NAME` function. Add one and name it in ALL_TARGETS / ALL_WORKLOADS.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"

ALL_TARGETS=(direct proxy proxy-tls nutcracker nutcracker-r predixy)
ALL_WORKLOADS=(set get set-p16 get-p16 mset get-1c get-1000c)

CLUSTER_BASE=${BENCH_CLUSTER_BASE:-7600}
PROXY_PORT=${BENCH_PROXY_PORT:-7690}
PROXY_TLS_PORT=${BENCH_PROXY_TLS_PORT:-7691}
PREDIXY_PORT=${BENCH_PREDIXY_PORT:-7692}
STANDALONE_BASE=${BENCH_STANDALONE_BASE:-7700}
NUTCRACKER_PORT=${BENCH_NUTCRACKER_PORT:-7710}
NUTCRACKER_STATS_PORT=$((NUTCRACKER_PORT + 1))
# nutcracker-r: a second nutcracker, in front of 3 more standalone servers that each have a replica.
NUTCRACKER_R_PORT=$((NUTCRACKER_PORT + 2))
NUTCRACKER_R_STATS_PORT=$((NUTCRACKER_PORT + 3))
PROXY_LOG_LEVEL=${BENCH_PROXY_LOG_LEVEL:-info}
# Upper bound on one redis-benchmark run; a run that hits it is recorded as "timeout".
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-240}
KEYSPACE=100000
VALUE_SIZE=64
PROXY_BIN="$ROOT/target/release/redisforge-proxy"
OPS_BIN="$ROOT/target/release/redisforge-ops"

ROUNDS=3
QUICK=0
WRITE=0
BUILD=1
KEEP=0
TARGETS=("${ALL_TARGETS[@]}")
WORKLOADS=("${ALL_WORKLOADS[@]}")
COMMAND_LINE="bench/run.sh${*:+ $*}"

usage() {
    sed -n '2,/^set /{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {
    echo "bench: $*" >&2
    exit 1
}

log() {
    echo "[bench $(date +%H:%M:%S)] $*" >&2
}

# "a,b" -> the words a b, each checked against the allowed list in $2 (space separated).
split_list() {
    local list="$1" allowed=" $2 " item out=()
    IFS=, read -r -a out <<<"$list"
    for item in "${out[@]}"; do
        case "$allowed" in
            *" $item "*) ;;
            *) die "unknown name '$item' (known: $2)" ;;
        esac
    done
    echo "${out[*]}"
}

parse_args() {
    while [ "$#" -gt 0 ]; do
        case "$1" in
            --rounds)
                if [ "$#" -lt 2 ] || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
                    die "--rounds needs a positive number"
                fi
                ROUNDS=$2
                shift
                ;;
            --quick) QUICK=1 ;;
            --write) WRITE=1 ;;
            --no-build) BUILD=0 ;;
            --keep) KEEP=1 ;;
            --targets)
                [ "$#" -ge 2 ] || die "--targets needs a list"
                read -r -a TARGETS <<<"$(split_list "$2" "${ALL_TARGETS[*]}")"
                shift
                ;;
            --workloads)
                [ "$#" -ge 2 ] || die "--workloads needs a list"
                read -r -a WORKLOADS <<<"$(split_list "$2" "${ALL_WORKLOADS[*]}")"
                shift
                ;;
            -h | --help)
                usage
                exit 0
                ;;
            *)
                usage >&2
                exit 2
                ;;
        esac
        shift
    done
    [ "${#TARGETS[@]}" -gt 0 ] || die "no targets"
    [ "${#WORKLOADS[@]}" -gt 0 ] || die "no workloads"
}

# ---------------------------------------------------------------------------------------------
# Processes and teardown

WORK=""
BENCH_OK=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    # A trap can fire inside a redirected command (a run's .csv/.err): back to the terminal.
    exec 1>&8 2>&9
    if [ -n "$WORK" ]; then
        log "tearing down"
        stop_pid_file "$WORK/proxy.pid" redisforge-proxy 15
        stop_pid_file "$WORK/nutcracker.pid" nutcracker 10
        stop_pid_file "$WORK/nutcracker-r.pid" nutcracker 10
        stop_pid_file "$WORK/predixy.pid" predixy 10
        local f
        for f in "$WORK"/standalone/*/redis.pid; do
            [ -f "$f" ] && stop_pid_file "$f" redis-server 30
        done
        cluster_stop "$WORK/cluster"
        if [ "$KEEP" -eq 1 ] || [ "$BENCH_OK" -eq 0 ]; then
            echo "bench: logs, configs and raw results kept in $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

raise_fd_limit() {
    local hard want=65536
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
        want=$hard
    fi
    ulimit -n "$want" 2>/dev/null || true
    if [ "$(ulimit -n)" -lt 2200 ]; then
        log "warning: open files limit is $(ulimit -n); the 1000-client workload needs about 2100"
    fi
}

# A standalone (non-cluster) redis-server for nutcracker: DIR PORT [MASTER_PORT] (a replica of it).
standalone_start() {
    local dir="$1" port="$2" master="${3:-}"
    mkdir -p "$dir"
    cat >"$dir/redis.conf" <<EOF
port $port
bind 127.0.0.1
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
auto-aof-rewrite-percentage 0
${master:+replicaof 127.0.0.1 $master}
EOF
    if port_open 127.0.0.1 "$port"; then
        die "127.0.0.1:$port is already in use (set BENCH_STANDALONE_BASE)"
    fi
    redis-server "$dir/redis.conf"
    wait_port 127.0.0.1 "$port" 10 || die "standalone redis-server on $port did not start"
}

CLUSTER_STARTED=0
need_cluster() {
    [ "$CLUSTER_STARTED" -eq 0 ] || return 0
    cluster_start "$WORK/cluster" "$CLUSTER_BASE" 3 1 \
        'save ""' 'appendonly no' 'auto-aof-rewrite-percentage 0'
    CLUSTER_STARTED=1
}

# pid of a process we started, from its pid file ("" when not running).
pid_from() {
    live_pid "$WORK/$1.pid" "$2" || true
}

# ---------------------------------------------------------------------------------------------
# Targets: target_NAME VERB
#   start  start whatever the target needs (idempotent)
#   flags  redis-benchmark connection flags, one per line
#   pid    pid of the proxy process to measure (CPU, RSS), or nothing
#   log    log file of that process, or nothing
#   about  one line for the report

target_direct() {
    case "$1" in
        start) need_cluster ;;
        flags) printf '%s\n' --cluster -h 127.0.0.1 -p "$CLUSTER_BASE" ;;
        pid) ;;
        log) ;;
        about) echo "redis-benchmark --cluster straight to the 3 masters (no proxy)" ;;
    esac
}

# The proxy behind the proxy and proxy-tls targets: one process, so their rows measure the same
# proxy. It always has the plain listener; when proxy-tls is among the targets it also gets a TLS
# listener, with a CA and server certificate generated by redisforge-ops into $WORK/certs.
PROXY_TLS=0
need_proxy() {
    need_cluster
    [ -z "$(pid_from proxy redisforge-proxy)" ] || return 0
    if port_open 127.0.0.1 "$PROXY_PORT"; then
        die "127.0.0.1:$PROXY_PORT is already in use (set BENCH_PROXY_PORT)"
    fi
    local tls_listen="" tls_section="" tls_flags=()
    if [ "$PROXY_TLS" -eq 1 ]; then
        if port_open 127.0.0.1 "$PROXY_TLS_PORT"; then
            die "127.0.0.1:$PROXY_TLS_PORT is already in use (set BENCH_PROXY_TLS_PORT)"
        fi
        [ -x "$OPS_BIN" ] || die "$OPS_BIN is missing (drop --no-build)"
        if ! "$OPS_BIN" certs generate "$WORK/certs" --hosts localhost,127.0.0.1 >"$WORK/certs.log" 2>&1; then
            cat "$WORK/certs.log" >&2
            die "redisforge-ops certs generate failed"
        fi
        tls_listen=$'\n'"tls = \"127.0.0.1:$PROXY_TLS_PORT\""
        tls_section="[tls]"$'\n'"cert = \"$WORK/certs/server.crt\""$'\n'"key = \"$WORK/certs/server.key\""$'\n\n'
        tls_flags=(--tls --cacert "$WORK/certs/ca.crt")
    fi
    local seeds
    seeds=$(cluster_ports "$WORK/cluster" | sed 's/.*/"127.0.0.1:&"/' | paste -sd, -)
    cat >"$WORK/redisforge.toml" <<EOF
[listen]
plain = "127.0.0.1:$PROXY_PORT"$tls_listen

${tls_section}[upstream]
seeds = [$seeds]

[metrics]
listen = ""

[log]
format = "text"
level = "$PROXY_LOG_LEVEL"
EOF
    "$PROXY_BIN" --config "$WORK/redisforge.toml" --check >/dev/null
    "$PROXY_BIN" --config "$WORK/redisforge.toml" >"$WORK/proxy.log" 2>&1 </dev/null &
    echo $! >"$WORK/proxy.pid"
    local deadline=$((SECONDS + 30))
    until [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$PROXY_PORT" ping 2>/dev/null)" = PONG ] && {
        [ "$PROXY_TLS" -eq 0 ] ||
            [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$PROXY_TLS_PORT" "${tls_flags[@]}" ping 2>/dev/null)" = PONG ]
    }; do
        if ! kill -0 "$(cat "$WORK/proxy.pid")" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$WORK/proxy.log" >&2
            die "the proxy did not answer PING on every listener within 30s"
        fi
        sleep 0.2
    done
}

# "TLSv1.3 TLS_AES_256_GCM_SHA384": protocol and cipher openssl s_client negotiates with the TLS
# listener (redis-benchmark uses OpenSSL too), or nothing.
proxy_tls_session() {
    command -v openssl >/dev/null 2>&1 || return 0
    timeout 5 openssl s_client -connect "127.0.0.1:$PROXY_TLS_PORT" -CAfile "$WORK/certs/ca.crt" \
        </dev/null 2>/dev/null | awk '/^New, / { gsub(",", ""); print $2, $NF; exit }' || true
}

target_proxy() {
    case "$1" in
        start) need_proxy ;;
        flags) printf '%s\n' -h 127.0.0.1 -p "$PROXY_PORT" ;;
        pid) pid_from proxy redisforge-proxy ;;
        log) echo "$WORK/proxy.log" ;;
        about)
            local also=""
            [ "$PROXY_TLS" -eq 0 ] || also="; its plain listener (the process also serves proxy-tls)"
            echo "redisforge-proxy (release build, default settings) in front of the same cluster$also"
            ;;
    esac
}

target_proxy-tls() {
    case "$1" in
        start) need_proxy ;;
        flags) printf '%s\n' -h 127.0.0.1 -p "$PROXY_TLS_PORT" --tls --cacert "$WORK/certs/ca.crt" ;;
        pid) pid_from proxy redisforge-proxy ;;
        log) echo "$WORK/proxy.log" ;;
        about)
            local session
            session=$(proxy_tls_session)
            echo "the same redisforge-proxy process through its TLS listener (${session:-TLS}; certificates from redisforge-ops certs generate): redis-benchmark --tls --cacert ca.crt, one handshake per client connection"
            ;;
    esac
}

target_nutcracker() {
    nutcracker_target "$1" nutcracker "$NUTCRACKER_PORT" "$NUTCRACKER_STATS_PORT" 0
}

# The same proxy with the cluster's backend work: every write is also replicated, as the cluster's
# masters replicate to their replicas on the same cores.
target_nutcracker-r() {
    nutcracker_target "$1" nutcracker-r "$NUTCRACKER_R_PORT" "$NUTCRACKER_R_STATS_PORT" 1
}

# nutcracker_target VERB NAME PORT STATS_PORT REPLICAS: nutcracker in front of 3 standalone
# servers (STANDALONE_BASE.. for the first, the 3 ports after for the second, their replicas on
# the 3 after those), each with REPLICAS (0 or 1) replica.
nutcracker_target() {
    local verb="$1" name="$2" port="$3" stats="$4" replicas="$5"
    local base=$((STANDALONE_BASE + 3 * replicas))
    case "$verb" in
        start)
            [ -z "$(pid_from "$name" nutcracker)" ] || return 0
            local i servers=""
            for i in 0 1 2; do
                standalone_start "$WORK/standalone/$((base + i))" $((base + i))
                servers+="    - 127.0.0.1:$((base + i)):1"$'\n'
            done
            if [ "$replicas" -eq 1 ]; then
                for i in 0 1 2; do
                    standalone_start "$WORK/standalone/$((base + 3 + i))" $((base + 3 + i)) $((base + i))
                done
                for i in 0 1 2; do
                    wait_replica_online $((base + i))
                done
            fi
            cat >"$WORK/$name.yml" <<EOF
bench:
  listen: 127.0.0.1:$port
  hash: fnv1a_64
  distribution: ketama
  redis: true
  server_connections: 1
  auto_eject_hosts: false
  servers:
$servers
EOF
            if port_open 127.0.0.1 "$port" || port_open 127.0.0.1 "$stats"; then
                die "127.0.0.1:$port or :$stats is in use (set BENCH_NUTCRACKER_PORT)"
            fi
            local nc
            nc=$(command -v nutcracker || echo /usr/sbin/nutcracker)
            "$nc" -t -c "$WORK/$name.yml" >/dev/null 2>&1 || die "nutcracker rejects $WORK/$name.yml"
            "$nc" -d -c "$WORK/$name.yml" -s "$stats" -a 127.0.0.1 \
                -p "$WORK/$name.pid" -o "$WORK/$name.log"
            wait_port 127.0.0.1 "$port" 10 || die "nutcracker did not start (see $WORK/$name.log)"
            ;;
        flags) printf '%s\n' -h 127.0.0.1 -p "$port" ;;
        pid) pid_from "$name" nutcracker ;;
        log) echo "$WORK/$name.log" ;;
        about)
            local backend="3 standalone redis-servers"
            [ "$replicas" -eq 0 ] || backend="3 standalone redis-servers, each with a replica (the cluster's backend work)"
            echo "nutcracker $(nutcracker_version) (twemproxy, C) in front of $backend, ketama/fnv1a_64, 1 connection per server"
            ;;
    esac
}

# predixy (C++, https://github.com/joyieldInc/predixy): a benchmark peer only, never a dependency.
# Built by bench/predixy.sh; config from `bench/predixy.sh conf` (WorkerThreads 1, reads from
# masters), in front of the same cluster as the proxy, so it uses the keys the proxy filled.
PREDIXY_BIN=""
target_predixy() {
    case "$1" in
        start)
            need_cluster
            [ -z "$(pid_from predixy predixy)" ] || return 0
            if port_open 127.0.0.1 "$PREDIXY_PORT"; then
                die "127.0.0.1:$PREDIXY_PORT is already in use (set BENCH_PREDIXY_PORT)"
            fi
            local nodes=()
            mapfile -t nodes < <(cluster_ports "$WORK/cluster")
            "$ROOT/bench/predixy.sh" conf "$PREDIXY_PORT" "${nodes[@]}" >"$WORK/predixy.conf"
            "$PREDIXY_BIN" "$WORK/predixy.conf" >"$WORK/predixy.log" 2>&1 </dev/null &
            echo $! >"$WORK/predixy.pid"
            local deadline=$((SECONDS + 30))
            until [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$PREDIXY_PORT" ping 2>/dev/null)" = PONG ]; do
                if ! kill -0 "$(cat "$WORK/predixy.pid")" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
                    tail -n 30 "$WORK/predixy.log" >&2
                    die "predixy did not answer PING within 30s"
                fi
                sleep 0.2
            done
            ;;
        flags) printf '%s\n' -h 127.0.0.1 -p "$PREDIXY_PORT" ;;
        pid) pid_from predixy predixy ;;
        log) echo "$WORK/predixy.log" ;;
        about)
            local commit
            commit=$(cut -c1-7 "$(dirname "$(dirname "$PREDIXY_BIN")")/SOURCE" 2>/dev/null || echo unknown)
            echo "predixy ($commit, C++, built by bench/predixy.sh) with WorkerThreads 1 in front of the same cluster as the proxy, reads from masters"
            ;;
    esac
}

# Until the standalone master on PORT reports its replica online (bounded: 30 s).
wait_replica_online() {
    local port="$1" deadline=$((SECONDS + 30))
    until redis-cli -p "$port" info replication 2>/dev/null | grep -q 'slave0:.*state=online'; do
        [ "$SECONDS" -lt "$deadline" ] || die "the replica of 127.0.0.1:$port did not sync within 30 s"
        sleep 0.2
    done
}

nutcracker_version() {
    { nutcracker -V 2>&1 || /usr/sbin/nutcracker -V 2>&1; } | sed -n 's/^This is nutcracker-//p' | head -n 1
}

# ---------------------------------------------------------------------------------------------
# Workloads: workload_NAME TARGET sets WL_ARGS (redis-benchmark arguments, without -n and the
# connection flags), WL_N (requests in a full run) and WL_ABOUT (one line for the report).

common_args() {
    WL_ARGS=(-d "$VALUE_SIZE" -r "$KEYSPACE" "$@")
}

workload_set() {
    common_args -t set -c 50
    WL_N=300000
    WL_ABOUT="SET, 50 clients, 64-byte values, 100k random keys, no pipelining"
}
workload_get() {
    common_args -t get -c 50
    WL_N=300000
    WL_ABOUT="GET, 50 clients, 100k random keys (prefilled), no pipelining"
}
workload_set-p16() {
    common_args -t set -c 50 -P 16
    WL_N=1500000
    WL_ABOUT="SET, 50 clients, pipelines of 16"
}
workload_get-p16() {
    common_args -t get -c 50 -P 16
    WL_N=1500000
    WL_ABOUT="GET, 50 clients, pipelines of 16"
}
workload_mset() {
    # redis-benchmark's mset test: MSET of 10 key:__rand_int__ keys, each drawn on its own, so
    # through a proxy the keys of one MSET spread over all masters and the proxy splits it. With
    # --cluster, redis-benchmark puts one hash tag in every key instead (key:{tag}:__rand_int__),
    # so the direct row sends single-slot MSETs: less work than the proxy does. A cross-slot MSET
    # cannot be sent to a cluster node at all.
    common_args -t mset -c 50
    WL_N=120000
    WL_ABOUT="MSET of 10 keys, 50 clients; proxy and nutcracker: keys spread over slots (split by the proxy); direct: one hash tag per MSET (single slot), so direct does less work"
}
workload_get-1c() {
    common_args -t get -c 1
    WL_N=50000
    WL_ABOUT="GET, 1 client, no pipelining: latency (see p50/p99)"
}
workload_get-1000c() {
    common_args -t get -c 1000
    WL_N=300000
    WL_ABOUT="GET, 1000 clients: connection scale"
}

# ---------------------------------------------------------------------------------------------
# Measurement

# utime+stime of PID in clock ticks (/proc/PID/stat fields 14 and 15), or nothing.
cpu_ticks() {
    local stat rest
    [ -n "$1" ] || return 0
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    # Fields after "(comm)": state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    rest=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$rest"
}

# Value (kB) of FIELD in /proc/PID/status, or nothing.
status_kb() {
    [ -n "$1" ] || return 0
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

bench_cmd() {
    local target="$1" n="$2"
    shift 2
    local flags=()
    mapfile -t flags < <("target_$target" flags)
    # --foreground: redis-benchmark stays in our process group, so Ctrl-C stops it at once.
    timeout --foreground -k 5 "$RUN_TIMEOUT" redis-benchmark "${flags[@]}" -n "$n" "$@"
}

# Fill the keyspace GET reads, so that GETs return 64-byte values (direct: per master hash tag).
prefill() {
    local target="$1" n=$((KEYSPACE * 6))
    [ "$QUICK" -eq 0 ] || n=$((KEYSPACE * 2))
    log "prefill $target: $n pipelined SETs"
    if ! bench_cmd "$target" "$n" -t set -d "$VALUE_SIZE" -r "$KEYSPACE" -c 50 -P 16 --csv \
        >"$WORK/runs/prefill-$target.csv" 2>"$WORK/runs/prefill-$target.err"; then
        cat "$WORK/runs/prefill-$target.err" >&2
        die "prefill through $target failed"
    fi
}

DEAD_TARGETS=" "
# target -> pid of its process right after the start (empty for direct).
declare -A TARGET_PIDS=()

# mark_dead PID: skip from now on every target served by process PID (proxy and proxy-tls share one).
mark_dead() {
    local t
    for t in "${TARGETS[@]}"; do
        if [ "${TARGET_PIDS[$t]:-}" = "$1" ] && [[ "$DEAD_TARGETS" != *" $t "* ]]; then
            DEAD_TARGETS+="$t "
        fi
    done
}

# run_one ROUND WORKLOAD TARGET: one redis-benchmark run, one row appended to raw.csv.
run_one() {
    local round="$1" workload="$2" target="$3"
    "workload_$workload" "$target"
    local n=$WL_N
    if [ "$QUICK" -eq 1 ]; then
        n=$((n / 10))
    fi
    local base="$WORK/runs/r$round-$workload-$target"
    if [[ "$DEAD_TARGETS" == *" $target "* ]]; then
        echo "$round,$workload,$target,,,,,,,$n,,skipped: target died earlier" >>"$WORK/raw.csv"
        return 0
    fi
    local pid cpu0 cpu1 t0 t1 rc=0 status=ok
    pid=$("target_$target" pid)
    cpu0=$(cpu_ticks "$pid")
    t0=$(date +%s.%N)
    bench_cmd "$target" "$n" "${WL_ARGS[@]}" --csv >"$base.csv" 2>"$base.err" || rc=$?
    t1=$(date +%s.%N)
    cpu1=$(cpu_ticks "$pid")
    local rss hwm
    rss=$(status_kb "$pid" VmRSS)
    hwm=$(status_kb "$pid" VmHWM)

    local row rps="" p50="" p99=""
    row=$(grep -v '^"test"' "$base.csv" | tail -n 1 | tr -d '"') || true
    if [ -n "$row" ]; then
        IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$row"
    fi
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status="timeout after ${RUN_TIMEOUT}s"
    elif [ "$rc" -ne 0 ] || [ -z "$rps" ]; then
        status="failed (exit $rc): $(grep -v '^WARNING' "$base.err" | head -c 200 | tr '\n,' '  ')"
    fi
    if [ -n "$("target_$target" pid)" ] || [ -z "$pid" ]; then
        :
    else
        status="target process died during the run"
        DEAD_TARGETS+="$target "
        mark_dead "$pid"
        log "$target died during $workload; last log lines:"
        tail -n 20 "$("target_$target" log)" >&2 || true
    fi
    if [ "$status" != ok ]; then
        rps="" p50="" p99=""
        log "round $round $workload $target: $status"
    fi
    local cpu_us=""
    if [ -n "$cpu0" ] && [ -n "$cpu1" ] && [ "$status" = ok ]; then
        cpu_us=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$CLK_TCK" -v n="$n" \
            'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / n }')
    fi
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    echo "$round,$workload,$target,$rps,$p50,$p99,$cpu_us,$rss,$hwm,$n,$secs,$status" >>"$WORK/raw.csv"
    log "round $round $(printf '%-10s %-10s' "$workload" "$target") ${rps:-—} ops/s  p50 ${p50:-—} ms  p99 ${p99:-—} ms  cpu ${cpu_us:-—} us/req  ${secs}s"
}

write_meta() {
    local t w
    {
        printf 'command\t%s\n' "$COMMAND_LINE"
        printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
        printf 'loadavg\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
        printf 'rounds\t%s\n' "$ROUNDS"
        printf 'quick\t%s\n' "$QUICK"
        printf 'redis\t%s\n' "$(redis-server --version)"
        printf 'proxy\t%s\n' "$("$PROXY_BIN" --version 2>/dev/null) ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown))"
        for t in "${TARGETS[@]}"; do
            printf 'target\t%s\t%s\n' "$t" "$("target_$t" about)"
        done
        for w in "${WORKLOADS[@]}"; do
            "workload_$w" direct
            printf 'workload\t%s\t%s\n' "$w" "$WL_ABOUT"
        done
    } >"$WORK/meta.tsv"
}

main() {
    parse_args "$@"
    ensure_redis_installed
    ensure_nutcracker_installed
    raise_fd_limit
    CLK_TCK=$(getconf CLK_TCK)

    if [ "$BUILD" -eq 1 ]; then
        log "building release binaries"
        # The same command as scripts/start-local.sh, so the two do not rebuild each other's output.
        cargo build --release --locked --workspace --bins
    fi
    [ -x "$PROXY_BIN" ] || die "$PROXY_BIN is missing (drop --no-build)"
    if [[ " ${TARGETS[*]} " == *" predixy "* ]]; then
        if ! PREDIXY_BIN=$("$ROOT/bench/predixy.sh" path 2>/dev/null); then
            log "predixy target skipped: predixy is not built (PREDIXY_SRC=DIR bench/predixy.sh build; see bench/predixy.sh --help)"
            local kept=() t
            for t in "${TARGETS[@]}"; do
                [ "$t" = predixy ] || kept+=("$t")
            done
            TARGETS=("${kept[@]}")
            [ "${#TARGETS[@]}" -gt 0 ] || die "no targets left"
        fi
    fi

    WORK=$(mktemp -d "${TMPDIR:-/tmp}/redisforge-bench.XXXXXX")
    exec 8>&1 9>&2
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM HUP
    mkdir -p "$WORK/runs"
    echo "round,workload,target,rps,p50_ms,p99_ms,cpu_us_per_req,rss_kb,hwm_kb,requests,secs,status" >"$WORK/raw.csv"

    local t
    for t in "${TARGETS[@]}"; do
        [ "$t" != proxy-tls ] || PROXY_TLS=1
    done
    for t in "${TARGETS[@]}"; do
        log "starting $t"
        "target_$t" start
        TARGET_PIDS[$t]=$("target_$t" pid)
    done
    for t in "${TARGETS[@]}"; do
        # proxy-tls reaches the same cluster with the same key names as proxy: filled once is enough.
        if [ "$t" = proxy-tls ] && [ -n "${TARGET_PIDS[proxy]+set}" ]; then
            continue
        fi
        # predixy reaches the same cluster with the same key names as proxy too.
        if [ "$t" = predixy ] && [ -n "${TARGET_PIDS[proxy]+set}" ]; then
            continue
        fi
        prefill "$t"
    done
    write_meta

    # Rounds alternate the targets (and rotate their order) so that drift in machine load hits
    # every target alike rather than the one that happens to run last.
    local round w i k=${#TARGETS[@]}
    for ((round = 1; round <= ROUNDS; round++)); do
        for w in "${WORKLOADS[@]}"; do
            for ((i = 0; i < k; i++)); do
                run_one "$round" "$w" "${TARGETS[$(((i + round - 1) % k))]}"
            done
        done
    done

    if [ -s "$WORK/proxy.log" ]; then
        log "proxy log: $(wc -l <"$WORK/proxy.log") lines, WARN/ERROR: $(grep -c -E 'WARN|ERROR' "$WORK/proxy.log" || true)"
    fi
    local warnings
    warnings=$(cat "$WORK"/runs/*.err 2>/dev/null | sort | uniq -c | sort -rn | head -n 10)
    if [ -n "$warnings" ]; then
        log "redis-benchmark stderr (count, line):"
        echo "$warnings" >&2
    fi

    local report=(python3 "$ROOT/bench/report.py" "$WORK/raw.csv" --meta "$WORK/meta.tsv")
    if [ "$WRITE" -eq 1 ]; then
        report+=(--write "$ROOT/bench/RESULTS.md")
    fi
    "${report[@]}"
    BENCH_OK=1
}

main "$@"
