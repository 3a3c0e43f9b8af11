"""What the redis-py sessions of the client matrix share: their command line and reply checks.

Each session script (sync_matrix.py, asyncio_matrix.py) is run by tests/client_matrix.rs against
a real proxy and exits non-zero with a message naming the first wrong reply."""

import argparse
import sys


def parse_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-ca", default="", help="CA file to trust; set = connect with TLS")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--prefix", required=True, help="unique key prefix for this run")
    parser.add_argument("--protocol", type=int, choices=[2, 3], default=2)
    return parser.parse_args()


def connection_kwargs(args, name):
    """redis-py connection options for `args`: ACL login, timeouts, TLS with hostname check."""
    kwargs = dict(
        host=args.host,
        port=args.port,
        username=args.user,
        password=args.password,
        protocol=args.protocol,
        client_name=name,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
    )
    if args.tls_ca:
        kwargs.update(ssl=True, ssl_ca_certs=args.tls_ca, ssl_cert_reqs="required", ssl_check_hostname=True)
    return kwargs


class Checks:
    """Counts checks; the first wrong reply ends the run with its label, what came and what was wanted."""

    def __init__(self, session):
        self.session = session
        self.count = 0

    def eq(self, label, got, want):
        self.count += 1
        if got != want:
            sys.exit(f"{self.session}: {label}: got {got!r}, want {want!r}")

    def true(self, label, cond, got):
        self.count += 1
        if not cond:
            sys.exit(f"{self.session}: {label}: unexpected reply {got!r}")

    def done(self, transport):
        print(f"{self.session} over {transport}: {self.count} checks passed")


def scan_keys_sync(scan, pattern, max_calls=1000):
    """All keys a SCAN cursor walk returns for `pattern`, with the number of calls bounded."""
    cursor, found = 0, set()
    for _ in range(max_calls):
        cursor, keys = scan(cursor, match=pattern, count=10)
        found.update(keys)
        if int(cursor) == 0:
            return found
    sys.exit(f"SCAN {pattern}: cursor did not come back to 0 within {max_calls} calls")
