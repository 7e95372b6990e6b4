// The Redis revocation bus (api/redis.ts) against Debian's redis-server started by scripts/redis.ts: a
// logout on instance A is refused by instance B through pub/sub while B's MongoDB refresh cannot have run
// (B's clock is held, so its cache stays "fresh"); with Redis gone the same logout is not heard, and the
// refresh still refuses it once B's clock passes REVOCATION_STALENESS_MS (never fail open); a restarted
// Redis is found again by itself.
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApp } from '../../api/app.ts';
import { createLogger } from '../../api/log.ts';
import { attachRedis, REVOCATION_CHANNEL, type RedisAdapters } from '../../api/redis.ts';
import { apiIndexes, createServices, type Services } from '../../api/services.ts';
import { type RunningRedis, startRedis } from '../../scripts/redis.ts';
import type { ApiConfig } from '../../shared/core/config.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { testConfig } from '../support/app.ts';
import { TEST_PASSWORD } from '../support/http.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { noRedis, redisSuite } from '../support/redis.ts';

const STALENESS_MS = 500;

let database: TestDatabase;
let redis: RunningRedis;
let a: { services: Services; app: ReturnType<typeof createApp>; redis: RedisAdapters };
let b: { services: Services; app: ReturnType<typeof createApp>; redis: RedisAdapters };
/** B's clock: held still unless a test moves it, so B's revocation cache never goes stale by itself. */
let bNow = Date.now();
const email = 'redis-revocation@example.com';

let config: ApiConfig;

/** An API instance on the shared database and configuration (same signing keys), with the adapters. */
async function instance(localClock?: { now(): number }) {
  const services = await createServices(database.db, config, createLogger('silent'), { localClock });
  const adapters = attachRedis(services, config.REDIS_URL!);
  await adapters.listening;
  return { services, app: createApp(services, { remoteAddress: () => '127.0.0.1' }), redis: adapters };
}

async function login(): Promise<string> {
  const res = await a.app.request('/api/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: TEST_PASSWORD }),
  });
  expect(res.status).toBe(200);
  return (await res.json()).accessToken;
}

async function logout(token: string): Promise<void> {
  const res = await a.app.request('/api/auth/logout', {
    method: 'POST',
    headers: { authorization: `Bearer ${token}` },
  });
  expect(res.status).toBe(204);
}

/** B's answer to the token: 200 or 401 (what every authenticated route does first). */
async function onB(token: string): Promise<number> {
  return (await b.app.request('/api/auth/me', { headers: { authorization: `Bearer ${token}` } })).status;
}

/** A token B has just accepted after a fresh MongoDB refresh (its clock moved to now). */
async function freshTokenAcceptedByB(): Promise<string> {
  const token = await login();
  bNow = Date.now() + 1;
  expect(await onB(token)).toBe(200);
  return token;
}

describe.skipIf(noRedis)(redisSuite('Redis revocation bus (REDIS_URL)'), () => {
  beforeAll(async () => {
    database = await openTestDatabase(import.meta.filename);
    await ensureIndexes(database.db, apiIndexes);
    redis = await startRedis();
    config = testConfig({ REVOCATION_STALENESS_MS: String(STALENESS_MS), REDIS_URL: redis.url });
    a = await instance();
    b = await instance({ now: () => bNow });
    await a.services.admins.create({ email, password: TEST_PASSWORD, roles: ['viewer'] });
  });
  afterAll(async () => {
    await a?.redis.close();
    await b?.redis.close();
    await redis?.stop();
    await database?.close();
  });

  it('B refuses a token logged out on A through pub/sub, before its own refresh could run', async () => {
    const token = await freshTokenAcceptedByB();
    const syncs = b.services.revocations.syncs;
    const heard = b.services.revocations.heardCount;
    await logout(token);
    await vi.waitFor(async () => expect(await onB(token)).toBe(401), { timeout: 10_000, interval: 20 });
    // B read nothing from MongoDB meanwhile: the notice alone refused it.
    expect(b.services.revocations.syncs).toBe(syncs);
    expect(b.services.revocations.heardCount).toBeGreaterThan(heard);
    expect(a.redis.bus.published).toBeGreaterThan(0);
  });

  it('logout-all (the admin cutoff) travels the same way', async () => {
    const token = await freshTokenAcceptedByB();
    const res = await a.app.request('/api/auth/logout-all', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(res.status).toBe(204);
    await vi.waitFor(async () => expect(await onB(token)).toBe(401), { timeout: 10_000, interval: 20 });
  });

  it('ignores a malformed notice on the channel', async () => {
    const token = await freshTokenAcceptedByB();
    const other = createClient({ url: redis.url });
    await other.connect();
    const heard = b.services.revocations.heardCount;
    await other.publish(REVOCATION_CHANNEL, 'not json');
    await other.publish(REVOCATION_CHANNEL, JSON.stringify([{ kind: 'everyone', value: '*', atMs: Date.now() }]));
    // A well-formed one published after them arrives after them (one connection, in order).
    await other.publish(REVOCATION_CHANNEL, JSON.stringify([{ kind: 'jti', value: 'unrelated', atMs: Date.now() }]));
    await vi.waitFor(() => expect(b.services.revocations.heardCount).toBe(heard + 1), { timeout: 10_000 });
    await other.close();
    expect(await onB(token)).toBe(200);
  });

  it('with Redis gone: B does not hear, but its MongoDB refresh still refuses within the bound; a restarted Redis is used again', async () => {
    await redis.kill();
    await vi.waitFor(() => expect(a.redis.client.isReady).toBe(false), { timeout: 10_000 });
    const token = await freshTokenAcceptedByB();
    const lost = a.redis.bus.lost;
    await logout(token);
    expect(a.redis.bus.lost).toBe(lost + 2); // the token and its session family, both unpublished
    // B's cache is within the bound: it still accepts (the bus was what refused it above)...
    expect(await onB(token)).toBe(200);
    // ...and refuses once the bound has passed on its clock: its refresh reads the revocation from MongoDB.
    bNow += STALENESS_MS + 1;
    expect(await onB(token)).toBe(401);

    // Redis back on the same address: both instances reconnect and resubscribe by themselves.
    redis = await startRedis({ port: redis.port });
    await vi.waitFor(
      () => {
        expect(a.redis.client.isReady).toBe(true);
        expect(b.redis.subscriber.isReady).toBe(true);
      },
      { timeout: 20_000, interval: 100 },
    );
    const again = await freshTokenAcceptedByB();
    await logout(again);
    await vi.waitFor(async () => expect(await onB(again)).toBe(401), { timeout: 10_000, interval: 20 });
  });
});
