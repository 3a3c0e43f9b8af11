#!/usr/bin/env python3
"""Aggregate bench/run.sh raw results into markdown tables (stdlib only).

    report.py RAW_CSV [--meta META_TSV] [--write RESULTS_MD]

RAW_CSV columns: round,workload,target,rps,p50_ms,p99_ms,cpu_us_per_req,rss_kb,hwm_kb,requests,
secs,status (status "ok" or why the run has no numbers). META_TSV lines, tab-separated:
`command|date|loadavg|rounds|quick|redis|proxy <TAB> value` and `target|workload <TAB> name <TAB> text`.

Prints the report to stdout. With --write, replaces the "latest run" section of RESULTS_MD (from
the LATEST marker to the end) and keeps what comes before it; a new file gets a short header.
"""

import argparse
import csv
import os
import platform
import statistics
import sys
from collections import OrderedDict

LATEST = "<!-- latest run: everything below is rewritten by bench/run.sh --write -->"

HEADER = """# RedisForge benchmark results

Written by `bench/run.sh --write` (see `bench/README.md` for what is measured and how to read it).
Everything below the marker is replaced by each run; notes above it are kept.

"""


def num(text):
    """float or None for empty/unparseable/infinite values."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return value


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0, suffix=""):
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}{suffix}"
    return f"{value:,.{digits}f}{suffix}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def read_meta(path):
    meta = {"target": OrderedDict(), "workload": OrderedDict()}
    if not path:
        return meta
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] in ("target", "workload") and len(parts) >= 3:
                meta[parts[0]][parts[1]] = parts[2]
            elif len(parts) >= 2:
                meta[parts[0]] = parts[1]
    return meta


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
    }


def aggregate(rows):
    """{(workload, target): stats} in first-seen order, plus the failed runs."""
    groups = OrderedDict()
    failures = []
    for row in rows:
        key = (row["workload"], row["target"])
        group = groups.setdefault(key, [])
        if row["status"] != "ok":
            failures.append(row)
            continue
        group.append(row)
    stats = OrderedDict()
    for key, runs in groups.items():
        rps = [num(r["rps"]) for r in runs]
        rps_ok = [v for v in rps if v is not None]
        med = median(rps)
        spread = None
        if len(rps_ok) >= 2 and med:
            spread = (max(rps_ok) - min(rps_ok)) / med * 100
        stats[key] = {
            "runs": len(runs),
            "rps": med,
            "spread": spread,
            "p50": median(num(r["p50_ms"]) for r in runs),
            "p99": median(num(r["p99_ms"]) for r in runs),
            "cpu": median(num(r["cpu_us_per_req"]) for r in runs),
            "rss": median(num(r["rss_kb"]) for r in runs),
            "hwm": max((num(r["hwm_kb"]) or 0 for r in runs), default=0) or None,
            "secs": median(num(r["secs"]) for r in runs),
        }
    return stats, failures


def mib(kb):
    return None if kb is None else kb / 1024


# (target, reference, label) of the ratio columns.
PAIRS = [
    ("proxy", "direct", "proxy/direct"),
    ("proxy", "nutcracker", "proxy/nutcracker"),
    ("proxy", "nutcracker-r", "proxy/nutcracker-r"),
    ("proxy", "predixy", "proxy/predixy"),
    ("proxy-tls", "proxy", "TLS / plain proxy"),
]
# Targets with a proxy process whose CPU time is measured.
PROXY_TARGETS = ["proxy", "proxy-tls", "nutcracker", "nutcracker-r", "predixy"]
UNPIPELINED = ["set", "get"]
PIPELINED = ["set-p16", "get-p16"]


def get(stats, workload, target, field):
    s = stats.get((workload, target))
    return None if s is None else s[field]


def verdict(values, ok):
    """met / not met over the measured values (None = not measured)."""
    measured = [v for v in values if v is not None]
    if not measured:
        return "not measured"
    if not all(ok(v) for v in measured):
        return "**not met**"
    return "met" if len(measured) == len(values) else "met (partly measured)"


def listing(pairs, digits=2, suffix=""):
    """`set` 0.93, `get` 0.88"""
    return ", ".join(f"`{wl}` {fmt(v, digits, suffix)}" for wl, v in pairs) or "—"


def check_goals(stats, workloads):
    """(goal, measured, verdict) rows for the goals of the issue."""
    rows = []

    def ratios(wls, a, b, field="rps"):
        return [(wl, ratio(get(stats, wl, a, field), get(stats, wl, b, field))) for wl in wls]

    def ratio_goal(goal, wls, a, b, limit):
        pairs = ratios([wl for wl in wls if wl in workloads], a, b)
        vals = [v for _, v in pairs]
        if not pairs:
            vals = [None]
        rows.append((goal, listing(pairs) if any(v is not None for v in vals) else "—",
                     verdict(vals, lambda v: v >= limit)))

    ratio_goal("ops/s ≥ 0.90× direct, unpipelined", UNPIPELINED, "proxy", "direct", 0.90)
    ratio_goal("ops/s ≥ 0.75× direct with `-P 16`", PIPELINED, "proxy", "direct", 0.75)
    ratio_goal("MSET ops/s ≥ 0.80× direct (direct sends single-slot MSETs)", ["mset"],
               "proxy", "direct", 0.80)

    pairs = [(wl, v) for wl, v in ratios(workloads, "proxy", "nutcracker") if v is not None]
    rows.append(("ops/s ahead of nutcracker in every row", listing(pairs),
                 verdict([v for _, v in pairs] or [None], lambda v: v > 1)))
    # Not a goal of its own: the same comparison with the cluster's backend work behind nutcracker.
    pairs = [(wl, v) for wl, v in ratios(workloads, "proxy", "nutcracker-r") if v is not None]
    if pairs:
        rows.append(("(for comparison) ops/s against nutcracker-r, whose servers replicate like the cluster's",
                     listing(pairs), verdict([v for _, v in pairs], lambda v: v > 1)))

    for goal, wls, limit in [
        ("proxy CPU ≤ 10 µs per request, unpipelined", UNPIPELINED, 10),
        ("proxy CPU ≤ 1.5 µs per request with `-P 16`", PIPELINED, 1.5),
    ]:
        pairs = [(wl, get(stats, wl, "proxy", "cpu")) for wl in wls if wl in workloads]
        vals = [v for _, v in pairs] or [None]
        shown = listing(pairs, 1, " µs") if any(v is not None for v in vals) else "—"
        rows.append((goal, shown, verdict(vals, lambda v, limit=limit: v <= limit)))

    p99_proxy, p99_direct = get(stats, "get-1c", "proxy", "p99"), get(stats, "get-1c", "direct", "p99")
    extra = None if p99_proxy is None or p99_direct is None else p99_proxy - p99_direct
    shown = "—" if extra is None else (
        f"`get-1c` p99 {fmt(p99_proxy, 3)} ms vs direct {fmt(p99_direct, 3)} ms: "
        f"{extra:+.3f} ms")
    rows.append(("p99 with 1 client ≤ direct + 0.1 ms", shown,
                 verdict([extra], lambda v: v <= 0.1 + 1e-9)))

    ratio_goal("TLS ops/s ≥ 0.8× plain proxy, unpipelined", UNPIPELINED, "proxy-tls", "proxy", 0.8)
    return rows


def render(rows, meta):
    stats, failures = aggregate(rows)
    rounds = sorted({r["round"] for r in rows}, key=int)
    workloads = list(OrderedDict.fromkeys(r["workload"] for r in rows))
    targets = list(OrderedDict.fromkeys(r["target"] for r in rows))
    out = []
    w = out.append

    w(f"Medians over {len(rounds)} round(s). ops/s spread = (max − min) / median across rounds. "
      "CPU µs/req = user+system CPU time of the proxy process (redisforge-proxy, nutcracker or predixy) "
      "divided by the requests of the run; RSS = VmRSS after the run, peak = VmHWM (lifetime peak "
      "of the process up to that run).")
    if meta.get("quick") == "1":
        w("")
        w("**Quick run (`--quick`): a tenth of the requests per run; a smoke test, not a measurement.**")
    w("")
    w("| workload | target | ops/s | spread | p50 ms | p99 ms | CPU µs/req | RSS MiB | peak MiB | runs |")
    w("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for wl in workloads:
        for t in targets:
            s = stats.get((wl, t))
            if s is None:
                continue
            w(f"| {wl} | {t} | {fmt(s['rps'])} | {fmt(s['spread'], 0, '%')} | {fmt(s['p50'], 3)} | "
              f"{fmt(s['p99'], 3)} | {fmt(s['cpu'], 1)} | {fmt(mib(s['rss']), 1)} | "
              f"{fmt(mib(s['hwm']), 1)} | {s['runs']}/{len(rounds)} |")

    pairs = [p for p in PAIRS if p[0] in targets and p[1] in targets]
    proxies = [t for t in PROXY_TARGETS if t in targets]
    cpu_pairs = [p for p in pairs if p[1] != "direct"]
    if pairs or proxies:
        w("")
        w("Ratios of medians (ops/s: above 1 = the first target faster; p99 and CPU: above 1 = the "
          "first target slower/costlier), and the CPU time per request of each proxy.")
        w("")
        head = ["workload"]
        for _, _, label in pairs:
            head += [f"ops/s {label}", f"p99 {label}"]
        head += [f"CPU {label}" for _, _, label in cpu_pairs]
        head += [f"CPU µs/req {t}" for t in proxies]
        w("| " + " | ".join(head) + " |")
        w("|---" + "|--:" * (len(head) - 1) + "|")
        for wl in workloads:
            cells = [wl]
            for a, b, _ in pairs:
                cells.append(fmt(ratio(get(stats, wl, a, "rps"), get(stats, wl, b, "rps")), 2))
                cells.append(fmt(ratio(get(stats, wl, a, "p99"), get(stats, wl, b, "p99")), 2))
            for a, b, _ in cpu_pairs:
                cells.append(fmt(ratio(get(stats, wl, a, "cpu"), get(stats, wl, b, "cpu")), 2))
            for t in proxies:
                cells.append(fmt(get(stats, wl, t, "cpu"), 1))
            w("| " + " | ".join(cells) + " |")

    w("")
    w("Targets (the goals of the issue, checked against the medians above; "
      "\"unpipelined\" = `set` and `get`, 50 clients):")
    w("")
    w("| goal | measured (medians) | verdict |")
    w("|---|---|---|")
    for goal, measured, verdict in check_goals(stats, workloads):
        w(f"| {goal} | {measured} | {verdict} |")

    if meta["workload"]:
        w("")
        w("Workloads (redis-benchmark 7.0, 64-byte values, 100k random keys prefilled):")
        w("")
        for name, about in meta["workload"].items():
            w(f"- `{name}`: {about}")
    if meta["target"]:
        w("")
        w("Benchmark targets:")
        w("")
        for name, about in meta["target"].items():
            w(f"- `{name}`: {about}")

    if failures:
        w("")
        w(f"Runs without numbers ({len(failures)}):")
        w("")
        for r in failures:
            w(f"- round {r['round']} {r['workload']} {r['target']}: {r['status']}")

    secs = [num(r["secs"]) for r in rows if r["status"] == "ok"]
    secs = [s for s in secs if s is not None]
    if secs:
        w("")
        w(f"Run length: median {statistics.median(secs):.1f} s, "
          f"shortest {min(secs):.1f} s, longest {max(secs):.1f} s.")
    return "\n".join(out) + "\n"


def machine_block(meta):
    m = machine()
    lines = [
        f"- date: {meta.get('date', '?')}",
        f"- command: `{meta.get('command', '?')}`",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, {m['kernel']}",
        f"- load average at start: {meta.get('loadavg', '?')} (the machine is shared: numbers are noisy)",
        f"- redis: {meta.get('redis', '?')}",
        f"- proxy: {meta.get('proxy', '?')}",
    ]
    return "\n".join(lines) + "\n"


def write_results(path, body):
    prefix = HEADER
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if LATEST in text:
            prefix = text.split(LATEST, 1)[0]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(prefix)
        f.write(LATEST + "\n\n## Latest run\n\n")
        f.write(body)
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw")
    parser.add_argument("--meta")
    parser.add_argument("--write", metavar="RESULTS_MD")
    args = parser.parse_args()
    rows = read_rows(args.raw)
    if not rows:
        print("no results", file=sys.stderr)
        return 1
    meta = read_meta(args.meta)
    body = machine_block(meta) + "\n" + render(rows, meta)
    sys.stdout.write(body)
    if args.write:
        write_results(args.write, body)
        print(f"\nwritten to {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
