# shellcheck shell=bash
# Local Redis Cluster helpers, sourced by scripts/start-local.sh and bench/run.sh.
#
#   ensure_redis_installed              redis-server, redis-cli, redis-benchmark (apt when missing)
#   ensure_nutcracker_installed         twemproxy, the C reference proxy of the benchmark
#   wait_port HOST PORT TIMEOUT_S       until HOST:PORT accepts TCP connections (1 = timed out)
#   cluster_start DIR BASE_PORT MASTERS REPLICAS [redis.conf line...]
#                                       MASTERS*(1+REPLICAS) nodes on BASE_PORT.. (each also binds
#                                       port+10000, its cluster bus), created with redis-cli --cluster
#                                       create; reused as is when already running with the same
#                                       layout and healthy
#   cluster_stop DIR                    kills the nodes of DIR by their pid files (bounded waits)
#   cluster_ports DIR                   prints the node ports of DIR, one per line
#   stop_pid_file FILE NAME [TIMEOUT_S] TERM (then KILL) the process of FILE when its command is NAME
#
# CLUSTER_TLS=DIR (set before cluster_start) makes the nodes TLS only: each serves TLS on its port
# (and on its bus), with DIR/server.crt, DIR/server.key and DIR/ca.crt (as `redisforge-ops certs
# generate DIR` writes them); the helpers' own redis-cli calls use TLS then.
#
# Everything binds 127.0.0.1 and every wait is bounded. Nothing here kills a process that is not
# named in a pid file of its own directory, so clusters of other users and tests are left alone.
# Callers are expected to run with `set -euo pipefail`; functions return non-zero on failure.

# sudo only when not root.
if [ "$(id -u)" -ne 0 ]; then
    CLUSTER_SUDO=(sudo)
else
    CLUSTER_SUDO=()
fi
CLUSTER_APT_UPDATED=${CLUSTER_APT_UPDATED:-0}

# cluster_cli TIMEOUT_S ARGS...: redis-cli ARGS within TIMEOUT_S, over TLS when CLUSTER_TLS is set.
cluster_cli() {
    local seconds="$1"
    shift
    if [ -n "${CLUSTER_TLS:-}" ]; then
        timeout "$seconds" redis-cli --tls --cacert "$CLUSTER_TLS/ca.crt" "$@"
    else
        timeout "$seconds" redis-cli "$@"
    fi
}

# Seconds a new cluster gets to reach cluster_state:ok on every node.
CLUSTER_SETTLE_TIMEOUT=${CLUSTER_SETTLE_TIMEOUT:-60}

cluster_log() {
    echo "[cluster] $*" >&2
}

cluster_have() {
    command -v "$1" >/dev/null 2>&1
}

