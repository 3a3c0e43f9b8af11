#!/usr/bin/env bash
# Syscalls and CPU per request of a running proxy while redis-benchmark drives it.
#
#   bench/syscalls.sh PID PORT REDIS-BENCHMARK-ARGS...
#   bench/syscalls.sh 1234 6380 -t get -n 100000 -c 50 -r 100000 -d 64
#
# Counts writev, sendto (RedisForge writes with send since 2026-12-06), recvfrom, epoll_wait and futex calls of process PID with perf's syscall
# tracepoints (Debian's linux-perf; they work where hardware counters do not) and reads its
# utime+stime from /proc/PID/stat before and after. `-n` must be among the arguments.
set -euo pipefail
pid=$1 port=$2
shift 2
n=$(printf '%s\n' "$@" | grep -A1 -x -- '-n' | tail -1)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
perf stat -x, -o "$out" -p "$pid" \
    -e 'syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,context-switches' &
perf_pid=$!
sleep 0.3
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
rps=$(redis-benchmark -p "$port" --csv "$@" | tail -1 | cut -d, -f2 | tr -d '"')
read -r u2 s2 < <(awk '{print $14, $15}' "/proc/$pid/stat")
kill -INT "$perf_pid"
wait "$perf_pid" 2>/dev/null || true
python3 - "$out" "$n" "$rps" "$u1" "$s1" "$u2" "$s2" <<'PY'
import sys
path, n, rps = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
u1, s1, u2, s2 = map(int, sys.argv[4:8])
counts = {}
for line in open(path):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].isdigit():
        counts[parts[2].split(":")[-1].replace("sys_enter_", "")] = int(parts[0])
ticks_us = 10_000  # /proc/PID/stat counts 1/100 s
print(f"ops/s {rps:,.0f}  CPU {(u2 - u1 + s2 - s1) * ticks_us / n:.2f} us/req (user {(u2 - u1) * ticks_us / n:.2f})  "
      + "  ".join(f"{k} {v / n:.2f}/req" for k, v in counts.items()))
PY
