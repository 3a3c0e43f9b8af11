"""redis-py's asyncio client through the RedisForge proxy, for the client matrix
(tests/client_matrix.rs): strings with expiry, hashes, a pipeline, a transaction with WATCH,
pub/sub across two connections, a Lua script and SCAN, every reply checked, with concurrent
commands on one client as asyncio applications issue them. Exits non-zero on the first wrong reply."""

import asyncio
import sys

import redis
import redis.asyncio as aredis

from matrix_common import Checks, connection_kwargs, parse_args

# Every await is bounded: a proxy that stops answering fails the run instead of hanging it.
STEP_TIMEOUT = 15


async def step(awaitable):
    return await asyncio.wait_for(awaitable, STEP_TIMEOUT)


async def scan_keys(r, pattern, max_calls=1000):
    cursor, found = 0, set()
    for _ in range(max_calls):
        cursor, keys = await step(r.scan(cursor, match=pattern, count=10))
        found.update(keys)
        if int(cursor) == 0:
            return found
    sys.exit(f"SCAN {pattern}: cursor did not come back to 0 within {max_calls} calls")


async def session(args):
    p = args.prefix
    c = Checks(f"redis-py {redis.__version__} asyncio RESP{args.protocol}")
    r = aredis.Redis(**connection_kwargs(args, "matrix-async"))
    other = aredis.Redis(**connection_kwargs(args, "matrix-async-other"))

    # Connection.
    c.eq("ping", await step(r.ping()), True)
    c.eq("client getname", await step(r.client_getname()), "matrix-async")

    # Strings with expiry, many in flight at once on one client (its connection pool).
    c.eq("set ex", await step(r.set(f"{p}:s", "v1", ex=100)), True)
    c.eq("get", await step(r.get(f"{p}:s")), "v1")
    ttl = await step(r.ttl(f"{p}:s"))
    c.true("ttl", 0 < ttl <= 100, ttl)
    c.eq("incr", await step(r.incr(f"{p}:n")), 1)
    c.eq("expire", await step(r.expire(f"{p}:n", 50)), True)
    pttl = await step(r.pttl(f"{p}:n"))
    c.true("pttl", 0 < pttl <= 50_000, pttl)
    writes = await step(asyncio.gather(*(r.set(f"{p}:conc:{i}", i) for i in range(40))))
    c.eq("concurrent sets", writes, [True] * 40)
    reads = await step(asyncio.gather(*(r.get(f"{p}:conc:{i}") for i in range(40))))
    c.eq("concurrent gets", reads, [str(i) for i in range(40)])

    big = "x" * (1 << 20) + "end"
    c.eq("set 1 MiB", await step(r.set(f"{p}:big", big)), True)
    c.eq("get 1 MiB", await step(r.get(f"{p}:big")), big)

    # Hashes (a map reply under RESP3, a flat array under RESP2; redis-py gives a dict either way).
    c.eq("hset mapping", await step(r.hset(f"{p}:h", mapping={"f1": "a", "f2": "b"})), 2)
    c.eq("hgetall", await step(r.hgetall(f"{p}:h")), {"f1": "a", "f2": "b"})
    c.eq("hincrby", await step(r.hincrby(f"{p}:h", "n", 3)), 3)
    c.eq("hmget", await step(r.hmget(f"{p}:h", ["f1", "nope", "n"])), ["a", None, "3"])

    # A pipeline across slots.
    pipe = r.pipeline(transaction=False)
    for i in range(50):
        pipe.set(f"{p}:pipe:{i}", i)
        pipe.get(f"{p}:pipe:{i}")
    results = await step(pipe.execute())
    c.eq("pipeline sets", results[0::2], [True] * 50)
    c.eq("pipeline gets", results[1::2], [str(i) for i in range(50)])

    # A transaction on keys of one hash slot, then WATCH with and without a conflict.
    a, b = f"{p}:{{user1}}:a", f"{p}:{{user1}}:b"
    async with r.pipeline(transaction=True) as tx:
        tx.set(a, 1).incr(a).set(b, "x").get(b)
        c.eq("multi/exec", await step(tx.execute()), [True, 2, True, "x"])
    async with r.pipeline() as tx:
        await step(tx.watch(a))
        await step(other.set(a, 100))
        tx.multi()
        tx.incr(a)
        try:
            await step(tx.execute())
            c.true("watch conflict aborts exec", False, "EXEC ran")
        except redis.WatchError:
            c.true("watch conflict aborts exec", True, None)
    async with r.pipeline() as tx:
        await step(tx.watch(a))
        tx.multi()
        tx.incr(a)
        c.eq("watch without conflict", await step(tx.execute()), [101])

    # Pub/sub: subscribe on one connection, publish on another until the message arrives.
    pubsub = other.pubsub()
    await step(pubsub.subscribe(f"{p}:chan"))
    confirm = await step(pubsub.get_message(timeout=5))
    c.eq("subscribe confirmation", confirm and (confirm["type"], confirm["channel"]), ("subscribe", f"{p}:chan"))
    message = None
    for _ in range(40):
        await step(r.publish(f"{p}:chan", "hello"))
        message = await step(pubsub.get_message(timeout=0.25, ignore_subscribe_messages=True))
        if message is not None:
            break
    c.eq("message", message and (message["type"], message["channel"], message["data"]), ("message", f"{p}:chan", "hello"))
    await step(pubsub.unsubscribe(f"{p}:chan"))
    await step(pubsub.aclose())

    # Lua.
    lua = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"
    c.eq("eval", await step(r.eval(lua, 1, f"{p}:lua", "from-lua")), "from-lua")
    incr_by = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    c.eq("registered script", await step(incr_by(keys=[f"{p}:lua:n"], args=[5])), 5)

    # SCAN over the keys this run wrote.
    wanted = {f"{p}:scan:{i}" for i in range(30)}
    await step(asyncio.gather(*(r.set(key, "x") for key in wanted)))
    c.eq("scan match", await scan_keys(r, f"{p}:scan:*"), wanted)

    # Clean up.
    mine = await scan_keys(r, f"{p}:*")
    c.eq("del across slots", await step(r.delete(*mine)), len(mine))

    await r.aclose()
    await other.aclose()
    c.done("TLS" if args.tls_ca else "plain TCP")


def main():
    args = parse_args(__doc__)
    asyncio.run(asyncio.wait_for(session(args), 120))


if __name__ == "__main__":
    main()
