#!/usr/bin/env python3
"""Memory per idle client: opens N connections to a running proxy and reads its VmRSS.

    bench/idle.py --pid PID --port PORT [--clients 5000] [--ping-share 0.5]

Half of the clients (by default) send one PING first and read the reply, so both a client that
never spoke and one that did are counted. Prints VmRSS before and after and the cost per client.
The proxy's `listen.max_clients` must allow N clients, and `ulimit -n` must allow N sockets here.
"""

import argparse
import resource
import socket
import time


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--ping-share", type=float, default=0.5)
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.clients + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.clients + 100), hard))

    before = rss_kib(args.pid)
    clients = []
    pinging = int(args.clients * args.ping_share)
    for i in range(args.clients):
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
        if i < pinging:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
            if reply != b"+PONG\r\n":
                raise RuntimeError(f"client {i}: {reply!r}")
        clients.append(sock)
    # Let the proxy finish accepting and settle its buffers.
    time.sleep(2)
    after = rss_kib(args.pid)
    per_client = (after - before) * 1024 / args.clients
    print(
        f"{args.clients} idle clients ({pinging} sent one PING): VmRSS {before / 1024:.1f} MiB -> "
        f"{after / 1024:.1f} MiB, {per_client / 1024:.2f} KiB per client"
    )
    for sock in clients:
        sock.close()


if __name__ == "__main__":
    main()
