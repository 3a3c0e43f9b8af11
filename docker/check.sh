#!/usr/bin/env bash
# Runs a built image against a 3 masters + 3 replicas cluster on loopback and checks it end to end:
# the ops tool writes certificates into a mounted directory (as the image's user), `--check`
# accepts the config, the proxy serves TLS (PING, SET/GET, a cross-slot MSET/MGET), it runs as
# uid 10001, the image's HEALTHCHECK turns healthy, and SIGTERM stops it with exit code 0.
#
#   docker/check.sh [IMAGE]        (default redisforge:local; build it as docker/Dockerfile says)
#
# Host networking: the cluster on 127.0.0.1:7850-7855 and their bus ports 17850-17855
# (DOCKER_CHECK_BASE moves them), the proxy's TLS listener on 7960, its metrics on 9901 (where the
# image's HEALTHCHECK looks): all must be free. Run as root (the certificate directory is handed to
# the image's uid 10001, and its files are removed afterwards); needs a running Docker engine,
# curl, and redis-server/redis-cli (installed here as the tests install them). Every process and
# container started here is stopped on exit, and every wait is bounded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/cluster.sh
source scripts/lib/cluster.sh
IMAGE=${1:-redisforge:local}
BASE=${DOCKER_CHECK_BASE:-7850}
[ "$(id -u)" -eq 0 ] || { echo "check: run as root (see the header)" >&2; exit 2; }
command -v curl >/dev/null || { echo "check: curl is needed" >&2; exit 2; }
for port in 7960 9901; do
    ! port_open 127.0.0.1 "$port" || { echo "check: port $port is taken" >&2; exit 2; }
done
WORK=$(mktemp -d /tmp/redisforge-docker-check.XXXXXX)
NAME=redisforge-check-$$
cleanup() {
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    cluster_stop "$WORK/cluster"
    rm -rf "$WORK"
}
trap cleanup EXIT
ensure_redis_installed
cluster_start "$WORK/cluster" "$BASE" 3 1 'save ""' 'appendonly no'
mkdir -p "$WORK/etc/tls"
chown 10001:10001 "$WORK/etc/tls"
docker run --rm --network host -v "$WORK/etc:/etc/redisforge" --entrypoint redisforge-ops "$IMAGE" \
    certs generate /etc/redisforge/tls
seeds=$(for i in 0 1 2 3 4 5; do printf '"127.0.0.1:%s",' $((BASE + i)); done)
cat >"$WORK/etc/redisforge.toml" <<TOML
[listen]
tls = "127.0.0.1:7960"
[tls]
cert = "/etc/redisforge/tls/server.crt"
key = "/etc/redisforge/tls/server.key"
[upstream]
seeds = [${seeds%,}]
[metrics]
listen = "127.0.0.1:9901"
[log]
format = "json"
TOML
chmod 644 "$WORK/etc/redisforge.toml"
docker run --rm --network host -v "$WORK/etc:/etc/redisforge:ro" "$IMAGE" --config /etc/redisforge/redisforge.toml --check
docker run -d --name "$NAME" --network host -v "$WORK/etc:/etc/redisforge:ro" "$IMAGE" >/dev/null
ready=""
for _ in $(seq 1 100); do
    [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] || break
    ready=$(curl -sf --max-time 2 http://127.0.0.1:9901/readyz || true)
    [ -z "$ready" ] || break
    sleep 0.2
done
[ -n "$ready" ] || { docker logs "$NAME" 2>&1 | tail -20; echo "check: the proxy did not get ready" >&2; exit 1; }
cli() { redis-cli -p 7960 --tls --cacert "$WORK/etc/tls/ca.crt" "$@"; }
expect() {
    local want="$1" got
    shift
    got=$(cli "$@" 2>&1 | tr '\n' ' ' | sed 's/ $//') || true
    [ "$got" = "$want" ] || { echo "check: $* answered '$got', expected '$want'" >&2; exit 1; }
    echo "check: $* -> $got"
}
expect PONG PING
expect OK SET docker:check works
expect works GET docker:check
expect OK MSET a 1 b 2 c 3 d 4
expect "1 2 3 4" MGET a b c d
# The proxy's own process (pid 1 in the container), not a new one started by `docker exec`.
user=$(docker exec "$NAME" awk '/^Uid:/ {print $2}' /proc/1/status)
[ "$user" = 10001 ] || { echo "check: the proxy runs as uid $user, not 10001" >&2; exit 1; }
echo "check: runs as uid $user"
health=""
for _ in $(seq 1 45); do
    health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$NAME")
    [ "$health" != healthy ] || break
    sleep 1
done
[ "$health" = healthy ] || { echo "check: HEALTHCHECK says $health" >&2; exit 1; }
echo "check: HEALTHCHECK healthy"
docker stop -t 10 "$NAME" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || { docker logs "$NAME" 2>&1 | tail -20; echo "check: exit code $code after SIGTERM" >&2; exit 1; }
echo "check: stopped by SIGTERM with exit code 0"
echo "check: $IMAGE passed"
