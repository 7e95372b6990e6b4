// The Node entry with REDIS_URL, as deployed: two API processes (api/node.ts) on one database and one
// redis-server (scripts/redis.ts). The adapters load, show on /metrics, carry a logout from one process
// to the other over pub/sub (B counts the notice it heard), and the processes stop cleanly.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type ApiInstance, startApiInstances } from '../../scripts/api-instances.ts';
import { type RunningRedis, startRedis } from '../../scripts/redis.ts';
import { apiProcessEnv } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { noRedis, redisSuite } from '../support/redis.ts';

const email = 'redis-processes@example.com';
const password = 'a long enough test password';

let database: TestDatabase;
let redis: RunningRedis;
let instances: ApiInstance[] = [];

/** One sample of /metrics, by its full series text (`name{labels}`). */
async function metric(origin: string, series: string): Promise<number | undefined> {
  const text = await (await fetch(`${origin}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe.skipIf(noRedis)(redisSuite('api/node.ts with REDIS_URL'), () => {
  beforeAll(async () => {
    database = await openTestDatabase(import.meta.filename);
    redis = await startRedis();
    instances = await startApiInstances(
      2,
      apiProcessEnv(database.name, { REDIS_URL: redis.url, ADMIN_EMAIL: email, ADMIN_PASSWORD: password }),
    );
  });
  afterAll(async () => {
    await Promise.all(instances.map((i) => i.stop()));
    await redis?.stop();
    await database?.close();
  });

  it('loads the adapters, shows them on /metrics, and hears a logout made on the other process', async () => {
    const [a, b] = instances as [ApiInstance, ApiInstance];
    await vi.waitFor(async () => expect(await metric(b.origin, 'redis_up')).toBe(1), { timeout: 20_000 });
    const login = await fetch(`${a.origin}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password }),
    });
    expect(login.status).toBe(200);
    const auth = { headers: { authorization: `Bearer ${(await login.json()).accessToken}` } };
    expect((await fetch(`${b.origin}/api/auth/me`, auth)).status).toBe(200);
    const heard = (await metric(b.origin, 'redis_revocation_notices_heard_total')) ?? 0;

    expect((await fetch(`${a.origin}/api/auth/logout`, { method: 'POST', ...auth })).status).toBe(204);
    expect(await metric(a.origin, 'redis_revocation_notices_total{outcome="published"}')).toBe(2);
    // B heard the token and its session family over Redis, and refuses the token.
    await vi.waitFor(
      async () => expect(await metric(b.origin, 'redis_revocation_notices_heard_total')).toBe(heard + 2),
      { timeout: 10_000 },
    );
    expect((await fetch(`${b.origin}/api/auth/me`, auth)).status).toBe(401);
  });

  it('stops cleanly on SIGTERM with its Redis connections open', async () => {
    const [a] = instances as [ApiInstance];
    await a.stop();
    expect(a.process.exitCode).toBe(0);
  });
});
