#!/usr/bin/env bash
# A local Azure Blob Storage emulator (Azurite, from the npm registry) for the backup tests.
#
#   scripts/az-test-server.sh start DIR PORT CONTAINER
#                                  install Azurite (npm) and the azure-storage-blob client (PyPI,
#                                  to create the container) when missing, start Azurite's blob
#                                  service on 127.0.0.1:PORT in the background (pid in DIR/azurite.pid,
#                                  log in DIR/azurite.log, data in DIR/data), wait until it answers
#                                  (at most 60 s) and create CONTAINER
#   scripts/az-test-server.sh stop DIR
#                                  kill the server of DIR by its pid file
#   scripts/az-test-server.sh install
#                                  only install (for CI's deps step)
#
# Clients reach it with AZURE_STORAGE_USE_EMULATOR=true and
# AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:PORT (the well-known devstoreaccount1 account).
# Azurite is installed under ${XDG_CACHE_HOME:-~/.cache}/redisforge/azurite (AZURITE_DIR overrides).
# Exit status: 0 ok, 1 failure (message on stderr), 2 usage.
set -euo pipefail

# shellcheck source=lib/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cluster.sh"

START_TIMEOUT=${AZ_TEST_SERVER_TIMEOUT:-60}
AZURITE_DIR=${AZURITE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/redisforge/azurite}
AZURITE_VERSION=3.35.0
# The emulator's documented development account (public, the same in every Azurite).
ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

die() {
    echo "az-test-server: $*" >&2
    exit 1
}

azurite_bin() {
    echo "$AZURITE_DIR/node_modules/.bin/azurite-blob"
}

have_python_client() {
    python3 -c 'import azure.storage.blob' >/dev/null 2>&1
}

install() {
    if [ ! -x "$(azurite_bin)" ]; then
        command -v npm >/dev/null 2>&1 || die "npm is needed to install Azurite"
        echo "az-test-server: installing azurite@$AZURITE_VERSION from npm into $AZURITE_DIR" >&2
        mkdir -p "$AZURITE_DIR"
        npm install --silent --no-audit --no-fund --prefix "$AZURITE_DIR" "azurite@$AZURITE_VERSION" >&2 \
            || die "npm install azurite failed"
        [ -x "$(azurite_bin)" ] || die "azurite-blob is missing after npm install"
    fi
    if ! have_python_client; then
        command -v python3 >/dev/null 2>&1 || die "python3 is needed to install azure-storage-blob"
        echo "az-test-server: installing azure-storage-blob from PyPI" >&2
        local user=()
        [ "$(id -u)" -ne 0 ] && user=(--user)
        python3 -m pip install --quiet --disable-pip-version-check "${user[@]}" azure-storage-blob >&2 \
            || die "pip install azure-storage-blob failed"
        have_python_client || die "azure-storage-blob is not importable after installing it"
    fi
}

# Creates the container through the official client (Azurite needs it signed like Azure).
create_container() {
    local port=$1 container=$2
    python3 - "$port" "$container" "$ACCOUNT" "$KEY" <<'EOF'
import sys
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

port, container, account, key = sys.argv[1:5]
url = f"http://127.0.0.1:{port}/{account}"
client = BlobServiceClient(account_url=url, credential={"account_name": account, "account_key": key})
try:
    client.create_container(container)
except ResourceExistsError:
    pass
EOF
}

start() {
    local dir=$1 port=$2 container=$3
    [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    mkdir -p "$dir/data"
    if [ -f "$dir/azurite.pid" ] && kill -0 "$(cat "$dir/azurite.pid")" 2>/dev/null; then
        die "a server already runs for $dir (pid $(cat "$dir/azurite.pid"))"
    fi
    install
    # Loopback only, and no telemetry (Azurite would send it to Azure); --skipApiVersionCheck: the
    # Rust client may speak a newer API version than this Azurite.
    setsid "$(azurite_bin)" --blobHost 127.0.0.1 --blobPort "$port" --location "$dir/data" \
        --skipApiVersionCheck --loose --disableProductStyleUrl --disableTelemetry \
        >"$dir/azurite.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/azurite.pid"
    local deadline=$((SECONDS + START_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/azurite.pid"
            die "azurite exited at start: $(tail -n 5 "$dir/azurite.log" 2>/dev/null)"
        fi
        if create_container "$port" "$container" 2>"$dir/create.log"; then
            echo "az-test-server: azurite on http://127.0.0.1:$port (pid $pid), container $container" >&2
            return 0
        fi
        sleep 0.3
    done
    kill "$pid" 2>/dev/null || true
    rm -f "$dir/azurite.pid"
    die "azurite did not take container $container on port $port within ${START_TIMEOUT}s: $(tail -n 3 "$dir/create.log" 2>/dev/null) $(tail -n 5 "$dir/azurite.log" 2>/dev/null)"
}

# stop_pid_file (scripts/lib/cluster.sh): TERM, then KILL after 5 s, only if the pid file's
# process is still the server.
stop() {
    stop_pid_file "$1/azurite.pid" node 5
}

case "${1:-}" in
    start)
        [ $# -eq 4 ] || { echo "usage: $0 start DIR PORT CONTAINER" >&2; exit 2; }
        start "$2" "$3" "$4"
        ;;
    stop)
        [ $# -eq 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
        stop "$2"
        ;;
    install)
        install
        ;;
    *)
        echo "usage: $0 start DIR PORT CONTAINER | stop DIR | install" >&2
        exit 2
        ;;
esac
