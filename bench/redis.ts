// Redis, measured against today's way, side by side in one run at 1,000 admins: Debian's redis-server
// (scripts/redis.ts) and the offline MongoDB (or MONGO_URL), three API instances per setup, each with its
// own MongoClient and caches (in this process, like bench/revocation.ts), for the three things Redis is
// suggested for:
//   1. revocation: how soon instance B refuses a token logged out on instance A (many logouts, spread
//      over B's refresh cycle), and what it costs at rest: MongoDB reads today vs the pub/sub bus;
//   2. the per-admin request budget across the 3 instances: how many requests over the limit get
//      through (1,000 admins round-robin over the instances, and one script bursting), and the cost
//      per request: today's local count flushed every 250 ms, the MongoDB count per request, Redis INCR;
//   3. the list cache: per instance (today) vs one shared in Redis: hit rate, database reads, latency.
// Database commands are counted by the driver's command monitoring, Redis commands by the server's own
// INFO commandstats, CPU from /proc (this process holds the instances and the load).
//
//   npm run bench:redis
//   REDIS_BENCH_ADMINS=1000 REDIS_BENCH_TRIALS=200 REDIS_BENCH_LIST_S=15 npm run bench:redis
import { MongoClient } from 'mongodb';
import { createClient } from 'redis';
import { createApp } from '../api/app.ts';
import { createLogger } from '../api/log.ts';
import { attachRedis, type RedisAdapters } from '../api/redis.ts';
import { createServices, type Services, startBackground } from '../api/services.ts';
import { startOfflineServer } from '../scripts/mongo/offline-server.ts';
import { startRedis } from '../scripts/redis.ts';
import { ExactRateLimiter, SharedRateLimiter } from '../shared/concurrency/rate-limit.ts';
import type { CacheRead } from '../shared/concurrency/ttl-cache.ts';
import { sleep } from '../shared/core/clock.ts';
import { apiConfigSchema, loadConfig } from '../shared/core/config.ts';
import type { CachedPage } from '../shared/loans/applications/list-cache.ts';
import { cpuSeconds, loadApiEnv, prepareLoadData } from './load-scenario.ts';
import { countingClient, markdownTable, round, summarize } from './support.ts';

const ADMINS = Number(process.env.REDIS_BENCH_ADMINS ?? 1000);
const TRIALS = Number(process.env.REDIS_BENCH_TRIALS ?? 200);
const DOCS = Number(process.env.REDIS_BENCH_DOCS ?? 2000);
const LIST_SECONDS = Number(process.env.REDIS_BENCH_LIST_S ?? 15);
const RATE_LIMIT = 20;
const RATE_WORKERS = 50;
const INSTANCES = 3;

const offline = process.env.MONGO_URL ? null : await startOfflineServer({ heap: '4g' });
const mongoUrl = process.env.MONGO_URL ?? offline!.url;
const redis = await startRedis();
const newRedisClient = () => createClient({ url: redis.url });
type RedisClient = ReturnType<typeof newRedisClient>;
const redisStats = newRedisClient();
await redisStats.connect();
const dbName = `bench_redis_${Date.now()}`;
const setupClient = await new MongoClient(mongoUrl).connect();
const db = setupClient.db(dbName);
await prepareLoadData(db, { admins: ADMINS, docs: DOCS });
const adminIds = (await db.collection<{ _id: string; email: string }>('admins').find({}).toArray())
  .filter((a) => a.email.startsWith('load'))
  .map((a) => a._id);
// Every admin in flight at once is admitted (no load shedding): each request is decided by the budget.
const baseEnv = { ...loadApiEnv(mongoUrl, dbName), LOG_LEVEL: 'silent', MAX_IN_FLIGHT: String(ADMINS) };

console.log(`## Redis: measured, then decided (${ADMINS} admins, ${INSTANCES} API instances per setup)`);
console.log(
  `server: ${offline ? 'offline mongo-java-server' : 'MONGO_URL'}; redis-server ${(await redisStats.info('server')).match(/redis_version:(\S+)/)?.[1]}; node ${process.version}; load average before ${(await import('node:os')).loadavg()[0]!.toFixed(1)}; ${new Date().toISOString()}`,
);
console.log(
  'rerun: npm run bench:redis   (REDIS_BENCH_ADMINS, REDIS_BENCH_TRIALS, REDIS_BENCH_DOCS, REDIS_BENCH_LIST_S; MONGO_URL for a real server)\n',
);

