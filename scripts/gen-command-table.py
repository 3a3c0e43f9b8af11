#!/usr/bin/env python3
"""Generate crates/proxy/src/command/table.rs from a real Redis server's `COMMAND` reply.

The proxy needs arity, flags, ACL categories and key specs for every command and subcommand on its
hot path, before it has talked to any node. Rather than copying them by hand (and drifting from what
Redis really does), this script starts a throwaway `redis-server`, reads `COMMAND` over a plain socket
(RESP2, no client library), and writes the table as Rust data. Standard library only.

Usage:
    python3 scripts/gen-command-table.py [--redis-server PATH] [--out PATH] [--check]

`--check` exits non-zero when the file on disk differs from what would be generated (for CI).
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "crates", "proxy", "src", "command", "table.rs")

# Commands newer than the generating server that the proxy must recognise without first learning them
# from a node: clients send CLIENT SETINFO on connect and the proxy answers it itself. The entries mirror
# Redis 7.2's COMMAND output for them.
SUPPLEMENT = [
    ["client|no-touch", 3, ["noscript", "loading", "stale"], 0, 0, 0, ["@slow", "@connection"], [], [], []],
    ["client|setinfo", 4, ["noscript", "loading", "stale"], 0, 0, 0, ["@slow", "@connection"], [], [], []],
    ["waitaof", 4, ["blocking"], 0, 0, 0, ["@slow", "@blocking", "@connection"], [], [], []],
]


class RespError(Exception):
    pass


def read_reply(f):
    """Reads one RESP2 reply from a buffered socket file; bulk strings become str."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise RespError("connection closed mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RespError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        return f.read(n + 2)[:-2].decode()
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [read_reply(f) for _ in range(n)]
    raise RespError("unexpected reply type %r" % line)


def request(port, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(out)
        with s.makefile("rb") as f:
            return read_reply(f)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch_commands(server):
    """Starts a throwaway server in a temp dir, returns (version, COMMAND reply); always stops it."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 10
            while True:
                try:
                    request(port, "PING")
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise SystemExit("redis-server did not start on port %d" % port)
                    time.sleep(0.05)
            info = request(port, "INFO", "server")
            version = next(l.split(":", 1)[1].strip() for l in info.splitlines()
                           if l.startswith("redis_version:"))
            return version, request(port, "COMMAND")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def pairs(flat):
    """RESP2 sends maps as flat [k1, v1, k2, v2, ...] arrays."""
    return dict(zip(flat[::2], flat[1::2]))


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def str_slice(items):
    return "&[" + ", ".join(rust_str(i) for i in items) + "]"


def key_spec(raw):
    spec = pairs(raw)
    bs, fk = pairs(spec["begin_search"]), pairs(spec["find_keys"])
    bs_spec, fk_spec = pairs(bs.get("spec") or []), pairs(fk.get("spec") or [])
    if bs["type"] == "index":
        begin = "I(%d)" % bs_spec["index"]
    elif bs["type"] == "keyword":
        begin = "W(%s, %d)" % (rust_str(bs_spec["keyword"]), bs_spec["startfrom"])
    else:
        begin = "UB"
    if fk["type"] == "range":
        find = "R(%d, %d, %d)" % (fk_spec["lastkey"], fk_spec["keystep"], fk_spec["limit"])
    elif fk["type"] == "keynum":
        find = "N(%d, %d, %d)" % (fk_spec["keynumidx"], fk_spec["firstkey"], fk_spec["keystep"])
    else:
        find = "UF"
    return "K(%s, %s, %s)" % (str_slice(spec["flags"]), begin, find)


def command_line(c):
    name, arity, flags = c[0].lower(), c[1], c[2]
    acl = [a.lstrip("@").lower() for a in c[6]]
    specs = ", ".join(key_spec(s) for s in c[8])
    return "    C(%s, %d, %s, %s, &[%s])," % (rust_str(name), arity, str_slice(flags), str_slice(acl), specs)


def flatten(commands):
    """Containers first, each followed by its subcommands, all sorted so regenerating is stable."""
    for c in sorted(commands, key=lambda c: c[0].lower()):
        yield c
        yield from flatten(c[9] if len(c) > 9 and c[9] else [])


def render(version, commands):
    known = {c[0].lower() for c in flatten(commands)}
    extra = [c for c in SUPPLEMENT if c[0] not in known]
    lines = [
        "// @generated by scripts/gen-command-table.py from the `COMMAND` reply of Redis %s." % version,
        "// Do not edit by hand: change the script and run `python3 scripts/gen-command-table.py`.",
        "",
        "//! Built-in command table: one `C(name, arity, flags, acl categories, key specs)` per command",
        "//! and subcommand (`container|sub` follows its container). Key specs are",
        "//! `K(flags, begin_search, find_keys)` with `I(index)` / `W(keyword, startfrom)` / `UB` and",
        "//! `R(lastkey, keystep, limit)` / `N(keynumidx, firstkey, keystep)` / `UF`, as Redis defines them.",
        "",
        "use super::RawCommand as C;",
        "use super::keys::RawBegin::{Index as I, Keyword as W, Unknown as UB};",
        "use super::keys::RawFind::{Keynum as N, Range as R, Unknown as UF};",
        "use super::keys::RawKeySpec as K;",
        "",
        "/// Version of the Redis server the table was generated from.",
        "pub(super) const REDIS_VERSION: &str = %s;" % rust_str(version),
        "",
        "/// Every command and subcommand `COMMAND` reported, sorted by name.",
        "#[rustfmt::skip]",
        "pub(super) static COMMANDS: &[C] = &[",
    ]
    lines += [command_line(c) for c in flatten(commands)]
    lines += ["];", ""]
    lines += [
        "/// Newer commands the proxy must know before it learns anything from a node (from Redis 7.2).",
        "#[rustfmt::skip]",
        "pub(super) static SUPPLEMENT: &[C] = &[",
    ]
    lines += [command_line(c) for c in extra]
    lines += ["];", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="fail if --out is not up to date")
    args = ap.parse_args()

    version, commands = fetch_commands(args.redis_server)
    text = render(version, commands)
    if args.check:
        with open(args.out) as f:
            if f.read() != text:
                sys.exit("%s is out of date; rerun scripts/gen-command-table.py" % args.out)
        return
    with open(args.out, "w") as f:
        f.write(text)
    print("wrote %s: %d commands from Redis %s" % (args.out, text.count("\n    C("), version))


if __name__ == "__main__":
    main()
