#!/usr/bin/env python3
"""Checks that the Grafana dashboard and the Prometheus rules only use metrics the proxy exports.

Usage: python3 scripts/check-dashboard.py [--exported FILE]

The exported names come from the proxy itself: `cargo test` of `metrics::tests::print_exported_names`
prints them (one per line after a marker), so a renamed metric fails here instead of leaving an empty
panel or an alert that never fires. `--exported FILE` reads the names from FILE (one per line)
instead of running cargo.

Also checks the dashboard's shape: valid JSON, unique panel ids, every panel and query on the
templated `${DS_PROMETHEUS}` data source, and (when promtool is on PATH) that every panel query
parses as PromQL. Exits 1 on any failure.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "monitoring/grafana/redisforge-dashboard.json"
RULE_FILES = [ROOT / "monitoring/prometheus/alerts.yml", ROOT / "monitoring/prometheus/alerts_test.yml"]
MARKER = "EXPORTED-METRIC "
NAME = re.compile(r"redisforge_[a-z_]+")
# Series Prometheus derives from a histogram family.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DATASOURCE_UID = "${DS_PROMETHEUS}"


def exported_names(path):
    if path:
        return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}
    command = [
        "cargo", "test", "--quiet", "-p", "redisforge-proxy", "--lib",
        "metrics::tests::print_exported_names", "--", "--nocapture", "--exact",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"check-dashboard: `{' '.join(command)}` failed:\n{result.stdout}\n{result.stderr}")
    # The marker may follow the harness's `test … ` on the same line.
    names = {line.split(MARKER, 1)[1].strip() for line in result.stdout.splitlines() if MARKER in line}
    if not names:
        sys.exit(f"check-dashboard: no '{MARKER.strip()}' lines in the test output:\n{result.stdout}")
    return names


def unknown_names(text, exported):
    unknown = set()
    for name in set(NAME.findall(text)):
        base = name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in exported:
                base = name[: -len(suffix)]
        if base not in exported:
            unknown.add(name)
    return unknown


def panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def check_shape(dashboard):
    errors = []
    ids = [p.get("id") for p in panels(dashboard)]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        errors.append(f"duplicate panel ids: {sorted(duplicates)}")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    if variables.get("DS_PROMETHEUS", {}).get("type") != "datasource":
        errors.append("no `DS_PROMETHEUS` data source variable in templating")
    for panel in panels(dashboard):
        if panel.get("type") == "row":
            continue
        title = panel.get("title", panel.get("id"))
        if panel.get("datasource", {}).get("uid") != DATASOURCE_UID:
            errors.append(f"panel {title!r}: data source is not {DATASOURCE_UID}")
        targets = panel.get("targets", [])
        if not targets:
            errors.append(f"panel {title!r}: no queries")
        for target in targets:
            if target.get("datasource", {}).get("uid") != DATASOURCE_UID:
                errors.append(f"panel {title!r} query {target.get('refId')}: data source is not {DATASOURCE_UID}")
            if not target.get("expr"):
                errors.append(f"panel {title!r} query {target.get('refId')}: empty expression")
    return errors


def check_promql(dashboard):
    """Parses every panel query with promtool, as recording rules (Grafana variables substituted)."""
    promtool = shutil.which("promtool")
    if not promtool:
        print("check-dashboard: promtool not found, PromQL syntax of panel queries not checked")
        return []
    exprs = [
        t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if t.get("expr")
    ]
    substitutions = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}
    rules = []
    for index, expr in enumerate(exprs):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        # JSON is YAML: no YAML library needed.
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        path = f.name
    try:
        result = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if result.returncode != 0:
        return [f"panel queries do not parse:\n{result.stdout}{result.stderr}"]
    return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exported", help="file with the exported metric names, one per line")
    args = parser.parse_args()

    exported = exported_names(args.exported)
    errors = []
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as error:
        sys.exit(f"check-dashboard: {DASHBOARD.relative_to(ROOT)} is not valid JSON: {error}")
    errors += check_shape(dashboard)
    errors += check_promql(dashboard)

    used = 0
    for path in [DASHBOARD, *RULE_FILES]:
        text = path.read_text()
        used += len(set(NAME.findall(text)))
        for name in sorted(unknown_names(text, exported)):
            errors.append(f"{path.relative_to(ROOT)}: {name} is not exported by the proxy")

    if errors:
        for error in errors:
            print(f"check-dashboard: {error}", file=sys.stderr)
        print(f"check-dashboard: {len(errors)} problem(s); exported names: {', '.join(sorted(exported))}", file=sys.stderr)
        return 1
    print(f"check-dashboard: OK ({len(exported)} exported metrics, {used} names used across dashboard and rules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