/** Commands the Redis server ran (its own count, INFO excluded), by name. */
async function redisCommands(): Promise<Map<string, number>> {
  const text = await redisStats.info('commandstats');
  const counts = new Map<string, number>();
  for (const m of text.matchAll(/cmdstat_([^:]+):calls=(\d+)/g)) if (m[1] !== 'info') counts.set(m[1]!, Number(m[2]));
  return counts;
}
async function redisCommandsSince(before: Map<string, number>): Promise<number> {
  let total = 0;
  for (const [name, calls] of await redisCommands()) total += calls - (before.get(name) ?? 0);
  return total;
}

interface Instance {
  services: Services;
  app: ReturnType<typeof createApp>;
  mongo: ReturnType<typeof countingClient>;
  redis: RedisAdapters | null;
  stop(): Promise<void>;
}

async function startInstance(env: Record<string, string>, withRedis: boolean, rest?: (s: Services) => void) {
  const config = loadConfig(env, apiConfigSchema);
  const mongo = countingClient(mongoUrl);
  await mongo.client.connect();
  const services = await createServices(mongo.client.db(dbName), config, createLogger('silent'));
  rest?.(services);
  const adapters = withRedis ? attachRedis(services, redis.url) : null;
  await adapters?.listening;
  const stopBackground = startBackground(services);
  const app = createApp(services, { remoteAddress: () => '127.0.0.1' });
  const instance: Instance = {
    services,
    app,
    mongo,
    redis: adapters,
    async stop() {
      await stopBackground();
      await adapters?.close();
      await mongo.client.close();
    },
  };
  return instance;
}

async function startInstances(env: Record<string, string>, withRedis: boolean, rest?: (s: Services) => void) {
  const list: Instance[] = [];
  for (let i = 0; i < INSTANCES; i++) list.push(await startInstance(env, withRedis, rest));
  return list;
}

const cpu = () => {
  const self = process.cpuUsage();
  return {
    self: (self.user + self.system) / 1e6,
    redis: cpuSeconds(redis.pid),
    mongo: offline ? cpuSeconds(offline.pid) : Number.NaN,
  };
};
const cpuSince = (before: ReturnType<typeof cpu>) => {
  const now = cpu();
  return { self: now.self - before.self, redis: now.redis - before.redis, mongo: now.mongo - before.mongo };
};
const mongoTotal = (instances: Instance[]) => instances.reduce((sum, i) => sum + i.mongo.total(), 0);
const mongoReset = (instances: Instance[]) => {
  for (const i of instances) i.mongo.reset();
};
const pct = (part: number, whole: number) => round((100 * part) / whole, 0);

