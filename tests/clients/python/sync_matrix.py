"""redis-py (sync) through the RedisForge proxy, for the client matrix (tests/client_matrix.rs):
strings with expiry, hashes, a pipeline, a transaction with WATCH, pub/sub across two connections,
a Lua script and SCAN, every reply checked. Exits non-zero on the first wrong reply."""

import time

import redis

from matrix_common import Checks, connection_kwargs, parse_args, scan_keys_sync


def main():
    args = parse_args(__doc__)
    p = args.prefix
    c = Checks(f"redis-py {redis.__version__} sync RESP{args.protocol}")
    r = redis.Redis(**connection_kwargs(args, "matrix-sync"))
    # The subscriber side checks its connection's health while idle, as redis-py's docs advise.
    other = redis.Redis(**connection_kwargs(args, "matrix-sync-other"), health_check_interval=1)

    # Connection.
    c.eq("ping", r.ping(), True)
    c.eq("client getname", r.client_getname(), "matrix-sync")
    c.eq("acl whoami", r.acl_whoami(), args.user)

    # Strings with expiry.
    c.eq("set ex", r.set(f"{p}:s", "v1", ex=100), True)
    c.eq("get", r.get(f"{p}:s"), "v1")
    ttl = r.ttl(f"{p}:s")
    c.true("ttl", 0 < ttl <= 100, ttl)
    c.eq("set nx on an existing key", r.set(f"{p}:s", "v2", nx=True), None)
    c.eq("incr new", r.incr(f"{p}:n"), 1)
    c.eq("incrby", r.incrby(f"{p}:n", 41), 42)
    c.eq("expire", r.expire(f"{p}:n", 50), True)
    pttl = r.pttl(f"{p}:n")
    c.true("pttl", 0 < pttl <= 50_000, pttl)
    c.eq("persist", r.persist(f"{p}:n"), True)
    c.eq("ttl after persist", r.ttl(f"{p}:n"), -1)
    c.eq("get missing", r.get(f"{p}:missing"), None)
    c.eq("mget across slots", r.mget([f"{p}:s", f"{p}:missing", f"{p}:n"]), ["v1", None, "42"])
    big = "x" * (1 << 20) + "end"
    c.eq("set 1 MiB", r.set(f"{p}:big", big), True)
    c.eq("get 1 MiB", r.get(f"{p}:big"), big)
    c.eq("strlen", r.strlen(f"{p}:big"), len(big))

    # Hashes.
    c.eq("hset mapping", r.hset(f"{p}:h", mapping={"f1": "a", "f2": "b", "n": "1"}), 3)
    c.eq("hget", r.hget(f"{p}:h", "f1"), "a")
    c.eq("hincrby", r.hincrby(f"{p}:h", "n", 9), 10)
    c.eq("hgetall", r.hgetall(f"{p}:h"), {"f1": "a", "f2": "b", "n": "10"})
    c.eq("hdel", r.hdel(f"{p}:h", "f2"), 1)
    c.eq("hlen", r.hlen(f"{p}:h"), 2)
    c.eq("hexists", r.hexists(f"{p}:h", "f2"), False)

    # A pipeline across slots: replies come back in request order.
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"{p}:pipe:{i}", i)
        pipe.get(f"{p}:pipe:{i}")
    results = pipe.execute()
    c.eq("pipeline sets", results[0::2], [True] * 500)
    c.eq("pipeline gets", results[1::2], [str(i) for i in range(500)])

    # A transaction on keys of one hash slot.
    a, b = f"{p}:{{user1}}:a", f"{p}:{{user1}}:b"
    with r.pipeline(transaction=True) as tx:
        tx.set(a, 1).incr(a).set(b, "x").get(b).mget(a, b)
        c.eq("multi/exec", tx.execute(), [True, 2, True, "x", ["2", "x"]])
    # WATCH: a write by another client aborts EXEC; without one, EXEC runs.
    with r.pipeline() as tx:
        tx.watch(a)
        other.set(a, 100)
        tx.multi()
        tx.incr(a)
        try:
            tx.execute()
            c.true("watch conflict aborts exec", False, "EXEC ran")
        except redis.WatchError:
            c.true("watch conflict aborts exec", True, None)
    with r.pipeline() as tx:
        tx.watch(a)
        tx.multi()
        tx.incr(a)
        c.eq("watch without conflict", tx.execute(), [101])

    # Pub/sub: subscribe on one connection, publish on another.
    pubsub = other.pubsub()
    pubsub.subscribe(f"{p}:chan")
    confirm = pubsub.get_message(timeout=5)
    c.eq("subscribe confirmation", confirm and (confirm["type"], confirm["channel"]), ("subscribe", f"{p}:chan"))
    pubsub.psubscribe(f"{p}:pat:*")
    confirm = pubsub.get_message(timeout=5)
    c.eq("psubscribe confirmation", confirm and confirm["type"], "psubscribe")
    # RESP2: PING while subscribed answers [pong, message]. (Under RESP3 it is a plain reply, which
    # redis-py 8 misreads as a message, against Redis itself too.) After an idle second redis-py's
    # health check sends its own PING and reads that reply back.
    if args.protocol == 2:
        pubsub.ping("matrix")
        pong = pubsub.get_message(timeout=5)
        c.eq("ping while subscribed", pong and (pong["type"], pong["data"]), ("pong", "matrix"))
    time.sleep(1.2)
    c.eq("idle health check", pubsub.get_message(timeout=0.5), None)
    message, deadline = None, time.monotonic() + 10
    for _ in range(40):
        if message is not None or time.monotonic() > deadline:
            break
        r.publish(f"{p}:chan", "hello")
        message = pubsub.get_message(timeout=0.25, ignore_subscribe_messages=True)
    c.eq("message", message and (message["type"], message["channel"], message["data"]), ("message", f"{p}:chan", "hello"))
    c.eq("publish to a pattern", r.publish(f"{p}:pat:x", "via-pattern") >= 0, True)
    pmessage = pubsub.get_message(timeout=5, ignore_subscribe_messages=True)
    # A message that matched the channel subscription twice in the loop above may still be queued.
    for _ in range(40):
        if pmessage is None or pmessage["type"] == "pmessage":
            break
        pmessage = pubsub.get_message(timeout=5, ignore_subscribe_messages=True)
    c.eq(
        "pmessage",
        pmessage and (pmessage["type"], pmessage["pattern"], pmessage["channel"], pmessage["data"]),
        ("pmessage", f"{p}:pat:*", f"{p}:pat:x", "via-pattern"),
    )
    pubsub.unsubscribe()
    pubsub.punsubscribe()
    pubsub.close()
    c.eq("connection usable after pub/sub", other.get(f"{p}:s"), "v1")

    # Lua: EVAL with a key, and a registered script (EVALSHA, EVAL after NOSCRIPT).
    lua = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"
    c.eq("eval", r.eval(lua, 1, f"{p}:lua", "from-lua"), "from-lua")
    incr_by = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    c.eq("registered script", incr_by(keys=[f"{p}:lua:n"], args=[5]), 5)
    c.eq("registered script again", incr_by(keys=[f"{p}:lua:n"], args=[5]), 10)

    # SCAN over the keys this run wrote, across every master.
    wanted = {f"{p}:scan:{i}" for i in range(30)}
    for key in wanted:
        r.set(key, "x")
    c.eq("scan match", scan_keys_sync(r.scan, f"{p}:scan:*"), wanted)

    # Clean up what this run wrote.
    mine = scan_keys_sync(r.scan, f"{p}:*")
    c.eq("del across slots", r.delete(*mine), len(mine))
    c.eq("nothing left", scan_keys_sync(r.scan, f"{p}:*"), set())

    r.close()
    other.close()
    c.done("TLS" if args.tls_ca else "plain TCP")


if __name__ == "__main__":
    main()
