/*
 * hiredis (Debian's libhiredis-dev) through the RedisForge proxy, for the client matrix
 * (tests/client_matrix.rs): strings with expiry, hashes, a pipeline, a transaction, pub/sub across
 * two connections, a Lua script and SCAN, every reply checked. Exits non-zero on the first wrong
 * reply. Plain TCP only: Debian bookworm ships hiredis 0.14, which has no TLS (hiredis_ssl came
 * with 1.0).
 *
 *   matrix HOST PORT USER PASSWORD PREFIX
 *
 * Build: gcc -std=c99 -Wall -Wextra -Werror matrix.c -o matrix -lhiredis
 */
#define _POSIX_C_SOURCE 200809L

#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

/* Every read and write is bounded by this; a proxy that stops answering fails the run. */
static const struct timeval IO_TIMEOUT = {10, 0};

static int checks = 0;

static void fail(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "hiredis: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

static const char *type_name(int type) {
    switch (type) {
    case REDIS_REPLY_STRING: return "string";
    case REDIS_REPLY_ARRAY: return "array";
    case REDIS_REPLY_INTEGER: return "integer";
    case REDIS_REPLY_NIL: return "nil";
    case REDIS_REPLY_STATUS: return "status";
    case REDIS_REPLY_ERROR: return "error";
    default: return "unknown";
    }
}

/* A reply, or the run ends with the context's error (connection closed, timeout). */
static redisReply *must(redisContext *c, void *reply, const char *label) {
    if (reply == NULL) {
        fail("%s: no reply (%s)", label, c->errstr);
    }
    return (redisReply *)reply;
}

static void want_type(redisReply *r, int type, const char *label) {
    checks++;
    if (r->type != type) {
        fail("%s: got %s reply '%s', want %s", label, type_name(r->type),
             r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING ? r->str
                                                                                                             : "",
             type_name(type));
    }
}

static void want_text(redisReply *r, int type, const char *text, const char *label) {
    want_type(r, type, label);
    if (strcmp(r->str, text) != 0) {
        fail("%s: got '%s', want '%s'", label, r->str, text);
    }
    freeReplyObject(r);
}

static void want_status(redisReply *r, const char *text, const char *label) { want_text(r, REDIS_REPLY_STATUS, text, label); }

static void want_string(redisReply *r, const char *text, const char *label) { want_text(r, REDIS_REPLY_STRING, text, label); }

static void want_int(redisReply *r, long long value, const char *label) {
    want_type(r, REDIS_REPLY_INTEGER, label);
    if (r->integer != value) {
        fail("%s: got %lld, want %lld", label, r->integer, value);
    }
    freeReplyObject(r);
}

static long long int_in(redisReply *r, long long lo, long long hi, const char *label) {
    want_type(r, REDIS_REPLY_INTEGER, label);
    long long v = r->integer;
    if (v < lo || v > hi) {
        fail("%s: got %lld, want %lld..%lld", label, v, lo, hi);
    }
    freeReplyObject(r);
    return v;
}

static void want_nil(redisReply *r, const char *label) {
    want_type(r, REDIS_REPLY_NIL, label);
    freeReplyObject(r);
}

static redisContext *connect_and_login(const char *host, int port, const char *user, const char *pass) {
    redisContext *c = redisConnectWithTimeout(host, port, IO_TIMEOUT);
    if (c == NULL || c->err) {
        fail("connect %s:%d: %s", host, port, c ? c->errstr : "out of memory");
    }
    if (redisSetTimeout(c, IO_TIMEOUT) != REDIS_OK) {
        fail("set timeout: %s", c->errstr);
    }
    want_status(must(c, redisCommand(c, "AUTH %s %s", user, pass), "auth"), "OK", "auth");
    return c;
}

/* Walks SCAN over PATTERN (calls bounded); SEEN[i] is set for each key PREFIX:scan:i returned, and
 * with DELETE every returned key is deleted. Returns the number of keys returned (duplicates too). */
static long long scan_walk(redisContext *c, const char *pattern, const char *prefix, int seen[30], int delete) {
    char cursor[64] = "0", stem[256];
    long long returned = 0;
    snprintf(stem, sizeof stem, "%s:scan:", prefix);
    for (int calls = 0; calls < 1000; calls++) {
        redisReply *r = must(c, redisCommand(c, "SCAN %s MATCH %s COUNT 10", cursor, pattern), "scan");
        want_type(r, REDIS_REPLY_ARRAY, "scan");
        if (r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            fail("scan: reply is not [cursor, keys]");
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const char *key = r->element[1]->element[i]->str;
            returned++;
            if (seen != NULL && strncmp(key, stem, strlen(stem)) == 0) {
                int n = atoi(key + strlen(stem));
                if (n >= 0 && n < 30) {
                    seen[n] = 1;
                }
            }
            if (delete) {
                redisReply *d = must(c, redisCommand(c, "DEL %s", key), "del");
                want_type(d, REDIS_REPLY_INTEGER, "del");
                freeReplyObject(d);
            }
        }
        freeReplyObject(r);
        if (strcmp(cursor, "0") == 0) {
            return returned;
        }
    }
    fail("scan %s: cursor did not come back to 0 within 1000 calls", pattern);
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT USER PASSWORD PREFIX\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *user = argv[3], *pass = argv[4], *p = argv[5];
    int port = atoi(argv[2]);
    char k[256], k2[256], pattern[256];

    redisContext *c = connect_and_login(host, port, user, pass);
    redisContext *sub = connect_and_login(host, port, user, pass);

    want_status(must(c, redisCommand(c, "PING"), "ping"), "PONG", "ping");
    want_status(must(c, redisCommand(c, "CLIENT SETNAME matrix-hiredis"), "setname"), "OK", "client setname");
    want_string(must(c, redisCommand(c, "CLIENT GETNAME"), "getname"), "matrix-hiredis", "client getname");

    /* Strings with expiry. */
    snprintf(k, sizeof k, "%s:s", p);
    want_status(must(c, redisCommand(c, "SET %s %s EX 100", k, "v1"), "set"), "OK", "set ex");
    want_string(must(c, redisCommand(c, "GET %s", k), "get"), "v1", "get");
    int_in(must(c, redisCommand(c, "TTL %s", k), "ttl"), 1, 100, "ttl");
    want_nil(must(c, redisCommand(c, "SET %s %s NX", k, "v2"), "set nx"), "set nx on an existing key");
    snprintf(k2, sizeof k2, "%s:n", p);
    want_int(must(c, redisCommand(c, "INCR %s", k2), "incr"), 1, "incr");
    want_int(must(c, redisCommand(c, "INCRBY %s 41", k2), "incrby"), 42, "incrby");
    want_int(must(c, redisCommand(c, "EXPIRE %s 50", k2), "expire"), 1, "expire");
    int_in(must(c, redisCommand(c, "PTTL %s", k2), "pttl"), 1, 50000, "pttl");
    /* A binary-safe value with a NUL and CRLF inside, sent with %b. */
    static const char binary[] = {'a', '\0', '\r', '\n', 'b'};
    snprintf(k, sizeof k, "%s:bin", p);
    want_status(must(c, redisCommand(c, "SET %s %b", k, binary, sizeof binary), "set binary"), "OK", "set binary");
    redisReply *r = must(c, redisCommand(c, "GET %s", k), "get binary");
    want_type(r, REDIS_REPLY_STRING, "get binary");
    if (r->len != sizeof binary || memcmp(r->str, binary, sizeof binary) != 0) {
        fail("get binary: %zu bytes came back, not the 5 sent", r->len);
    }
    freeReplyObject(r);

    /* A value larger than any socket buffer. */
    size_t big_len = (1u << 20) + 3;
    char *big = malloc(big_len);
    if (big == NULL) {
        fail("out of memory");
    }
    memset(big, 'x', big_len - 3);
    memcpy(big + big_len - 3, "end", 3);
    snprintf(k, sizeof k, "%s:big", p);
    want_status(must(c, redisCommand(c, "SET %s %b", k, big, big_len), "set big"), "OK", "set 1 MiB");
    r = must(c, redisCommand(c, "GET %s", k), "get big");
    want_type(r, REDIS_REPLY_STRING, "get 1 MiB");
    if (r->len != big_len || memcmp(r->str, big, big_len) != 0) {
        fail("get 1 MiB: %zu bytes came back, not the %zu sent", r->len, big_len);
    }
    freeReplyObject(r);
    free(big);

    /* Hashes. */
    snprintf(k, sizeof k, "%s:h", p);
    want_int(must(c, redisCommand(c, "HSET %s f1 a f2 b", k), "hset"), 2, "hset");
    want_string(must(c, redisCommand(c, "HGET %s f1", k), "hget"), "a", "hget");
    want_int(must(c, redisCommand(c, "HINCRBY %s n 7", k), "hincrby"), 7, "hincrby");
    r = must(c, redisCommand(c, "HGETALL %s", k), "hgetall");
    want_type(r, REDIS_REPLY_ARRAY, "hgetall");
    if (r->elements != 6) {
        fail("hgetall: %zu elements, want 6", r->elements);
    }
    freeReplyObject(r);
    want_int(must(c, redisCommand(c, "HDEL %s f2", k), "hdel"), 1, "hdel");

    /* A pipeline across slots: 100 commands written at once, replies read in order. */
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "%s:pipe:%d", p, i);
        redisAppendCommand(c, "SET %s %d", k, i);
        redisAppendCommand(c, "GET %s", k);
    }
    for (int i = 0; i < 50; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", i);
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK) {
            fail("pipeline set %d: %s", i, c->errstr);
        }
        want_status(reply, "OK", "pipeline set");
        if (redisGetReply(c, &reply) != REDIS_OK) {
            fail("pipeline get %d: %s", i, c->errstr);
        }
        want_string(reply, want, "pipeline get");
    }

    /* A transaction on keys of one hash slot. */
    snprintf(k, sizeof k, "%s:{user1}:a", p);
    snprintf(k2, sizeof k2, "%s:{user1}:b", p);
    want_status(must(c, redisCommand(c, "MULTI"), "multi"), "OK", "multi");
    want_status(must(c, redisCommand(c, "SET %s 1", k), "queued set"), "QUEUED", "queued set");
    want_status(must(c, redisCommand(c, "INCR %s", k), "queued incr"), "QUEUED", "queued incr");
    want_status(must(c, redisCommand(c, "SET %s x", k2), "queued set"), "QUEUED", "queued set");
    want_status(must(c, redisCommand(c, "GET %s", k2), "queued get"), "QUEUED", "queued get");
    r = must(c, redisCommand(c, "EXEC"), "exec");
    want_type(r, REDIS_REPLY_ARRAY, "exec");
    if (r->elements != 4 || r->element[0]->type != REDIS_REPLY_STATUS || r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->integer != 2 || r->element[3]->type != REDIS_REPLY_STRING || strcmp(r->element[3]->str, "x") != 0) {
        fail("exec: want [OK, 2, OK, x]");
    }
    freeReplyObject(r);

    /* Pub/sub: subscribe on one connection, publish on another until the message arrives. */
    snprintf(k, sizeof k, "%s:chan", p);
    r = must(sub, redisCommand(sub, "SUBSCRIBE %s", k), "subscribe");
    want_type(r, REDIS_REPLY_ARRAY, "subscribe");
    if (r->elements != 3 || strcmp(r->element[0]->str, "subscribe") != 0 || r->element[2]->integer != 1) {
        fail("subscribe: want [subscribe, channel, 1]");
    }
    freeReplyObject(r);
    redisReply *message = NULL;
    for (int i = 0; i < 40 && message == NULL; i++) {
        r = must(c, redisCommand(c, "PUBLISH %s hello", k), "publish");
        want_type(r, REDIS_REPLY_INTEGER, "publish");
        freeReplyObject(r);
        struct pollfd pfd = {.fd = sub->fd, .events = POLLIN};
        if (poll(&pfd, 1, 250) > 0) {
            void *reply = NULL;
            if (redisGetReply(sub, &reply) != REDIS_OK) {
                fail("message: %s", sub->errstr);
            }
            message = reply;
        }
    }
    if (message == NULL) {
        fail("message: nothing arrived within 40 publishes");
    }
    want_type(message, REDIS_REPLY_ARRAY, "message");
    if (message->elements != 3 || strcmp(message->element[0]->str, "message") != 0 ||
        strcmp(message->element[1]->str, k) != 0 || strcmp(message->element[2]->str, "hello") != 0) {
        fail("message: want [message, %s, hello]", k);
    }
    freeReplyObject(message);

    /* Lua with a key. */
    snprintf(k, sizeof k, "%s:lua", p);
    want_string(must(c, redisCommand(c, "EVAL %s 1 %s %s",
                                     "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])", k,
                                     "from-lua"),
                     "eval"),
                "from-lua", "eval");

    /* SCAN over the keys this run wrote. */
    for (int i = 0; i < 30; i++) {
        snprintf(k, sizeof k, "%s:scan:%d", p, i);
        want_status(must(c, redisCommand(c, "SET %s x", k), "scan setup"), "OK", "scan setup");
    }
    snprintf(pattern, sizeof pattern, "%s:scan:*", p);
    int seen[30] = {0};
    long long returned = scan_walk(c, pattern, p, seen, 0);
    for (int i = 0; i < 30; i++) {
        checks++;
        if (!seen[i]) {
            fail("scan %s: %s:scan:%d missing (%lld keys returned)", pattern, p, i, returned);
        }
    }

    /* Clean up what this run wrote, then check nothing is left. */
    snprintf(pattern, sizeof pattern, "%s:*", p);
    scan_walk(c, pattern, p, NULL, 1);
    checks++;
    if (scan_walk(c, pattern, p, NULL, 0) != 0) {
        fail("scan %s: keys left after deleting them", pattern);
    }

    want_status(must(c, redisCommand(c, "QUIT"), "quit"), "OK", "quit");
    redisFree(c);
    redisFree(sub);
    printf("hiredis %d.%d.%d over plain TCP: %d checks passed\n", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH, checks);
    return 0;
}