// ---------------------------------------------------------------------------------------------------
// 1. Revocation
async function revocationRun(withRedis: boolean) {
  const instances = await startInstances(baseEnv, withRedis);
  const [a, b] = instances as [Instance, Instance];
  const stalenessMs = a.services.config.REVOCATION_STALENESS_MS;
  // Every admin holds a session; B has verified every token once (its verified-token cache is warm).
  const tokens: string[] = [];
  for (let i = 0; i < ADMINS; i += 50) {
    const batch = adminIds.slice(i, i + 50);
    const pairs = await Promise.all(
      batch.map((id) => a.services.sessions.issue({ id, roles: ['reviewer'], epoch: 0 })),
    );
    tokens.push(...pairs.map((p) => p.accessToken));
  }
  for (const token of tokens) await b.services.sessions.verify(token);
  const delays: number[] = [];
  const logoutCommands = { mongo: 0, redis: 0 };
  const redisBefore = await redisCommands();
  mongoReset([a]);
  // Logouts in batches of 20 at once, each at a random point of B's refresh cycle.
  for (let start = 0; start < TRIALS; start += 20) {
    await Promise.all(
      tokens.slice(start, Math.min(TRIALS, start + 20)).map(async (token) => {
        await sleep(Math.random() * stalenessMs);
        const res = await a.app.request('/api/auth/logout', {
          method: 'POST',
          headers: { authorization: `Bearer ${token}` },
        });
        if (res.status !== 204) throw new Error(`logout: ${res.status}`);
        const t0 = performance.now();
        for (;;) {
          try {
            await b.services.sessions.verify(token);
          } catch {
            break;
          }
          await sleep(1);
        }
        delays.push(performance.now() - t0);
      }),
    );
  }
  logoutCommands.mongo = a.mongo.total() / TRIALS;
  logoutCommands.redis = (await redisCommandsSince(redisBefore)) / TRIALS;
  // At rest: 10 s with every session open, no request.
  await sleep(500);
  mongoReset(instances);
  const redisIdle = await redisCommands();
  const cpu0 = cpu();
  const started = performance.now();
  await sleep(10_000);
  const seconds = (performance.now() - started) / 1000;
  const idleCpu = cpuSince(cpu0);
  const idle = {
    mongoPerS: mongoTotal(instances) / seconds,
    redisPerS: (await redisCommandsSince(redisIdle)) / seconds,
    cpuSelf: pct(idleCpu.self, seconds),
    cpuRedis: pct(idleCpu.redis, seconds),
    cpuMongo: pct(idleCpu.mongo, seconds),
  };
  for (const i of instances) await i.stop();
  return { delays: summarize(delays), max: Math.max(...delays), stalenessMs, logoutCommands, idle };
}

// ---------------------------------------------------------------------------------------------------
// 2. The per-admin request budget across instances
type LimiterSetup = 'today' | 'mongo-exact' | 'redis';
let rateRuns = 0;

