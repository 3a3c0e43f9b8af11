#!/usr/bin/env bash
# What the client matrix (tests/client_matrix.rs) needs besides redis-py, installed only when missing:
#
#   node + npm       run tests/clients/node/matrix.js (node-redis and ioredis)
#   gcc, libc6-dev,  compile tests/clients/hiredis/matrix.c against Debian's libhiredis, and
#   libhiredis-dev   the Redis test module tests/modules/keyspecs.c (tests/proxy_modules.rs, as cc)
#   openssl          the `openssl s_client` tunnel the raw-RESP handshake tests use over TLS
#   node_modules     `npm ci` in tests/clients/node, from the committed package-lock.json
#
# `apt-get update` runs at most once, and only when an apt package is missing; sudo only when not
# root. `npm ci` runs only when node_modules was not installed from the current lock file. Called
# by scripts/test.sh (step deps); safe to run again (installs nothing the second time).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

have() {
    command -v "$1" >/dev/null 2>&1
}

missing=()
if ! have node; then
    missing+=(nodejs)
fi
if ! have npm; then
    missing+=(npm)
fi
if ! have gcc || ! have cc || [ ! -f /usr/include/stdlib.h ]; then
    missing+=(gcc libc6-dev)
fi
if [ ! -f /usr/include/hiredis/hiredis.h ]; then
    missing+=(libhiredis-dev)
fi
if ! have openssl; then
    missing+=(openssl)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
echo "client tools: node $(node --version), npm $(npm --version), $(gcc --version | head -n1), libhiredis-dev present"

# `npm ci` deletes and rebuilds node_modules; skip it when the lock file it was built from is unchanged.
node_dir=tests/clients/node
stamp="$node_dir/node_modules/.redisforge-lock.sha256"
want="$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "node clients present ($node_dir/node_modules matches package-lock.json)"
else
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
    echo "node clients installed into $node_dir/node_modules"
fi
