#!/usr/bin/env python3
"""Memory per idle client: opens N connections to a running proxy and reads its VmRSS.

    bench/idle.py --pid PID --port PORT [--clients 5000] [--ping-share 0.5]
                  [--request ping|set-get] [--waves 1] [--settle 2] [--tls-ca CA.crt]

Part of the clients (half by default) send a request first and read the reply, so both a client
that never spoke and one that did are counted: one PING, or with `--request set-get` a SET and a
GET of its own key in one write (a client whose pipeline, reply queue and buffers were used).
With `--waves N` the clients connect in N waves, `--settle` seconds apart: a proxy that lets idle
clients give their buffers back (after 2 s without a request) serves later waves from the memory
earlier ones returned, which is what many clients that idle after a burst cost. Prints VmRSS
before and after and the cost per client, per wave and overall. The proxy's `listen.max_clients`
must allow all clients, and `ulimit -n` must allow as many sockets here. With `--tls-ca` the
clients connect to a TLS listener (TLS 1.3, the server's certificate checked against that CA, for
`localhost`), so the cost of a client's TLS session is counted too.
"""

import argparse
import resource
import socket
import ssl
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
    parser.add_argument("--request", choices=["ping", "set-get"], default="ping")
    parser.add_argument("--waves", type=int, default=1)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--tls-ca", help="connect over TLS, trusting this CA")
    args = parser.parse_args()
    tls = None
    if args.tls_ca:
        tls = ssl.create_default_context(cafile=args.tls_ca)
        tls.minimum_version = ssl.TLSVersion.TLSv1_3
    total = args.clients * args.waves

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < total + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, total + 100), hard))

    before = rss_kib(args.pid)
    clients = []
    talking = int(args.clients * args.ping_share)
    waves = []
    for wave in range(args.waves):
        wave_start = rss_kib(args.pid)
        for i in range(args.clients):
            sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
            if tls:
                sock = tls.wrap_socket(sock, server_hostname="localhost")
            if i < talking:
                talk(sock, args.request, f"idle:{wave}:{i}".encode())
            clients.append(sock)
        # Let the proxy finish accepting and settle its buffers.
        time.sleep(args.settle)
        waves.append((rss_kib(args.pid) - wave_start) / args.clients)
    after = rss_kib(args.pid)
    per_client = (after - before) / total
    by_wave = ""
    if args.waves > 1:
        by_wave = " (by wave: " + ", ".join(f"{kib:.2f}" for kib in waves) + ")"
    print(
        f"{total} idle clients ({talking * args.waves} sent {args.request}): VmRSS {before / 1024:.1f} MiB -> "
        f"{after / 1024:.1f} MiB, {per_client:.2f} KiB per client{by_wave}"
    )
    for sock in clients:
        sock.close()


def talk(sock: socket.socket, request: str, key: bytes) -> None:
    """Sends `request` and reads its replies whole."""
    if request == "ping":
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        expected = b"+PONG\r\n"
    else:
        set_get = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n"
        sock.sendall(set_get % (len(key), key, len(key), key))
        expected = b"+OK\r\n$5\r\nhello\r\n"
    reply = b""
    while len(reply) < len(expected):
        chunk = sock.recv(64)
        if not chunk:
            break
        reply += chunk
    if reply != expected:
        raise RuntimeError(f"{key!r}: {reply!r}")


if __name__ == "__main__":
    main()
