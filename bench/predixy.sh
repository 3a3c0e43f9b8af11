#!/usr/bin/env bash
# predixy (https://github.com/joyieldInc/predixy, a C++ Redis Cluster proxy) as a benchmark peer.
# It is never a dependency of RedisForge and never part of CI: bench/ab.sh and bench/callgrind.sh
# add a predixy row when it has been built, and skip it otherwise.
#
#   PREDIXY_SRC=DIR bench/predixy.sh build   build predixy from the source in DIR, print the binary
#   bench/predixy.sh path                    print the binary path (exit 1 when not built)
#   bench/predixy.sh conf PORT NODE_PORT...  print a config: one worker thread, listening on
#                                            127.0.0.1:PORT, in front of the Redis Cluster whose
#                                            nodes listen on 127.0.0.1:NODE_PORT...
#
# This script fetches nothing. Get the source with
#
#   git clone https://github.com/joyieldInc/predixy /tmp/predixy
#   git -C /tmp/predixy checkout ca1630a6b476a226d88054f652489b3b810471cd   # the commit measured
#   PREDIXY_SRC=/tmp/predixy bench/predixy.sh build
#
# The source is copied to $PREDIXY_DIR/build (default target/bench-peers/predixy, gitignored) and
# built there with make; PREDIXY_SRC itself is left untouched. Fixes applied to the copy (each
# only when missing, so rebuilding is idempotent):
#   - src/String.h uses localtime_r and strftime without <time.h>, which gcc 12 rejects:
#     `#include <time.h>` is added.
# The binary ends up in $PREDIXY_DIR/bin/predixy, with the commit it came from in
# $PREDIXY_DIR/SOURCE.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PREDIXY_DIR=${PREDIXY_DIR:-$ROOT/target/bench-peers/predixy}
BIN=$PREDIXY_DIR/bin/predixy
TESTED_COMMIT=ca1630a6b476a226d88054f652489b3b810471cd

how_to_get() {
    cat >&2 <<EOF
predixy: get the source first (this script fetches nothing):
  git clone https://github.com/joyieldInc/predixy /tmp/predixy
  git -C /tmp/predixy checkout $TESTED_COMMIT
  PREDIXY_SRC=/tmp/predixy bench/predixy.sh build
EOF
}

# add_include FILE HEADER: add `#include <HEADER>` after the last #include of FILE, unless present.
add_include() {
    local file="$1" header="$2" last
    grep -q "^#include <$header>" "$file" && return 0
    last=$(grep -n '^#include' "$file" | tail -n 1 | cut -d: -f1)
    [ -n "$last" ] || { echo "predixy: no #include in $file to add <$header> after" >&2; return 1; }
    sed -i "${last}a #include <$header>" "$file"
    echo "predixy: added #include <$header> to ${file#"$PREDIXY_DIR"/}" >&2
}

build() {
    local src=${PREDIXY_SRC:-}
    if [ -z "$src" ]; then
        echo "predixy: set PREDIXY_SRC to a checkout of predixy" >&2
        how_to_get
        exit 2
    fi
    if [ ! -f "$src/src/Makefile" ] || [ ! -f "$src/src/String.h" ]; then
        echo "predixy: $src does not look like predixy's source (no src/Makefile, src/String.h)" >&2
        how_to_get
        exit 2
    fi
    command -v make >/dev/null && command -v "${CXX:-g++}" >/dev/null || {
        echo "predixy: building needs make and a C++ compiler (${CXX:-g++})" >&2
        exit 2
    }
    local commit="unknown (not a git checkout)"
    # Only a checkout of its own (not a plain copy inside some other repository).
    if [ "$(git -C "$src" rev-parse --show-toplevel 2>/dev/null)" = "$(cd "$src" && pwd -P)" ]; then
        commit=$(git -C "$src" rev-parse HEAD)
        if [ "$commit" != "$TESTED_COMMIT" ]; then
            echo "predixy: note: $src is at $commit, the figures in bench/README.md are of $TESTED_COMMIT" >&2
        fi
    fi
    mkdir -p "$PREDIXY_DIR/bin"
    # A fresh copy of the source (objects of an earlier build of other source must not survive).
    rm -rf "$PREDIXY_DIR/build"
    mkdir -p "$PREDIXY_DIR/build"
    (cd "$src" && tar -c --exclude=.git --exclude='*.o' --exclude=src/predixy .) |
        tar -x -C "$PREDIXY_DIR/build"
    add_include "$PREDIXY_DIR/build/src/String.h" time.h
    echo "predixy: building in $PREDIXY_DIR/build (make, about a minute)" >&2
    # The top-level Makefile calls plain `make`, which drops -j; build in src directly.
    if ! nice make -C "$PREDIXY_DIR/build/src" -j"$(nproc)" >"$PREDIXY_DIR/build.log" 2>&1; then
        grep -E 'error' "$PREDIXY_DIR/build.log" | head -n 20 >&2 || true
        echo "predixy: build failed, see $PREDIXY_DIR/build.log (a missing #include is the usual" \
            "cause with newer compilers: add it with add_include in bench/predixy.sh)" >&2
        exit 1
    fi
    cp "$PREDIXY_DIR/build/src/predixy" "$BIN.new"
    mv "$BIN.new" "$BIN"
    echo "$commit" >"$PREDIXY_DIR/SOURCE"
    echo "$BIN"
}

# conf PORT NODE_PORT...: the benchmark config (syntax of predixy's conf/predixy.conf, auth.conf
# and cluster.conf). WorkerThreads 1 (PREDIXY_THREADS overrides) like redisforge-proxy on <= 2
# cores; reads go to masters only, as redisforge-proxy's default read_from = "master"; notice-level
# logging (a line per client connection) is off, like redisforge-proxy at level "warn".
conf() {
    [ "$#" -ge 2 ] || { echo "usage: bench/predixy.sh conf PORT NODE_PORT..." >&2; exit 2; }
    local port="$1" node
    shift
    cat <<EOF
Name redisforge-bench
Bind 127.0.0.1:$port
WorkerThreads ${PREDIXY_THREADS:-1}
ClientTimeout 0
LogVerbSample 0
LogDebugSample 0
LogInfoSample 0
LogNoticeSample 0
LogWarnSample 1
LogErrorSample 1
Authority {
    Auth {
        Mode write
    }
}
ClusterServerPool {
    MasterReadPriority 100
    StaticSlaveReadPriority 0
    DynamicSlaveReadPriority 0
    RefreshInterval 1
    Servers {
EOF
    for node in "$@"; do
        echo "        + 127.0.0.1:$node"
    done
    echo "    }"
    echo "}"
}

case "${1:-}" in
    build) build ;;
    conf) shift; conf "$@" ;;
    path)
        if [ -x "$BIN" ]; then
            echo "$BIN"
        else
            echo "predixy: not built ($BIN missing); build it with: PREDIXY_SRC=DIR bench/predixy.sh build" >&2
            exit 1
        fi ;;
    -h|--help) sed -n '2,24p' "$0" ;;
    *) echo "usage: bench/predixy.sh build|path|conf (see --help)" >&2; exit 2 ;;
esac
