#!/usr/bin/env bash
# The chaos soak for longer than CI's 60 s: scripts/soak.sh [SECONDS] [SEED]
#
# Runs tests/soak (a 3-master, 3-replica cluster, each node in its own network namespace where
# the machine allows it; the proxy; clients mixing every command family, pipelines, transactions,
# pub/sub and blocking pops) for SECONDS (default 600) while a random node is killed, paused or
# partitioned, or a slot migrates, every few seconds. SEED (default: the clock) picks the events;
# a failing run prints its seed, and the same seed replays the same events.
#
# Prints the RELIABILITY lines the README's Reliability section quotes; fails when the soak does
# (a wrong reply, an error away from a fault, an acknowledged write lost outside a failover, ...).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECS="${1:-600}"
case "$SECS" in
    '' | *[!0-9]*)
        echo "usage: scripts/soak.sh [SECONDS] [SEED]" >&2
        exit 2
        ;;
esac
export REDISFORGE_SOAK_SECS="$SECS"
if [ -n "${2:-}" ]; then
    export REDISFORGE_SOAK_SEED="$2"
fi
# redis-server and the toolchain's pieces, as the test command installs them; then the binaries.
scripts/test.sh deps build
cargo test -p redisforge-tests --test soak -- --nocapture 2>&1 | tee "${TMPDIR:-/tmp}/redisforge-soak.log" | grep -E '^(RELIABILITY|NOTE|test |thread )'
