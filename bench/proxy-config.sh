# shellcheck shell=bash
# The redisforge-proxy config the benchmark scripts run (sourced by bench/ab.sh and
# bench/abba.sh).

# bench_proxy_config PORT SEED_PORT [SETTING]: a plain listener on 127.0.0.1:PORT, metrics on
# PORT + 100, the cluster seeded at 127.0.0.1:SEED_PORT, one worker thread (as predixy's row runs),
# warn-level logs; SETTING is one line more, KEY=VALUE for the [upstream] section or
# SECTION.KEY=VALUE (runtime.worker_threads=2 replaces the one worker).
bench_proxy_config() {
    local port="$1" seed="$2" extra="${3:-}" section="upstream" workers="worker_threads = 1"
    if [[ "${extra%%=*}" == *.* ]]; then
        section=${extra%%.*}
        extra=${extra#*.}
    fi
    local upstream_line="" runtime_line="" other=""
    case "$section" in
        upstream) upstream_line=$extra ;;
        runtime) if [[ "$extra" == worker_threads=* ]]; then workers=$extra; else runtime_line=$extra; fi ;;
        *) other=$(printf '[%s]\n%s' "$section" "$extra") ;;
    esac
    cat <<EOF
[listen]
plain = "127.0.0.1:$port"
[metrics]
listen = "127.0.0.1:$((port + 100))"
[upstream]
seeds = ["127.0.0.1:$seed"]
$upstream_line
[runtime]
$workers
$runtime_line
[log]
level = "warn"
$other
EOF
}
