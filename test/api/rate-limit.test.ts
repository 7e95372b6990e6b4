// Per-admin rate limiting across instances: two apps on one database serving one admin in turn.
// The limiter counts locally and flushes to MongoDB (the background timer is not started in tests,
// so the test flushes between rounds): the global limit can be overshot by what the instances
// admit within one flush interval, never more, and never under-admits.
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import { type RateDecision, SharedRateLimiter } from '../../shared/concurrency/rate-limit.ts';
import { createTestApp } from '../support/app.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const LIMIT = 30;
const PER_INSTANCE_PER_ROUND = 5;
const PASSWORD = 'a long enough password';
const ROUTE = '/api/admin/queue-stats';

interface Instance {
  app: ReturnType<typeof createApp>;
  services: Services;
}
let database: TestDatabase;
let a: Instance;
let b: Instance;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  const overrides = { RATE_LIMIT_PER_MINUTE: String(LIMIT) };
  const first = await createTestApp(database.db, overrides);
  a = first;
  b = await createTestApp(database.db, { ...overrides, JWT_KEYS: first.config.JWT_KEYS });
});
afterAll(() => database.close());

async function tokenFor(email: string) {
  const created = await a.services.admins.create({ email, password: PASSWORD, roles: ['admin'] });
  const res = await a.app.request('/api/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: PASSWORD }),
  });
  return { id: created._id, token: ((await res.json()) as { accessToken: string }).accessToken };
}

/** The window is a fixed minute: start away from its end so the whole test runs in one window. */
async function awayFromWindowEnd(services: Services, marginMs = 10_000) {
  const left = 60_000 - (services.clock.now() % 60_000);
  if (left < marginMs) await new Promise((resolve) => setTimeout(resolve, left + 200));
}

const get = (instance: Instance, token: string) =>
  instance.app.request(ROUTE, { headers: { authorization: `Bearer ${token}` } });

describe('per-admin rate limit shared by two instances', () => {
  it('admits the limit plus at most one flush interval, then 429s with Retry-After and RateLimit headers', async () => {
    const busy = await tokenFor('busy@example.com');
    const calm = await tokenFor('calm@example.com');
    await awayFromWindowEnd(a.services);

    let admitted = 0;
    let refused: Response | undefined;
    const rounds: number[] = [];
    let lastRemaining = LIMIT;
    for (let round = 0; round < 20; round++) {
      let admittedThisRound = 0;
      for (let i = 0; i < PER_INSTANCE_PER_ROUND * 2; i++) {
        const res = await get(i % 2 === 0 ? a : b, busy.token);
        if (res.status === 200) {
          admittedThisRound++;
          const remaining = Number(res.headers.get('ratelimit-remaining'));
          expect(res.headers.get('ratelimit-limit')).toBe(String(LIMIT));
          expect(remaining).toBeLessThan(LIMIT);
          lastRemaining = Math.min(lastRemaining, remaining);
        } else {
          expect(res.status).toBe(429);
          refused ??= res;
        }
      }
      rounds.push(admittedThisRound);
      admitted += admittedThisRound;
      // One flush interval ends: both instances send their counts and read the global totals.
      await a.services.apiLimiter.flush();
      await b.services.apiLimiter.flush();
      if (admittedThisRound === 0) break;
    }

    const oneInterval = PER_INSTANCE_PER_ROUND * 2;
    expect(admitted).toBeGreaterThanOrEqual(LIMIT);
    expect(admitted).toBeLessThanOrEqual(LIMIT + oneInterval);
    expect(rounds.at(-1)).toBe(0);
    expect(lastRemaining).toBe(0);
    // Without sharing, each instance alone would have admitted LIMIT (2x in total).
    expect(admitted).toBeLessThan(2 * LIMIT);
    // The global count lives in MongoDB and equals what was admitted.
    const counters = await database.db
      .collection<{ _id: string; count: number }>('rate_limits')
      .find({ _id: { $regex: `^api:${busy.id}:` } })
      .toArray();
    expect(counters.map((doc) => doc.count)).toEqual([admitted]);

    expect(refused).toBeDefined();
    const res = refused as Response;
    const retryAfter = Number(res.headers.get('retry-after'));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(res.headers.get('ratelimit-limit')).toBe(String(LIMIT));
    expect(res.headers.get('ratelimit-remaining')).toBe('0');
    expect(res.headers.get('ratelimit-reset')).toBe(String(retryAfter));
    expect(await res.json()).toEqual({ error: { code: 'rate_limited', message: expect.any(String) } });

    // Another admin has a budget of their own, on both instances.
    for (const instance of [a, b]) {
      const other = await get(instance, calm.token);
      expect(other.status).toBe(200);
      expect(Number(other.headers.get('ratelimit-remaining'))).toBeGreaterThanOrEqual(LIMIT - 2);
    }
    // And the busy admin stays refused on both until the window ends.
    expect((await get(a, busy.token)).status).toBe(429);
    expect((await get(b, busy.token)).status).toBe(429);
  });

  it('one instance on its own is exact: the limit, then 429', async () => {
    const solo = await tokenFor('solo@example.com');
    await awayFromWindowEnd(a.services);
    const statuses: number[] = [];
    for (let i = 0; i < LIMIT + 5; i++) statuses.push((await get(a, solo.token)).status);
    expect(statuses.filter((s) => s === 200).length).toBe(LIMIT);
    expect(statuses.slice(LIMIT)).toEqual(Array(5).fill(429));
  });

  it('hits counted while a flush reads back the totals still see the hits that flush just sent', async () => {
    // A stopped clock keeps every hit in one window.
    const frozen = Date.now();
    const clock = { now: () => frozen };
    const client = new MongoClient(mongoUrl(), { monitorCommands: true });
    try {
      const limiter = new SharedRateLimiter(client.db(database.name), {
        name: 'race',
        limit: 10,
        windowMs: 60_000,
        clock,
      });
      for (let i = 0; i < 4; i++) expect(limiter.hit('x').allowed).toBe(true);
      let during: RateDecision | undefined;
      // The read-back starts after the bulk write has landed: a hit now must count the 4 sent.
      client.on('commandStarted', (event) => {
        if (event.commandName === 'find' && event.command.find === 'rate_limits') during ??= limiter.hit('x');
      });
      await limiter.flush();
      expect(during).toMatchObject({ allowed: true, remaining: 10 - 5 });
      expect(limiter.hit('x').remaining).toBe(10 - 6);
      await limiter.flush();
      const doc = await database.db.collection<{ _id: string; count: number }>('rate_limits').findOne({
        _id: `race:x:${Math.floor(frozen / 60_000) * 60_000}`,
      });
      expect(doc?.count).toBe(6);
    } finally {
      await client.close();
    }
  });
});
