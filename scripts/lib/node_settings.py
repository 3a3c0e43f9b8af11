#!/usr/bin/env python3
"""Saves a Redis node's settings (CONFIG GET *) and puts them back on several nodes, for
scripts/redis-suite.sh: a unit of Redis' test suite that fails half-way leaves settings such as
maxmemory behind, which would fail the units after it.

  node_settings.py save FILE PORT
  node_settings.py restore FILE PROXY_PORT NODE_PORT...

restore sets every setting that differs from FILE on each node (those a running node cannot
change are left alone), resets the nodes' statistics, and lifts a CLIENT PAUSE of the proxy.
"""
import json
import socket
import sys
import time

# Settings that name the node itself or cannot change while it runs.
FIXED = {
    "port", "tls-port", "bind", "dir", "dbfilename", "logfile", "pidfile", "unixsocket", "unixsocketperm",
    "cluster-config-file", "cluster-enabled", "cluster-port", "cluster-announce-ip", "cluster-announce-port",
    "cluster-announce-bus-port", "cluster-announce-tls-port", "cluster-announce-hostname",
    "cluster-announce-human-nodename", "replicaof", "slaveof", "masterauth", "masteruser", "appendfilename",
    "appenddirname", "daemonize", "io-threads", "io-threads-do-reads", "always-show-logo", "syslog-enabled",
    "syslog-ident", "syslog-facility", "supervised", "enable-debug-command", "enable-module-command",
    "enable-protected-configs", "set-proc-title", "proc-title-template", "aclfile", "databases", "tcp-backlog",
    "disable-thp", "locale-collate", "oom-score-adj-values", "replica-announce-ip",
}


def command(port, *args):
    """Sends one command, returns its reply (bytes, list, None, or an Exception for an error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rb")
        encoded = [a.encode() if isinstance(a, str) else a for a in args]
        sock.sendall(b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in encoded))
        return read(stream)


def read(stream):
    line = stream.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [read(stream) for _ in range(count)]
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2]
    if kind == b"-":
        return Exception(rest.decode())
    return rest


def settings(port):
    """The node's settings; a node kept busy by a script a test left running is freed first."""
    for _ in range(50):
        pairs = command(port, "CONFIG", "GET", "*")
        if not isinstance(pairs, Exception):
            return {pairs[i].decode(): pairs[i + 1].decode("latin1") for i in range(0, len(pairs), 2)}
        command(port, "SCRIPT", "KILL")
        command(port, "FUNCTION", "KILL")
        time.sleep(0.2)
    raise SystemExit(f"node {port} does not answer CONFIG GET: {pairs}")


def main():
    if sys.argv[1] == "save":
        with open(sys.argv[2], "w") as out:
            json.dump(settings(int(sys.argv[3])), out)
        return
    with open(sys.argv[2]) as saved:
        fresh = json.load(saved)
    command(int(sys.argv[3]), "CLIENT", "UNPAUSE")
    for port in map(int, sys.argv[4:]):
        now = settings(port)
        for name, value in fresh.items():
            if name not in FIXED and now.get(name) != value:
                command(port, "CONFIG", "SET", name, value.encode("latin1"))
        command(port, "CONFIG", "RESETSTAT")


if __name__ == "__main__":
    main()
