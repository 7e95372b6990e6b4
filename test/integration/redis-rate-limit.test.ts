// The per-admin request budget counted in Redis (api/redis.ts) against Debian's redis-server started by
// scripts/redis.ts: one admin's requests spread over two instances are limited exactly (today's local
// counts flushed every 250 ms let them overshoot); with Redis gone the API still answers and still
// limits, through the MongoDB limiter it wraps; a restarted Redis decides again.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApp } from '../../api/app.ts';
import { createLogger } from '../../api/log.ts';
import { createMetrics } from '../../api/metrics.ts';
import { attachRedis, type RedisAdapters } from '../../api/redis.ts';
import { apiIndexes, createServices, type Services } from '../../api/services.ts';
import { type RunningRedis, startRedis } from '../../scripts/redis.ts';
import type { ApiConfig } from '../../shared/core/config.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { testConfig } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { noRedis, redisSuite } from '../support/redis.ts';

const LIMIT = 10;

let database: TestDatabase;
let redis: RunningRedis;
type Instance = { services: Services; app: ReturnType<typeof createApp>; redis: RedisAdapters | null };
let a: Instance;
let b: Instance;
// Both instances on one held clock in the middle of a minute: every request of a test falls in one window.
const now = Math.floor(Date.now() / 60_000) * 60_000 + 30_000;
const clock = { now: () => now };

let config: ApiConfig;

/** An API instance on the shared database and configuration (same signing keys); with or without Redis. */
async function instance(withRedis: boolean): Promise<Instance> {
  const services = await createServices(database.db, config, createLogger('silent'), { localClock: clock });
  const adapters = withRedis ? attachRedis(services, config.REDIS_URL!) : null;
  await adapters?.listening;
  return { services, app: createApp(services, { remoteAddress: () => '127.0.0.1' }), redis: adapters };
}

/** A new admin's access token (issued on A; every instance verifies it). */
async function newAdmin(): Promise<string> {
  const admin = await a.services.admins.create({
    email: `rl-${crypto.randomUUID().slice(0, 8)}@example.com`,
    password: 'a long enough test password',
    roles: ['viewer'],
  });
  return (await a.services.sessions.issue({ id: admin._id, roles: ['viewer'], epoch: 0 })).accessToken;
}

async function statuses(token: string, on: Instance[], n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const res = await on[i % on.length]!.app.request('/api/applications/counts', {
      headers: { authorization: `Bearer ${token}` },
    });
    await res.arrayBuffer();
    out.push(res.status);
  }
  return out;
}

const count = (list: number[], status: number) => list.filter((s) => s === status).length;

describe.skipIf(noRedis)(redisSuite('Redis request budget (REDIS_URL)'), () => {
  beforeAll(async () => {
    database = await openTestDatabase(import.meta.filename);
    await ensureIndexes(database.db, apiIndexes);
    redis = await startRedis();
    config = testConfig({ RATE_LIMIT_PER_MINUTE: String(LIMIT), REDIS_URL: redis.url });
    a = await instance(true);
    b = await instance(true);
  });
  afterAll(async () => {
    await a?.redis?.close();
    await b?.redis?.close();
    await redis?.stop();
    await database?.close();
  });

  it('one admin over two instances gets exactly the limit', async () => {
    const token = await newAdmin();
    const got = await statuses(token, [a, b], LIMIT + 6);
    expect(count(got, 200)).toBe(LIMIT);
    expect(count(got, 429)).toBe(6);
    expect(got.slice(0, LIMIT).every((s) => s === 200)).toBe(true);
    expect(a.redis!.limiter.fellBack + b.redis!.limiter.fellBack).toBe(0);
    const res = await a.app.request('/api/applications/counts', { headers: { authorization: `Bearer ${token}` } });
    expect(res.headers.get('retry-after')).not.toBeNull();
  });

  it("today's limiter (no Redis) on the same two instances lets the same requests overshoot", async () => {
    // The contrast the adapter is kept for: local counts, flushed every 250 ms; no flush between these requests.
    const plainA = await instance(false);
    const plainB = await instance(false);
    const token = await newAdmin();
    const got = await statuses(token, [plainA, plainB], LIMIT + 6);
    expect(count(got, 200)).toBeGreaterThan(LIMIT);
  });

  it('without Redis the API still answers and limits (the MongoDB limiter); a restarted Redis decides again', async () => {
    // What an operator sees on /metrics (Node exports these when REDIS_URL is set).
    const metrics = createMetrics({
      queue: a.services.queue,
      redis: { ...a.redis!, heard: () => a.services.revocations.heardCount },
    });
    const metric = async (name: string) => {
      const values = (await metrics.registry.getSingleMetric(name)!.get()).values;
      return Object.fromEntries(values.map((v) => [Object.values(v.labels).join() || 'value', v.value]));
    };
    expect(await metric('redis_up')).toEqual({ value: 1 });
    await redis.kill();
    await vi.waitFor(() => expect(a.redis!.client.isReady).toBe(false), { timeout: 10_000 });
    const token = await newAdmin();
    const fellBack = a.redis!.limiter.fellBack;
    // On one instance the local count is exact: the limit holds, no request fails.
    const got = await statuses(token, [a], LIMIT + 3);
    expect(count(got, 200)).toBe(LIMIT);
    expect(count(got, 429)).toBe(3);
    expect(a.redis!.limiter.fellBack - fellBack).toBe(LIMIT + 3);
    expect(await metric('redis_up')).toEqual({ value: 0 });
    expect((await metric('rate_limit_decisions_total')).fallback).toBe(a.redis!.limiter.fellBack);

    redis = await startRedis({ port: redis.port });
    await vi.waitFor(() => expect(a.redis!.client.isReady && b.redis!.client.isReady).toBe(true), {
      timeout: 20_000,
      interval: 100,
    });
    const counted = a.redis!.limiter.counted + b.redis!.limiter.counted;
    const fresh = await newAdmin();
    const again = await statuses(fresh, [a, b], LIMIT + 2);
    expect(count(again, 200)).toBe(LIMIT);
    expect(a.redis!.limiter.counted + b.redis!.limiter.counted - counted).toBe(LIMIT + 2);
  });

  it('REDIS_URL must be a redis:// or rediss:// URL', () => {
    expect(() => testConfig({ REDIS_URL: 'http://127.0.0.1:6379' })).toThrow(/REDIS_URL/);
    expect(testConfig({}).REDIS_URL).toBeUndefined();
  });
});