async function rateRun(setup: LimiterSetup) {
  const env = { ...baseEnv, RATE_LIMIT_PER_MINUTE: String(RATE_LIMIT) };
  // Counters of their own for this run (MongoDB ids, Redis keys): no run sees another's counts.
  const name = `api-${setup}-${++rateRuns}`;
  await redisStats.flushAll();
  const instances = await startInstances(env, setup === 'redis', (services) => {
    const options = { name, limit: RATE_LIMIT, windowMs: 60_000, clock: services.clock };
    services.apiLimiter =
      setup === 'mongo-exact'
        ? // As where services live one request (workerd, a client per request): one findOneAndUpdate per request.
          new ExactRateLimiter(services.db, options)
        : new SharedRateLimiter(services.db, options);
  });
  const tokens = await Promise.all(
    adminIds.map(
      async (id) => (await instances[0]!.services.sessions.issue({ id, roles: ['reviewer'], epoch: 0 })).accessToken,
    ),
  );
  // Warm every instance's caches (token verification, the counts page) outside the measurement.
  for (const instance of instances) await instance.services.sessions.verify(tokens[0]!);
  const clock = instances[0]!.services.clock;
  /** Allowed requests per (admin, window), keyed `${admin}:${windowStart}`. */
  const allowed = new Map<string, number>();
  const latencies: number[] = [];
  let requests = 0;
  let refused = 0;
  const send = async (admin: number, n: number) => {
    const instance = instances[n % INSTANCES]!;
    const window = Math.floor(clock.now() / 60_000) * 60_000;
    const t0 = performance.now();
    const res = await instance.app.request('/api/applications/counts', {
      headers: { authorization: `Bearer ${tokens[admin]}` },
    });
    latencies.push(performance.now() - t0);
    await res.arrayBuffer();
    requests++;
    if (res.status === 200) {
      const key = `${admin}:${window}`;
      allowed.set(key, (allowed.get(key) ?? 0) + 1);
    } else if (res.status === 429) refused++;
    else throw new Error(`counts: ${res.status}`);
  };
  const over = () => {
    let total = 0;
    let worst = 0;
    for (const count of allowed.values()) {
      total += Math.max(0, count - RATE_LIMIT);
      worst = Math.max(worst, count - RATE_LIMIT);
    }
    return { total, worst };
  };
  // (a) every admin but the last (kept for (b)) sends 2x the limit, one request after another, round-robin over
  // the instances; RATE_WORKERS admins at a time (a closed loop of all 1,000 at once only measures the queue
  // of this one process).
  mongoReset(instances);
  const redis0 = await redisCommands();
  const cpu0 = cpu();
  const started = performance.now();
  let nextAdmin = 0;
  await Promise.all(
    Array.from({ length: RATE_WORKERS }, async () => {
      for (let admin = nextAdmin++; admin < ADMINS - 1; admin = nextAdmin++) {
        for (let n = 0; n < 2 * RATE_LIMIT; n++) await send(admin, admin + n);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const spent = cpuSince(cpu0);
  const spread = {
    requests,
    refused,
    over: over(),
    latency: summarize(latencies),
    rps: requests / seconds,
    mongoPerReq: mongoTotal(instances) / requests,
    redisPerReq: (await redisCommandsSince(redis0)) / requests,
    cpuMsPerReq: (1000 * (spent.self + spent.redis + (Number.isNaN(spent.mongo) ? 0 : spent.mongo))) / requests,
  };
  // (b) one script: a fresh admin's 5x the limit, 30 at once, round-robin over the instances.
  allowed.clear();
  latencies.length = 0;
  requests = 0;
  refused = 0;
  const burstAdmin = ADMINS - 1;
  let sent = 0;
  await Promise.all(
    Array.from({ length: 30 }, async () => {
      while (sent < 5 * RATE_LIMIT) await send(burstAdmin, sent++);
    }),
  );
  const burst = { requests, over: over(), latency: summarize(latencies) };
  const fellBack = instances.reduce((sum, i) => sum + (i.redis?.limiter.fellBack ?? 0), 0);
  for (const i of instances) await i.stop();
  return { spread, burst, fellBack };
}

// ---------------------------------------------------------------------------------------------------
// 3. The list cache: per instance (today) vs one cache in Redis shared by the instances
/**
 * A shared list cache for this measurement only: a page is looked up in Redis (GET), and on a miss loaded
 * (one load per key per instance at a time) and stored with the same time-to-live (SET PX LIST_CACHE_MS).
 */
function sharedListCache(services: Services, client: RedisClient) {
  const ttlMs = services.config.LIST_CACHE_MS;
  const flights = new Map<string, Promise<CachedPage>>();
  const stats = { hits: 0, misses: 0 };
  const page = async (
    query: Parameters<Services['listCache']['page']>[0],
    load: (signal?: AbortSignal) => Promise<CachedPage>,
  ): Promise<CacheRead<CachedPage>> => {
    const key = `list:${JSON.stringify(query)}`;
    const now = services.clock.now();
    const cached = await client.get(key);
    if (cached) {
      stats.hits++;
      const value = JSON.parse(cached) as CachedPage;
      return {
        value,
        sentAt: value.readAt,
        outcome: 'hit',
        stored: true,
        ttlMs: Math.max(0, value.readAt + ttlMs - now),
      };
    }

    let flight = flights.get(key);
    // Joining a load this instance already sent counts as the per-instance cache counts it: not a miss.
    if (flight) stats.hits++;
    else stats.misses++;
    if (!flight) {
      flight = load().then(async (value) => {
        await client.set(key, JSON.stringify(value), { PX: ttlMs });
        return value;
      });
      flight.finally(() => flights.delete(key)).catch(() => {});
      flights.set(key, flight);
    }
    const value = await flight;
    return { value, sentAt: now, outcome: 'miss', stored: true, ttlMs };
  };
  return { page, stats };
}

async function listRun(shared: boolean) {
  const cacheClient = shared ? newRedisClient() : null;
  await cacheClient?.connect();
  const sharedStats: Array<{ hits: number; misses: number }> = [];
  const instances = await startInstances(baseEnv, false, (services) => {
    if (!cacheClient) return;
    const cache = sharedListCache(services, cacheClient);
    sharedStats.push(cache.stats);
    (services.listCache as { page: unknown }).page = cache.page;
  });
  const tokens = await Promise.all(
    adminIds.map(
      async (id) => (await instances[0]!.services.sessions.issue({ id, roles: ['reviewer'], epoch: 0 })).accessToken,
    ),
  );
  for (const instance of instances) await instance.services.sessions.verify(tokens[0]!);
  // Hit/miss as the per-instance cache counts them: wrap its page().
  const today = { hits: 0, misses: 0 };
  if (!shared) {
    for (const instance of instances) {
      const original = instance.services.listCache.page.bind(instance.services.listCache);
      instance.services.listCache.page = async (query, load, signal) => {
        const read = await original(query, load, signal);
        if (read.outcome === 'miss') today.misses++;
        else today.hits++;
        return read;
      };
    }
  }
  const statusFilters = ['', '&status=pending', '&status=under_review', '&status=approved'];
  const latencies: number[] = [];
  let lists = 0;
  let errors = 0;
  mongoReset(instances);
  const redis0 = await redisCommands();
  const cpu0 = cpu();
  const deadline = performance.now() + LIST_SECONDS * 1000;
  const started = performance.now();
  // Each admin reads a list page (5 pages x 4 filters), waits 1-3 s, reads another; any instance.
  await Promise.all(
    tokens.map(async (token, admin) => {
      await sleep(Math.random() * 2000);
      for (let n = 0; performance.now() < deadline; n++) {
        const instance = instances[(admin + n) % INSTANCES]!;
        const path = `/api/applications?page=${1 + Math.floor(Math.random() * 5)}&limit=50${statusFilters[Math.floor(Math.random() * 4)]}`;
        const t0 = performance.now();
        const res = await instance.app.request(path, { headers: { authorization: `Bearer ${token}` } });
        const body = await res.text();
        latencies.push(performance.now() - t0);
        if (res.status === 200) lists++;
        else {
          errors++;
          if (errors === 1) console.log(`(first list error: ${res.status} ${body.slice(0, 200)})`);
        }
        await sleep(1000 + Math.random() * 2000);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const spent = cpuSince(cpu0);
  const reads = instances.reduce(
    (sum, i) => sum + (i.mongo.counts.get('find') ?? 0) + (i.mongo.counts.get('aggregate') ?? 0),
    0,
  );
  const stats = shared
    ? sharedStats.reduce((s, x) => ({ hits: s.hits + x.hits, misses: s.misses + x.misses }), { hits: 0, misses: 0 })
    : today;
  const result = {
    lists,
    errors,
    listsPerS: lists / seconds,
    hitPct: round((100 * stats.hits) / (stats.hits + stats.misses), 1),
    dbReadsPerS: reads / seconds,
    redisPerS: (await redisCommandsSince(redis0)) / seconds,
    latency: summarize(latencies),
    cpuSelf: pct(spent.self, seconds),
    cpuRedis: pct(spent.redis, seconds),
    cpuMongo: pct(spent.mongo, seconds),
  };
  for (const i of instances) await i.stop();
  await cacheClient?.close();
  return result;
}

/** One row of the revocation table. */
function revocationRow(setup: string, run: Awaited<ReturnType<typeof revocationRun>>) {
  return [
    setup,
    run.delays.n,
    round(run.delays.p50),
    round(run.delays.p95),
    round(run.delays.p99),
    round(run.max),
    round(run.logoutCommands.mongo, 2),
    round(run.logoutCommands.redis, 2),
    round(run.idle.mongoPerS, 1),
    round(run.idle.redisPerS, 1),
    run.idle.cpuSelf,
    run.idle.cpuRedis,
    run.idle.cpuMongo,
  ];
}

// ---------------------------------------------------------------------------------------------------
const only = process.env.REDIS_BENCH_ONLY; // 'revocation', 'rate' or 'list': one part alone
if (!only || only === 'revocation') {
  const revToday = await revocationRun(false);
  const revRedis = await revocationRun(true);
  console.log('### 1. Revocation: a logout on instance A, refused by instance B after\n');
  console.log(
    markdownTable(
      [
        'setup',
        'logouts',
        'p50 ms',
        'p95 ms',
        'p99 ms',
        'max ms',
        'per logout: DB cmds',
        'per logout: Redis cmds',
        'at rest: DB cmds/s (3 instances)',
        'at rest: Redis cmds/s',
        'at rest CPU: instances %',
        'redis-server %',
        'database %',
      ],
      [
        revocationRow(`today: MongoDB refresh every ${revToday.stalenessMs} ms`, revToday),
        revocationRow('Redis pub/sub + the same MongoDB refresh', revRedis),
      ],
    ),
  );
}

if (!only || only === 'rate') {
  const rates: Array<[string, Awaited<ReturnType<typeof rateRun>>]> = [];
  // Two rounds, the setups in turn: the first setup of a run also pays for warming the process up.
  for (const round of [1, 2])
    for (const [label, setup] of [
      ['today: local counts, flushed to MongoDB every 250 ms', 'today'],
      ['MongoDB findOneAndUpdate per request', 'mongo-exact'],
      ['Redis MULTI INCR + PEXPIREAT per request', 'redis'],
    ] as const)
      rates.push([`${label} (round ${round})`, await rateRun(setup)]);
  console.log(`\n### 2. Per-admin request budget (${RATE_LIMIT}/min) across ${INSTANCES} instances\n`);
  console.log(
    `${ADMINS} admins each send ${2 * RATE_LIMIT} requests (GET /api/applications/counts) one after another, round-robin over the instances, ${RATE_WORKERS} admins at a time; then one admin sends ${5 * RATE_LIMIT}, 30 at a time ("burst").\n`,
  );
  console.log(
    markdownTable(
      [
        'setup',
        'requests',
        'req/s',
        'admitted over the limit (all admins)',
        'worst admin over',
        'p50 ms',
        'p95 ms',
        'p99 ms',
        'DB cmds/req',
        'Redis cmds/req',
        'CPU ms/req (all processes)',
        'burst: admitted over',
        'burst p50 ms',
        'decided by the fallback',
      ],
      rates.map(([label, r]) => [
        label,
        r.spread.requests,
        round(r.spread.rps, 0),
        r.spread.over.total,
        r.spread.over.worst,
        round(r.spread.latency.p50, 2),
        round(r.spread.latency.p95, 2),
        round(r.spread.latency.p99, 2),
        round(r.spread.mongoPerReq, 3),
        round(r.spread.redisPerReq, 3),
        round(r.spread.cpuMsPerReq, 3),
        r.burst.over.total,
        round(r.burst.latency.p50, 2),
        r.fellBack,
      ]),
    ),
  );
}

if (!only || only === 'list') {
  const lists: Array<[string, Awaited<ReturnType<typeof listRun>>]> = [];
  for (const round of [1, 2]) {
    lists.push([`today: per-instance cache (round ${round})`, await listRun(false)]);
    lists.push([`one cache in Redis, GET + SET PX (round ${round})`, await listRun(true)]);
  }
  console.log(`\n### 3. List cache across ${INSTANCES} instances (LIST_CACHE_MS 1000)\n`);
  console.log(
    `${ADMINS} admins each read a list page (5 pages x 4 filters, 50 rows), then wait 1-3 s; ${LIST_SECONDS} s.\n`,
  );
  console.log(
    markdownTable(
      [
        'setup',
        'lists (200)',
        'errors',
        'lists/s',
        'hit rate %',
        'DB reads/s',
        'Redis cmds/s',
        'p50 ms',
        'p95 ms',
        'p99 ms',
        'CPU instances %',
        'redis-server %',
        'database %',
      ],
      lists.map(([label, x]) => {
        return [
          label,
          x.lists,
          x.errors,
          round(x.listsPerS, 0),
          x.hitPct,
          round(x.dbReadsPerS, 1),
          round(x.redisPerS, 0),
          round(x.latency.p50, 2),
          round(x.latency.p95, 2),
          round(x.latency.p99, 2),
          x.cpuSelf,
          x.cpuRedis,
          x.cpuMongo,
        ];
      }),
    ),
  );
}

await db.dropDatabase();
await setupClient.close();
await redisStats.close();
await redis.stop();
await offline?.stop();
