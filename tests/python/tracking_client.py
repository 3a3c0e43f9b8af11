"""redis-py's client-side cache (RESP3 + cache_config) through the RedisForge proxy: reads served
from the cache until another client writes, on every master; hashes, MGET, lists and sets; keys
that expire; a lost tracking stream flushes the cache; concurrent readers never see a value older
than the last acknowledged write (beyond a settle window).

Run by tests/client_redis_py.rs: tracking_client.py PORT METRICS_ADDR PROXY_PID MASTER... KEY...
(as many keys as masters, one per master). redis-py only turns its cache on for servers reporting
Redis 7.4 or later: against an older cluster the script checks redis-py's refusal and says SKIPPED.
"""

import sys
import threading
import time
import urllib.request

import redis
from redis.cache import CacheConfig

REFUSAL = "To maximize compatibility with all Redis products, client-side caching is supported by Redis 7.4 or later"


def check(label, got, want):
    if got != want:
        sys.exit(f"{label}: got {got!r}, want {want!r}")


def eventually(label, what, want, seconds=3.0):
    """Polls what() until it returns want (bounded)."""
    deadline = time.monotonic() + seconds
    got = what()
    while got != want and time.monotonic() < deadline:
        time.sleep(0.02)
        got = what()
    check(label, got, want)


class Proxy:
    def __init__(self, metrics_addr):
        self.url = f"http://{metrics_addr}/metrics"

    def gets(self):
        """GETs the proxy answered so far (each one went to a node: none came from a cache)."""
        body = urllib.request.urlopen(self.url, timeout=5).read().decode()
        for line in body.splitlines():
            if line.startswith('redisforge_commands_total{command="get",result="ok"}'):
                return int(float(line.rsplit(" ", 1)[1]))
        return 0


    def streams_up(self, masters):
        """Whether the proxy's tracking stream to every master is confirmed (they open once a
        client tracks)."""
        body = urllib.request.urlopen(self.url, timeout=5).read().decode()
        up = {m for m in masters if f'redisforge_tracking_stream_up{{node="{m}"}} 1' in body}
        return up == set(masters)


def cached_client(port):
    return redis.Redis(host="127.0.0.1", port=port, protocol=3, cache_config=CacheConfig(), decode_responses=True)


def reads_are_cached_until_a_write(r, plain, proxy, keys):
    for key in keys:
        plain.set(key, "v1")
        check(f"first GET {key}", r.get(key), "v1")
        before = proxy.gets()
        for _ in range(5):
            check(f"cached GET {key}", r.get(key), "v1")
        check(f"GETs sent to the proxy for cached reads of {key}", proxy.gets() - before, 0)
    check("cache size", r.get_cache().size >= len(keys), True)
    for key in keys:
        plain.set(key, "v2")
        eventually(f"GET {key} after another client's SET", lambda: r.get(key), "v2", 2.0)


def other_commands(r, plain, keys):
    h, l, s = keys[0] + ":h", keys[1] + ":l", keys[2 % len(keys)] + ":s"
    plain.hset(h, mapping={"f": "1"})
    check("HGETALL", r.hgetall(h), {"f": "1"})
    plain.hset(h, "f", "2")
    eventually("HGETALL after HSET", lambda: r.hgetall(h), {"f": "2"})
    plain.rpush(l, "a")
    check("LRANGE", r.lrange(l, 0, -1), ["a"])
    plain.rpush(l, "b")
    eventually("LRANGE after RPUSH", lambda: r.lrange(l, 0, -1), ["a", "b"])
    plain.sadd(s, "x")
    check("SMEMBERS", r.smembers(s), {"x"})
    plain.sadd(s, "y")
    eventually("SMEMBERS after SADD", lambda: r.smembers(s), {"x", "y"})
    check("MGET", r.mget(keys), ["v2"] * len(keys))
    plain.set(keys[-1], "v3")
    eventually("MGET after SET", lambda: r.mget(keys), ["v2"] * (len(keys) - 1) + ["v3"])
    plain.set(keys[0] + ":ttl", "soon", px=300)
    check("GET of a key that expires", r.get(keys[0] + ":ttl"), "soon")
    eventually("GET after the key expired", lambda: r.get(keys[0] + ":ttl"), None, 5.0)


def a_lost_stream_flushes_the_cache(r, plain, masters, pid, keys):
    check("GET before the stream is lost", r.get(keys[0]), "v2")
    check("cached", r.get_cache().size > 0, True)
    name = f"redisforge-tracking-{pid}"
    for master in masters:
        host, port = master.rsplit(":", 1)
        node = redis.Redis(host=host, port=int(port), decode_responses=True)
        for client in node.client_list():
            if client.get("name") == name:
                node.client_kill_filter(_id=client["id"])
    eventually("cache size after the stream was lost", lambda: (r.ping(), r.get_cache().size)[1], 0)
    plain.set(keys[0], "after")
    eventually("GET after the stream came back", lambda: r.get(keys[0]), "after", 10.0)
    plain.set(keys[0], "again")
    eventually("invalidations resume", lambda: r.get(keys[0]), "again", 2.0)


def concurrent_readers_never_lag(port, plain, key, seconds=5.0, settle=1.0):
    """A writer counts up; cached readers must never return a count older than the last one
    acknowledged `settle` seconds before their read started."""
    acked = [(time.monotonic(), 0)]
    plain.set(key, 0)
    stop = time.monotonic() + seconds
    errors = []

    def write():
        n = 0
        while time.monotonic() < stop:
            n += 1
            plain.set(key, n)
            acked.append((time.monotonic(), n))
            time.sleep(0.005)

    def read():
        r = cached_client(port)
        reads = 0
        while time.monotonic() < stop and reads < 100_000:
            started = time.monotonic()
            floor = max(n for at, n in list(acked) if at <= started - settle)
            got = int(r.get(key))
            reads += 1
            if got < floor:
                errors.append(f"read {got} at {started:.3f}, but {floor} was acknowledged over {settle}s before")
                return

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 10)
    if errors:
        sys.exit(errors[0])


def main():
    port, metrics_addr, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    rest = sys.argv[4:]
    masters, keys = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    plain = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    version = plain.info("server")["redis_version"]
    r = cached_client(port)
    try:
        r.ping()
    except redis.ConnectionError as error:
        if tuple(int(part) for part in version.split(".")[:2]) >= (7, 4):
            raise
        check("redis-py's refusal below Redis 7.4", str(error), REFUSAL)
        print(f"SKIPPED: redis-py caches only with Redis 7.4 or later; this cluster reports {version}")
        return
    proxy = Proxy(metrics_addr)
    # Reads before the streams are up are not kept by the cache (the proxy invalidates them).
    eventually("tracking streams up", lambda: proxy.streams_up(masters), True, 15.0)
    reads_are_cached_until_a_write(r, plain, proxy, keys)
    other_commands(r, plain, keys)
    a_lost_stream_flushes_the_cache(r, plain, masters, pid, keys)
    concurrent_readers_never_lag(port, plain, keys[1] + ":count")
    print(f"OK: client-side caching through the proxy against {version}")


if __name__ == "__main__":
    main()