# apt-get install PACKAGE..., with a single apt-get update per shell.
cluster_apt_install() {
    if [ "$CLUSTER_APT_UPDATED" -eq 0 ]; then
        "${CLUSTER_SUDO[@]}" apt-get update
        CLUSTER_APT_UPDATED=1
    fi
    "${CLUSTER_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

ensure_redis_installed() {
    if cluster_have redis-server && cluster_have redis-cli && cluster_have redis-benchmark; then
        return 0
    fi
    cluster_log "installing redis-server and redis-tools"
    cluster_apt_install redis-server redis-tools
    # The package may start the distro service on 6379; we run our own nodes.
    "${CLUSTER_SUDO[@]}" service redis-server stop >/dev/null 2>&1 || true
}

ensure_nutcracker_installed() {
    # Debian installs it in /usr/sbin, which a non-root PATH may lack.
    if cluster_have nutcracker || [ -x /usr/sbin/nutcracker ]; then
        return 0
    fi
    cluster_log "installing nutcracker"
    cluster_apt_install nutcracker
    "${CLUSTER_SUDO[@]}" service nutcracker stop >/dev/null 2>&1 || true
}

# 0 when HOST:PORT accepts a TCP connection right now.
port_open() {
    # shellcheck disable=SC2016 # $1 and $2 are expanded by the inner bash
    timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# wait_port HOST PORT TIMEOUT_S: 0 once HOST:PORT accepts connections, 1 after TIMEOUT_S seconds.
wait_port() {
    local host="$1" port="$2" timeout_s="$3" deadline
    deadline=$((SECONDS + timeout_s))
    while ! port_open "$host" "$port"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.1
    done
}

# 0 when PID is alive and its command name is NAME (guards against recycled pids). A zombie
# counts as gone: daemons are reparented to PID 1, which may take a while to reap them.
pid_is() {
    local pid="$1" name="$2" stat comm state
    [ -n "$pid" ] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    # "PID (COMM) STATE ...": COMM may contain spaces and parentheses; it ends at the last ')'.
    comm=${stat#*\(}
    comm=${comm%\)*}
    state=${stat##*\) }
    state=${state%% *}
    [ "$state" != Z ] || return 1
    # COMM is cut at 15 characters ("redisforge-proxy" -> "redisforge-prox").
    [ "$comm" = "${name:0:15}" ]
}

# Prints the pid in FILE when that process is alive and named NAME; fails otherwise.
live_pid() {
    local file="$1" name="$2" pid
    [ -s "$file" ] || return 1
    pid=$(tr -dc '0-9' <"$file")
    pid_is "$pid" "$name" || return 1
    echo "$pid"
}

# stop_pids NAME TIMEOUT_S PID...: SIGTERM every PID still alive and named NAME, wait up to
# TIMEOUT_S for all of them to exit, then SIGKILL the rest (and wait up to 5 s more).
stop_pids() {
    local name="$1" timeout_s="$2" pid deadline alive
    shift 2
    for pid in "$@"; do
        if pid_is "$pid" "$name"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    deadline=$((SECONDS + timeout_s))
    while :; do
        alive=()
        for pid in "$@"; do
            if pid_is "$pid" "$name"; then
                alive+=("$pid")
            fi
        done
        [ "${#alive[@]}" -gt 0 ] || return 0
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.1
    done
    cluster_log "$name (pid ${alive[*]}) still running ${timeout_s}s after SIGTERM; sending SIGKILL"
    kill -KILL "${alive[@]}" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    for pid in "${alive[@]}"; do
        while pid_is "$pid" "$name" && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.1
        done
    done
}

# stop_pid_file FILE NAME [TIMEOUT_S]: stop the process of FILE (when alive and named NAME) with
# stop_pids (TIMEOUT_S defaults to 10). Removes FILE.
stop_pid_file() {
    local file="$1" name="$2" timeout_s="${3:-10}" pid
    if pid=$(live_pid "$file" "$name"); then
        stop_pids "$name" "$timeout_s" "$pid"
    fi
    rm -f "$file"
}

# Absolute form of a directory path (the directory need not exist).
cluster_abs_dir() {
    case "$1" in
        /*) echo "${1%/}" ;;
        *) echo "$PWD/${1%/}" ;;
    esac
}

cluster_ports() {
    local dir
    dir=$(cluster_abs_dir "$1")
    [ -s "$dir/ports" ] || return 1
    cat "$dir/ports"
}

# The value of FIELD in `CLUSTER INFO` of 127.0.0.1:PORT, or nothing.
cluster_info_field() {
    cluster_cli 3 -h 127.0.0.1 -p "$1" cluster info 2>/dev/null |
        tr -d '\r' | sed -n "s/^$2://p"
}

# cluster_healthy REPLICAS PORT...: 0 when every node reports cluster_state:ok, knows all the
# others and sees REPLICAS of them as replicas. Right after `--cluster create` the state is ok
# before every node has learnt which nodes are replicas, and clients (redis-benchmark --cluster,
# the proxy's first topology read) would see replicas as masters without slots.
cluster_healthy() {
    local replicas="$1" port
    shift
    local n=$#
    for port in "$@"; do
        [ "$(cluster_info_field "$port" cluster_state)" = ok ] || return 1
        [ "$(cluster_info_field "$port" cluster_known_nodes)" = "$n" ] || return 1
        [ "$(cluster_cli 3 -h 127.0.0.1 -p "$port" cluster nodes 2>/dev/null |
            awk '$3 ~ /(^|,)slave(,|$)/' | wc -l)" -eq "$replicas" ] || return 1
    done
}

# 0 when every node of DIR runs (pid file alive) and the cluster is healthy.
cluster_running() {
    local dir="$1" port ports=() masters replicas
    [ -s "$dir/ports" ] && [ -s "$dir/layout" ] || return 1
    mapfile -t ports <"$dir/ports"
    for port in "${ports[@]}"; do
        live_pid "$dir/$port/redis.pid" redis-server >/dev/null || return 1
    done
    masters=$(sed -n 's/^masters=\([0-9]*\) .*/\1/p' "$dir/layout")
    replicas=$(sed -n 's/.* replicas=\([0-9]*\) .*/\1/p' "$dir/layout")
    [ -n "$masters" ] && [ -n "$replicas" ] || return 1
    cluster_healthy $((masters * replicas)) "${ports[@]}"
}

cluster_stop() {
    local dir port_dir
    dir=$(cluster_abs_dir "$1")
    [ -d "$dir" ] || return 0
    local pids=() pid
    for port_dir in "$dir"/*/; do
        if pid=$(live_pid "$port_dir/redis.pid" redis-server); then
            pids+=("$pid")
        fi
    done
    # All at once: with save "" a node exits at once; with persistence it may write an RDB first.
    if [ "${#pids[@]}" -gt 0 ]; then
        stop_pids redis-server 30 "${pids[@]}"
    fi
    rm -f "$dir"/*/redis.pid "$dir/ports" "$dir/layout"
}

cluster_tail_logs() {
    local dir="$1" log
    for log in "$dir"/*/redis.log "$dir/create.log"; do
        [ -f "$log" ] || continue
        echo "---- $log (last 15 lines)" >&2
        tail -n 15 "$log" >&2
    done
}

cluster_start() {
    if [ "$#" -lt 4 ]; then
        echo "usage: cluster_start DIR BASE_PORT MASTERS REPLICAS [redis.conf line...]" >&2
        return 2
    fi
    local dir base="$2" masters="$3" replicas="$4" deadline
    dir=$(cluster_abs_dir "$1")
    shift 4
    local extra=("$@")
    if [ "$masters" -lt 3 ]; then
        echo "cluster_start: redis-cli --cluster create needs at least 3 masters" >&2
        return 2
    fi
    local n=$((masters * (1 + replicas))) i port ports=() layout
    for ((i = 0; i < n; i++)); do
        ports+=($((base + i)))
    done
    layout=$(printf 'masters=%s replicas=%s base=%s\n' "$masters" "$replicas" "$base"
        [ -z "${CLUSTER_TLS:-}" ] || printf 'tls=%s\n' "$CLUSTER_TLS"
        printf '%s\n' "${extra[@]+"${extra[@]}"}")

    if [ -s "$dir/layout" ] && [ "$(cat "$dir/layout")" = "$layout" ] && cluster_running "$dir"; then
        cluster_log "reusing the running cluster in $dir (ports ${ports[0]}-${ports[n - 1]})"
        return 0
    fi
    # Anything of ours left over (crashed node, other layout): stop it and start clean.
    cluster_stop "$dir"
    for port in "${ports[@]}"; do
        if port_open 127.0.0.1 "$port" || port_open 127.0.0.1 $((port + 10000)); then
            echo "cluster_start: 127.0.0.1:$port or its bus port $((port + 10000)) is already in use" \
                "by a process this script did not start; pick another BASE_PORT or stop it" >&2
            return 1
        fi
    done

    mkdir -p "$dir"
    local node_dir
    for port in "${ports[@]}"; do
        node_dir="$dir/$port"
        rm -rf "$node_dir"
        mkdir -p "$node_dir"
        {
            echo "port $port"
            echo "bind 127.0.0.1"
            echo "cluster-enabled yes"
            echo "cluster-config-file nodes.conf"
            echo "cluster-node-timeout 5000"
            echo "daemonize yes"
            echo "pidfile $node_dir/redis.pid"
            echo "logfile $node_dir/redis.log"
            echo "dir $node_dir"
            echo 'save ""'
            echo "appendonly no"
            if [ -n "${CLUSTER_TLS:-}" ]; then
                echo "port 0"
                echo "tls-port $port"
                echo "tls-cert-file $CLUSTER_TLS/server.crt"
                echo "tls-key-file $CLUSTER_TLS/server.key"
                echo "tls-ca-cert-file $CLUSTER_TLS/ca.crt"
                echo "tls-auth-clients no"
                echo "tls-cluster yes"
                echo "tls-replication yes"
            fi
            # Later lines win in redis.conf, so these override the defaults above.
            printf '%s\n' "${extra[@]+"${extra[@]}"}"
        } >"$node_dir/redis.conf"
        if ! redis-server "$node_dir/redis.conf"; then
            echo "cluster_start: redis-server on port $port did not start" >&2
            cluster_tail_logs "$dir"
            return 1
        fi
    done
    for port in "${ports[@]}"; do
        if ! wait_port 127.0.0.1 "$port" 10; then
            echo "cluster_start: node $port does not accept connections after 10s" >&2
            cluster_tail_logs "$dir"
            return 1
        fi
        # A daemonized node writes its pid file just after it starts listening.
        deadline=$((SECONDS + 5))
        until live_pid "$dir/$port/redis.pid" redis-server >/dev/null; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "cluster_start: node $port wrote no pid file" >&2
                return 1
            fi
            sleep 0.1
        done
    done
    printf '%s\n' "${ports[@]}" >"$dir/ports"

    local addrs=()
    for port in "${ports[@]}"; do
        addrs+=("127.0.0.1:$port")
    done
    cluster_log "creating a cluster of $masters masters + $replicas replica(s) each on ports ${ports[0]}-${ports[n - 1]}"
    if ! cluster_cli 60 --cluster create "${addrs[@]}" --cluster-replicas "$replicas" \
        --cluster-yes >"$dir/create.log" 2>&1; then
        echo "cluster_start: redis-cli --cluster create failed" >&2
        cluster_tail_logs "$dir"
        return 1
    fi
    deadline=$((SECONDS + CLUSTER_SETTLE_TIMEOUT))
    until cluster_healthy $((masters * replicas)) "${ports[@]}"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "cluster_start: no cluster_state:ok on every node after ${CLUSTER_SETTLE_TIMEOUT}s" >&2
            cluster_tail_logs "$dir"
            return 1
        fi
        sleep 0.2
    done
    echo "$layout" >"$dir/layout"
    cluster_log "cluster ok in $dir"
}
