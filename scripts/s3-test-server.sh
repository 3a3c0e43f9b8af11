#!/usr/bin/env bash
# A local S3-compatible server (moto) for the backup tests.
#
#   scripts/s3-test-server.sh start DIR PORT   install moto[server] from PyPI when moto_server is
#                                              missing, start it on 127.0.0.1:PORT in the background
#                                              (pid in DIR/moto.pid, log in DIR/moto.log) and wait
#                                              until it answers (at most 30 s)
#   scripts/s3-test-server.sh stop DIR         kill the server of DIR by its pid file
#   scripts/s3-test-server.sh install          only install moto (for CI's deps step)
#
# moto accepts any credentials: point clients at it with AWS_ENDPOINT_URL=http://127.0.0.1:PORT,
# AWS_ALLOW_HTTP=true, AWS_REGION=us-east-1 and dummy AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
# Exit status: 0 ok, 1 failure (message on stderr), 2 usage.
set -euo pipefail

# shellcheck source=lib/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cluster.sh"

# Seconds `start` waits for the server to answer.
START_TIMEOUT=${S3_TEST_SERVER_TIMEOUT:-30}

die() {
    echo "s3-test-server: $*" >&2
    exit 1
}

have_moto() {
    command -v moto_server >/dev/null 2>&1 && moto_server --help >/dev/null 2>&1
}

install_moto() {
    if have_moto; then
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 is needed to install moto"
    echo "s3-test-server: installing moto[server] from PyPI" >&2
    # --user when not root, so a laptop needs no sudo; the user bin dir must then be on PATH.
    local user=()
    if [ "$(id -u)" -ne 0 ]; then
        user=(--user)
        PATH="$(python3 -m site --user-base)/bin:$PATH"
        export PATH
    fi
    python3 -m pip install --quiet --disable-pip-version-check "${user[@]}" 'moto[server]' >&2 \
        || die "pip install 'moto[server]' failed"
    hash -r
    have_moto || die "moto_server is not on PATH after installing moto[server]"
}

# 0 when something answers HTTP on 127.0.0.1:$1.
answers() {
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/"
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlopen("http://127.0.0.1:%s/" % sys.argv[1], timeout=2)' "$1" \
            >/dev/null 2>&1
    fi
}

start() {
    local dir=$1 port=$2
    [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    mkdir -p "$dir"
    if [ -f "$dir/moto.pid" ] && kill -0 "$(cat "$dir/moto.pid")" 2>/dev/null; then
        die "a server already runs for $dir (pid $(cat "$dir/moto.pid"))"
    fi
    install_moto
    # Loopback only; setsid so that it does not die with the caller's terminal job control.
    setsid moto_server -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/moto.pid"
    local deadline=$((SECONDS + START_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/moto.pid"
            die "moto_server exited at start: $(tail -n 5 "$dir/moto.log" 2>/dev/null)"
        fi
        if answers "$port"; then
            echo "s3-test-server: moto on http://127.0.0.1:$port (pid $pid)" >&2
            return 0
        fi
        sleep 0.2
    done
    kill "$pid" 2>/dev/null || true
    rm -f "$dir/moto.pid"
    die "moto_server did not answer on port $port within ${START_TIMEOUT}s: $(tail -n 5 "$dir/moto.log" 2>/dev/null)"
}

# stop_pid_file (scripts/lib/cluster.sh): TERM, then KILL after 5 s, only if the pid file's
# process is still the server.
stop() {
    stop_pid_file "$1/moto.pid" moto_server 5
}

case "${1:-}" in
    start)
        [ $# -eq 3 ] || { echo "usage: $0 start DIR PORT" >&2; exit 2; }
        start "$2" "$3"
        ;;
    stop)
        [ $# -eq 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
        stop "$2"
        ;;
    install)
        install_moto
        ;;
    *)
        echo "usage: $0 start DIR PORT | stop DIR | install" >&2
        exit 2
        ;;
esac
