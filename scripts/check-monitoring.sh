#!/usr/bin/env bash
# Checks everything under monitoring/: scripts/check-monitoring.sh
#
# - the Prometheus config, alert rules and their unit tests (promtool);
# - the Alertmanager config (amtool);
# - the proxy's /metrics output lints clean (promtool check metrics);
# - the dashboard and the rules only use metric names the proxy exports (scripts/check-dashboard.py).
#
# Installs Debian's prometheus and prometheus-alertmanager packages (for promtool and amtool) when
# they are missing. Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then
    echo "== installing promtool and amtool (prometheus, prometheus-alertmanager)"
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        prometheus prometheus-alertmanager
    # Only the tools are wanted: stop the services if the packages started them.
    "${SUDO[@]}" service prometheus stop >/dev/null 2>&1 || true
    "${SUDO[@]}" service prometheus-alertmanager stop >/dev/null 2>&1 || true
fi
echo "promtool: $(promtool --version 2>&1 | head -n 1)"
echo "amtool: $(amtool --version 2>&1 | head -n 1)"

echo "== promtool check config"
promtool check config monitoring/prometheus/prometheus.yml

echo "== promtool check rules"
promtool check rules monitoring/prometheus/alerts.yml

echo "== promtool test rules"
promtool test rules monitoring/prometheus/alerts_test.yml

echo "== amtool check-config"
amtool check-config monitoring/alertmanager/alertmanager.yml

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# One cargo run prints both the exported names and a sample rendering, each line after a marker.
echo "== exported metrics (cargo test metrics::tests::print_)"
cargo test --quiet --workspace --lib metrics::tests::print_ -- --nocapture --test-threads=1 >"$work/out"
# The markers are matched anywhere in a line: the harness's `test … ` may precede the first one.
sed -n 's/^.*EXPORTED-METRIC //p' "$work/out" >"$work/names"
sed -n 's/^.*RENDERED-METRICS //p' "$work/out" >"$work/metrics.txt"
if [ ! -s "$work/names" ] || [ ! -s "$work/metrics.txt" ]; then
    echo "no EXPORTED-METRIC or RENDERED-METRICS lines in the test output:" >&2
    cat "$work/out" >&2
    exit 1
fi

echo "== promtool check metrics (the proxy's /metrics output)"
promtool check metrics <"$work/metrics.txt"
echo "  SUCCESS: $(grep -c '^# TYPE' "$work/metrics.txt") metric families lint clean"

echo "== dashboard and rules use exported names only"
python3 scripts/check-dashboard.py --exported "$work/names"

echo "monitoring: all checks passed"
