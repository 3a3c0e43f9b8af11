"""A realistic redis-py session through the RedisForge proxy: transactions with WATCH, pub/sub
across two clients, blocking pops, scripts, and RESP3. Run by tests/client_redis_py.rs against a
real proxy and cluster; exits non-zero with a message on the first wrong reply."""

import sys
import threading
import time

import redis


def check(label, got, want):
    if got != want:
        sys.exit(f"{label}: got {got!r}, want {want!r}")


def main(port):
    r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    other = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)

    # Strings, hashes, pipelines.
    check("ping", r.ping(), True)
    r.set("py:{a}:n", 1)
    check("incr", r.incr("py:{a}:n"), 2)
    r.hset("py:{a}:h", mapping={"f1": "a", "f2": "b"})
    check("hgetall", r.hgetall("py:{a}:h"), {"f1": "a", "f2": "b"})
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.set(f"py:k:{i}", i)
        pipe.get(f"py:k:{i}")
    results = pipe.execute()
    check("pipeline", results[1::2], [str(i) for i in range(100)])
    check("mget across slots", r.mget([f"py:k:{i}" for i in range(5)]), ["0", "1", "2", "3", "4"])

    # A transaction with WATCH, and a conflict from another client.
    with r.pipeline() as tx:
        tx.watch("py:{a}:n")
        other.set("py:{a}:n", 100)
        tx.multi()
        tx.incr("py:{a}:n")
        try:
            tx.execute()
            sys.exit("watch conflict: EXEC should have been aborted")
        except redis.WatchError:
            pass
    with r.pipeline() as tx:
        tx.watch("py:{a}:n")
        tx.multi()
        tx.incr("py:{a}:n")
        check("transaction", tx.execute(), [101])

    # Pub/sub across two clients.
    pubsub = other.pubsub()
    pubsub.subscribe("py:news")
    check("subscribe", pubsub.get_message(timeout=5)["type"], "subscribe")
    deadline = time.time() + 10
    message = None
    while message is None and time.time() < deadline:
        r.publish("py:news", "hello")
        message = pubsub.get_message(timeout=0.5, ignore_subscribe_messages=True)
    check("message", message and message["data"], "hello")
    pubsub.close()

    # A blocking pop answered by another client's push.
    result = {}

    def pop():
        result["value"] = redis.Redis(host="127.0.0.1", port=port, decode_responses=True).blpop("py:queue", timeout=10)

    waiter = threading.Thread(target=pop)
    waiter.start()
    time.sleep(0.3)
    r.rpush("py:queue", "job")
    waiter.join(timeout=15)
    check("blpop", result.get("value"), ("py:queue", "job"))
    check("blpop timeout", r.blpop("py:empty", timeout=1), None)

    # Scripts: loaded everywhere, run on the key's master.
    sha = r.script_load("return redis.call('GET', KEYS[1])")
    check("evalsha", r.evalsha(sha, 1, "py:k:7"), "7")
    check("eval", r.eval("return ARGV[1]", 0, "x"), "x")

    # SCAN with the proxy's cluster-wide cursor: every key of ours, exactly once.
    scanned = list(r.scan_iter(match="py:k:*", count=50))
    check("scan count", len(scanned), 100)
    check("scan unique", len(set(scanned)), 100)

    # RESP3.
    r3 = redis.Redis(host="127.0.0.1", port=port, protocol=3, decode_responses=True)
    check("resp3 hgetall", r3.hgetall("py:{a}:h"), {"f1": "a", "f2": "b"})
    check("resp3 get none", r3.get("py:none"), None)
    print("redis-py session: all checks passed")


if __name__ == "__main__":
    main(int(sys.argv[1]))
