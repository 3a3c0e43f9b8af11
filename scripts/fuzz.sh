#!/usr/bin/env bash
# Fuzz the proxy's pure core for a bounded time: scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS (default 60) is the fuzzing time of the whole run, split evenly between the targets
# (default: all of fuzz/fuzz_targets: resp_request, resp_scan, route); building comes on top.
#
# Mode, chosen automatically (FUZZ_MODE=libfuzzer|replay forces one):
# - libfuzzer: when a nightly toolchain and cargo-fuzz are installed. `cargo +nightly fuzz run`,
#   with new inputs kept in a temp dir so the checked-in corpus (fuzz/corpus/<target>) is only
#   read. A failing input lands in fuzz/artifacts/<target>/.
# - replay: anywhere else (stable is enough). Each target is a plain binary that runs its corpus,
#   then deterministic xorshift mutations of it (FUZZ_SEED, default 1) until its time is up. A
#   failing input is written to fuzz/artifacts/<target>/crash-<hash>.
# Either way the script fails when a target finds a failing input.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_TOTAL="${1:-60}"
shift || true
case "$SECONDS_TOTAL" in
    '' | *[!0-9]*)
        echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
        exit 2
        ;;
esac
TARGETS=("$@")
if [ "${#TARGETS[@]}" -eq 0 ]; then
    TARGETS=(resp_request resp_scan route)
fi
PER_TARGET=$((SECONDS_TOTAL / ${#TARGETS[@]}))
if [ "$PER_TARGET" -lt 1 ]; then
    PER_TARGET=1
fi

mode="${FUZZ_MODE:-}"
if [ -z "$mode" ]; then
    if rustup toolchain list 2>/dev/null | grep -q '^nightly' && cargo fuzz --version >/dev/null 2>&1; then
        mode=libfuzzer
    else
        mode=replay
    fi
fi
echo "fuzz: mode $mode, ${PER_TARGET}s per target: ${TARGETS[*]}"

case "$mode" in
    libfuzzer)
        cd fuzz
        for target in "${TARGETS[@]}"; do
            work="$(mktemp -d)"
            # The temp dir comes first: libFuzzer writes new inputs to the first corpus dir only.
            if ! cargo +nightly fuzz run "$target" "$work" "corpus/$target" -- \
                -max_total_time="$PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
                rm -rf "$work"
                echo "fuzz: $target found a failing input (see fuzz/artifacts/$target/)" >&2
                exit 1
            fi
            rm -rf "$work"
        done
        ;;
    replay)
        cargo build --manifest-path fuzz/Cargo.toml --profile replay --no-default-features --bins
        for target in "${TARGETS[@]}"; do
            if ! "fuzz/target/replay/$target" --replay --seconds "$PER_TARGET" --seed "${FUZZ_SEED:-1}"; then
                echo "fuzz: $target found a failing input (see fuzz/artifacts/$target/)" >&2
                exit 1
            fi
        done
        ;;
    *)
        echo "fuzz: unknown FUZZ_MODE '$mode' (libfuzzer or replay)" >&2
        exit 2
        ;;
esac
echo "fuzz: ok"
