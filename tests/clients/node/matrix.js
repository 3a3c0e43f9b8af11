'use strict';
// node-redis and ioredis through the RedisForge proxy, for the client matrix (tests/client_matrix.rs):
// strings with expiry, hashes, a pipeline, a transaction with WATCH, pub/sub across two connections,
// a Lua script and SCAN, every reply checked. Exits non-zero on the first wrong reply.
//
//   node matrix.js --client node-redis|ioredis --port N --user U --password P --prefix PFX
//                  [--tls-ca FILE] [--protocol 2|3]      (RESP3: node-redis only)

const assert = require('node:assert/strict');
const fs = require('node:fs');
const { parseArgs } = require('node:util');

const { values: opts } = parseArgs({
  options: {
    client: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    'tls-ca': { type: 'string', default: '' },
    user: { type: 'string' },
    password: { type: 'string' },
    prefix: { type: 'string' },
    protocol: { type: 'string', default: '2' },
  },
});

// Every await is bounded: a proxy that stops answering fails the run instead of hanging it.
const STEP_TIMEOUT_MS = 15000;
const RUN_TIMEOUT_MS = 120000;

let checks = 0;
let currentStep = 'start';

function step(label, promise) {
  currentStep = label;
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label}: no reply within ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function eq(label, got, want) {
  checks += 1;
  assert.deepStrictEqual(got, want, `${label}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

function ok(label, cond, got) {
  checks += 1;
  assert.ok(cond, `${label}: unexpected reply ${JSON.stringify(got)}`);
}

// A value larger than any socket or TLS record buffer.
const BIG = `${'x'.repeat(1 << 20)}end`;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Waits until `received` holds a message, publishing again every 250 ms (at most 40 times).
async function publishUntilReceived(publish, received) {
  for (let i = 0; i < 40 && received.length === 0; i += 1) {
    await step('publish', publish());
    await sleep(250);
  }
  return received[0];
}

async function nodeRedisSession(p, ca) {
  const { createClient, WatchError } = require('redis');
  const version = require('redis/package.json').version;
  const resp = Number(opts.protocol);
  const make = (name) =>
    createClient({
      socket: {
        host: opts.host,
        port: Number(opts.port),
        connectTimeout: 5000,
        reconnectStrategy: false,
        ...(ca ? { tls: true, ca } : {}),
      },
      username: opts.user,
      password: opts.password,
      name,
      RESP: resp,
    });
  const r = make('matrix-node-redis');
  const other = make('matrix-node-redis-other');
  const errors = [];
  for (const c of [r, other]) c.on('error', (e) => errors.push(e));
  await step('connect', r.connect());
  await step('connect other', other.connect());

  eq('ping', await step('ping', r.ping()), 'PONG');
  eq('client getname', await step('client getname', r.clientGetName()), 'matrix-node-redis');

  // Strings with expiry.
  eq('set ex', await step('set', r.set(`${p}:s`, 'v1', { EX: 100 })), 'OK');
  eq('get', await step('get', r.get(`${p}:s`)), 'v1');
  const ttl = await step('ttl', r.ttl(`${p}:s`));
  ok('ttl', ttl > 0 && ttl <= 100, ttl);
  eq('set nx on an existing key', await step('set nx', r.set(`${p}:s`, 'v2', { NX: true })), null);
  eq('incr', await step('incr', r.incr(`${p}:n`)), 1);
  eq('incrBy', await step('incrBy', r.incrBy(`${p}:n`, 41)), 42);
  eq('expire', await step('expire', r.expire(`${p}:n`, 50)), 1);
  const pttl = await step('pttl', r.pTTL(`${p}:n`));
  ok('pttl', pttl > 0 && pttl <= 50000, pttl);
  eq('mGet across slots', await step('mGet', r.mGet([`${p}:s`, `${p}:missing`, `${p}:n`])), ['v1', null, '42']);
  eq('set 1 MiB', await step('set big', r.set(`${p}:big`, BIG)), 'OK');
  eq('get 1 MiB', (await step('get big', r.get(`${p}:big`))) === BIG, true);

  // Hashes.
  eq('hSet', await step('hSet', r.hSet(`${p}:h`, { f1: 'a', f2: 'b' })), 2);
  eq('hGet', await step('hGet', r.hGet(`${p}:h`, 'f1')), 'a');
  eq('hIncrBy', await step('hIncrBy', r.hIncrBy(`${p}:h`, 'n', 7)), 7);
  eq('hGetAll', { ...(await step('hGetAll', r.hGetAll(`${p}:h`))) }, { f1: 'a', f2: 'b', n: '7' });
  eq('hDel', await step('hDel', r.hDel(`${p}:h`, 'f2')), 1);
  eq('hLen', await step('hLen', r.hLen(`${p}:h`)), 2);

  // A pipeline across slots (execAsPipeline: no MULTI), and the client's own auto-pipelining.
  const pipe = r.multi();
  for (let i = 0; i < 50; i += 1) pipe.set(`${p}:pipe:${i}`, String(i)).get(`${p}:pipe:${i}`);
  const piped = await step('pipeline', pipe.execAsPipeline());
  eq('pipeline sets', piped.filter((_, i) => i % 2 === 0), Array(50).fill('OK'));
  eq('pipeline gets', piped.filter((_, i) => i % 2 === 1), [...Array(50).keys()].map(String));
  const concurrent = await step('concurrent gets', Promise.all([...Array(50).keys()].map((i) => r.get(`${p}:pipe:${i}`))));
  eq('concurrent gets', concurrent, [...Array(50).keys()].map(String));

  // A transaction on keys of one hash slot, then WATCH with and without a conflict.
  const a = `${p}:{user1}:a`;
  const b = `${p}:{user1}:b`;
  eq('multi/exec', await step('exec', r.multi().set(a, '1').incr(a).set(b, 'x').get(b).exec()), ['OK', 2, 'OK', 'x']);
  // A node-redis client is one connection, so WATCH applies to its next MULTI.
  eq('watch', await step('watch', r.watch(a)), 'OK');
  await step('conflicting write', other.set(a, '100'));
  try {
    await step('exec', r.multi().incr(a).exec());
    ok('watch conflict aborts exec', false, 'EXEC ran');
  } catch (e) {
    ok('watch conflict aborts exec', e instanceof WatchError, String(e));
  }
  eq('watch again', await step('watch', r.watch(a)), 'OK');
  eq('watch without conflict', await step('exec', r.multi().incr(a).exec()), [101]);

  // Pub/sub: subscribe on a dedicated connection, publish on another.
  const sub = r.duplicate();
  sub.on('error', (e) => errors.push(e));
  await step('connect subscriber', sub.connect());
  const received = [];
  await step('subscribe', sub.subscribe(`${p}:chan`, (message, channel) => received.push([channel, message])));
  const patterned = [];
  await step('pSubscribe', sub.pSubscribe(`${p}:pat:*`, (message, channel) => patterned.push([channel, message])));
  eq('message', await publishUntilReceived(() => r.publish(`${p}:chan`, 'hello'), received), [`${p}:chan`, 'hello']);
  eq('pmessage', await publishUntilReceived(() => r.publish(`${p}:pat:x`, 'via-pattern'), patterned), [`${p}:pat:x`, 'via-pattern']);
  await step('unsubscribe', sub.unsubscribe(`${p}:chan`));
  await step('pUnsubscribe', sub.pUnsubscribe(`${p}:pat:*`));
  sub.destroy();

  // Lua.
  const lua = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])";
  eq('eval', await step('eval', r.eval(lua, { keys: [`${p}:lua`], arguments: ['from-lua'] })), 'from-lua');
  const sha = await step('script load', r.scriptLoad("return redis.call('INCRBY', KEYS[1], ARGV[1])"));
  eq('evalSha', await step('evalSha', r.evalSha(sha, { keys: [`${p}:lua:n`], arguments: ['5'] })), 5);

  // SCAN over the keys this run wrote.
  const wanted = [...Array(30).keys()].map((i) => `${p}:scan:${i}`);
  await step('scan setup', Promise.all(wanted.map((k) => r.set(k, 'x'))));
  const scan = async (pattern) => {
    const found = new Set();
    let cursor = '0';
    for (let i = 0; i < 1000; i += 1) {
      const reply = await step('scan', r.scan(cursor, { MATCH: pattern, COUNT: 10 }));
      reply.keys.forEach((k) => found.add(k));
      cursor = String(reply.cursor);
      if (cursor === '0') return [...found].sort();
    }
    throw new Error(`SCAN ${pattern}: cursor did not come back to 0 within 1000 calls`);
  };
  eq('scan match', await scan(`${p}:scan:*`), [...wanted].sort());

  const mine = await scan(`${p}:*`);
  eq('del across slots', await step('del', r.del(mine)), mine.length);

  eq('connection errors', errors.map(String), []);
  r.destroy();
  other.destroy();
  return `node-redis ${version} RESP${resp}`;
}

async function ioredisSession(p, ca) {
  const Redis = require('ioredis');
  const version = require('ioredis/package.json').version;
  const make = (name) =>
    new Redis({
      host: opts.host,
      port: Number(opts.port),
      username: opts.user,
      password: opts.password,
      connectionName: name,
      lazyConnect: true,
      connectTimeout: 5000,
      commandTimeout: STEP_TIMEOUT_MS,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      ...(ca ? { tls: { ca } } : {}),
    });
  const r = make('matrix-ioredis');
  const other = make('matrix-ioredis-other');
  const errors = [];
  for (const c of [r, other]) c.on('error', (e) => errors.push(e));
  // connect() resolves after the ready check (INFO, waiting for loading:0).
  await step('connect', r.connect());
  await step('connect other', other.connect());
  eq('status', r.status, 'ready');

  eq('ping', await step('ping', r.ping()), 'PONG');
  eq('client getname', await step('client getname', r.client('GETNAME')), 'matrix-ioredis');

  // Strings with expiry.
  eq('set ex', await step('set', r.set(`${p}:s`, 'v1', 'EX', 100)), 'OK');
  eq('get', await step('get', r.get(`${p}:s`)), 'v1');
  const ttl = await step('ttl', r.ttl(`${p}:s`));
  ok('ttl', ttl > 0 && ttl <= 100, ttl);
  eq('set nx on an existing key', await step('set nx', r.set(`${p}:s`, 'v2', 'NX')), null);
  eq('incr', await step('incr', r.incr(`${p}:n`)), 1);
  eq('incrby', await step('incrby', r.incrby(`${p}:n`, 41)), 42);
  eq('expire', await step('expire', r.expire(`${p}:n`, 50)), 1);
  const pttl = await step('pttl', r.pttl(`${p}:n`));
  ok('pttl', pttl > 0 && pttl <= 50000, pttl);
  eq('mget across slots', await step('mget', r.mget(`${p}:s`, `${p}:missing`, `${p}:n`)), ['v1', null, '42']);
  eq('set 1 MiB', await step('set big', r.set(`${p}:big`, BIG)), 'OK');
  eq('get 1 MiB', (await step('get big', r.get(`${p}:big`))) === BIG, true);

  // Hashes.
  eq('hset', await step('hset', r.hset(`${p}:h`, { f1: 'a', f2: 'b' })), 2);
  eq('hget', await step('hget', r.hget(`${p}:h`, 'f1')), 'a');
  eq('hincrby', await step('hincrby', r.hincrby(`${p}:h`, 'n', 7)), 7);
  eq('hgetall', await step('hgetall', r.hgetall(`${p}:h`)), { f1: 'a', f2: 'b', n: '7' });
  eq('hdel', await step('hdel', r.hdel(`${p}:h`, 'f2')), 1);
  eq('hlen', await step('hlen', r.hlen(`${p}:h`)), 2);

  // A pipeline across slots.
  const pipe = r.pipeline();
  for (let i = 0; i < 50; i += 1) pipe.set(`${p}:pipe:${i}`, String(i)).get(`${p}:pipe:${i}`);
  const piped = await step('pipeline', pipe.exec());
  eq('pipeline errors', piped.filter(([err]) => err).map(([err]) => String(err)), []);
  eq('pipeline sets', piped.filter((_, i) => i % 2 === 0).map(([, v]) => v), Array(50).fill('OK'));
  eq('pipeline gets', piped.filter((_, i) => i % 2 === 1).map(([, v]) => v), [...Array(50).keys()].map(String));

  // A transaction on keys of one hash slot, then WATCH with and without a conflict.
  const a = `${p}:{user1}:a`;
  const b = `${p}:{user1}:b`;
  const tx = await step('exec', r.multi().set(a, '1').incr(a).set(b, 'x').get(b).exec());
  eq('multi/exec', tx, [[null, 'OK'], [null, 2], [null, 'OK'], [null, 'x']]);
  // A command that fails inside EXEC fails alone; the others still run.
  const partial = await step('exec with an error', r.multi().set(b, 'y').incr(b).get(b).exec());
  eq('exec with an error: set', partial[0], [null, 'OK']);
  ok('exec with an error: incr', partial[1][0] && /not an integer/.test(partial[1][0].message), String(partial[1][0]));
  eq('exec with an error: get', partial[2], [null, 'y']);
  eq('watch', await step('watch', r.watch(a)), 'OK');
  await step('conflicting write', other.set(a, '100'));
  eq('watch conflict aborts exec', await step('exec', r.multi().incr(a).exec()), null);
  eq('watch again', await step('watch', r.watch(a)), 'OK');
  eq('watch without conflict', await step('exec', r.multi().incr(a).exec()), [[null, 101]]);

  // Pub/sub: a subscriber connection, published to from another.
  const sub = make('matrix-ioredis-sub');
  sub.on('error', (e) => errors.push(e));
  await step('connect subscriber', sub.connect());
  const received = [];
  const patterned = [];
  sub.on('message', (channel, message) => received.push([channel, message]));
  sub.on('pmessage', (pattern, channel, message) => patterned.push([pattern, channel, message]));
  eq('subscribe', await step('subscribe', sub.subscribe(`${p}:chan`)), 1);
  eq('psubscribe', await step('psubscribe', sub.psubscribe(`${p}:pat:*`)), 2);
  eq('message', await publishUntilReceived(() => r.publish(`${p}:chan`, 'hello'), received), [`${p}:chan`, 'hello']);
  eq(
    'pmessage',
    await publishUntilReceived(() => r.publish(`${p}:pat:x`, 'via-pattern'), patterned),
    [`${p}:pat:*`, `${p}:pat:x`, 'via-pattern'],
  );
  // Named: ioredis never resolves an argument-less UNSUBSCRIBE (against Redis itself too).
  eq('unsubscribe', await step('unsubscribe', sub.unsubscribe(`${p}:chan`)), 1);
  eq('punsubscribe', await step('punsubscribe', sub.punsubscribe(`${p}:pat:*`)), 0);
  eq('ping after pub/sub', await step('ping', sub.ping()), 'PONG');
  sub.disconnect();

  // Lua: EVAL with a key, and a defined command (EVALSHA, then EVAL after NOSCRIPT).
  const lua = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])";
  eq('eval', await step('eval', r.eval(lua, 1, `${p}:lua`, 'from-lua')), 'from-lua');
  r.defineCommand('matrixIncrBy', { numberOfKeys: 1, lua: "return redis.call('INCRBY', KEYS[1], ARGV[1])" });
  eq('defined command', await step('defined command', r.matrixIncrBy(`${p}:lua:n`, 5)), 5);
  eq('defined command again', await step('defined command', r.matrixIncrBy(`${p}:lua:n`, 5)), 10);

  // SCAN over the keys this run wrote.
  const wanted = [...Array(30).keys()].map((i) => `${p}:scan:${i}`);
  await step('scan setup', Promise.all(wanted.map((k) => r.set(k, 'x'))));
  const scan = async (pattern) => {
    const found = new Set();
    let cursor = '0';
    for (let i = 0; i < 1000; i += 1) {
      const [next, keys] = await step('scan', r.scan(cursor, 'MATCH', pattern, 'COUNT', 10));
      keys.forEach((k) => found.add(k));
      cursor = next;
      if (cursor === '0') return [...found].sort();
    }
    throw new Error(`SCAN ${pattern}: cursor did not come back to 0 within 1000 calls`);
  };
  eq('scan match', await scan(`${p}:scan:*`), [...wanted].sort());

  const mine = await scan(`${p}:*`);
  eq('del across slots', await step('del', r.del(...mine)), mine.length);

  eq('connection errors', errors.map(String), []);
  r.disconnect();
  other.disconnect();
  return `ioredis ${version}`;
}

async function main() {
  const ca = opts['tls-ca'] ? fs.readFileSync(opts['tls-ca']) : null;
  const sessions = { 'node-redis': nodeRedisSession, ioredis: ioredisSession };
  const session = sessions[opts.client];
  if (!session) throw new Error(`--client must be one of ${Object.keys(sessions).join(', ')}`);
  const name = await session(opts.prefix, ca);
  console.log(`${name} over ${ca ? 'TLS' : 'plain TCP'}: ${checks} checks passed`);
}

const watchdog = setTimeout(() => {
  console.error(`run did not finish within ${RUN_TIMEOUT_MS} ms (last step: ${currentStep})`);
  process.exit(3);
}, RUN_TIMEOUT_MS);

main().then(
  () => {
    clearTimeout(watchdog);
    process.exit(0);
  },
  (e) => {
    console.error(`${opts.client}: failed at step '${currentStep}': ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  },
);
