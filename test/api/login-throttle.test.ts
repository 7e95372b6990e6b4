// Login throttling over real HTTP (the app served on loopback, the client address from X-Real-IP as
// behind nginx) against the test database, with a clock the test moves: failures per (account,
// address) are delayed more and more, failures per account across addresses have a much higher
// bound, so a stranger cannot keep the owner out while guessing stays bounded.
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../api/app.ts';
import { createLogger } from '../../api/log.ts';
import { apiIndexes, createServices, type Services } from '../../api/services.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { testConfig } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const FREE = 3;
const MAX_DELAY_S = 60;
const PER_ACCOUNT = 30;
const WINDOW_MS = 15 * 60_000;
const PASSWORD = 'the owner password';

let database: TestDatabase;
let services: Services;
let server: ReturnType<typeof serve>;
let origin: string;
let now = Date.now();
const clock = { now: () => now };

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  const config = testConfig({
    TRUST_PROXY: 'true',
    LOGIN_FREE_FAILURES: String(FREE),
    LOGIN_DELAY_BASE_MS: '1000',
    LOGIN_DELAY_MAX_MS: String(MAX_DELAY_S * 1000),
    LOGIN_ATTEMPTS_PER_ACCOUNT: String(PER_ACCOUNT),
  });
  await ensureIndexes(database.db, apiIndexes);
  services = await createServices(database.db, config, createLogger('silent'), { localClock: clock });
  server = serve({ fetch: createApp(services).fetch, hostname: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await database.close();
});

async function owner(name: string): Promise<string> {
  const email = `${name}@example.com`;
  await services.admins.create({ email, password: PASSWORD, roles: ['viewer'] });
  return email;
}

async function login(email: string, password: string, address: string) {
  const res = await fetch(`${origin}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-real-ip': address },
    body: JSON.stringify({ email, password }),
  });
  const body = (await res.json()) as { error?: { code: string } };
  return { status: res.status, retryAfter: Number(res.headers.get('retry-after') ?? Number.NaN), body };
}

/** Moves the clock to just after the start of the next fixed window, so a test's counts share one. */
function toNextWindow() {
  now = (Math.floor(now / WINDOW_MS) + 1) * WINDOW_MS + 1_000;
}

describe('login throttling per (account, address)', () => {
  it('lets the first failures through, then delays each further one twice as long, up to the maximum', async () => {
    const email = await owner('delayed');
    for (let i = 0; i < FREE; i++) expect((await login(email, 'wrong guess!', '10.1.0.1')).status).toBe(401);
    const waits: number[] = [];
    for (let i = 0; i < 8; i++) {
      const refused = await login(email, 'wrong guess!', '10.1.0.1');
      expect(refused.status).toBe(429);
      expect(refused.body.error?.code).toBe('rate_limited');
      waits.push(refused.retryAfter);
      // One millisecond short of the delay is still refused, even with the right password.
      now += refused.retryAfter * 1000 - 1;
      expect((await login(email, PASSWORD, '10.1.0.1')).status).toBe(429);
      now += 1;
      expect((await login(email, 'wrong guess!', '10.1.0.1')).status).toBe(401);
    }
    expect(waits).toEqual([1, 2, 4, 8, 16, 32, 60, 60]);
    // Once the owner gets in from there, the failures there are forgotten.
    now += MAX_DELAY_S * 1000;
    expect((await login(email, PASSWORD, '10.1.0.1')).status).toBe(200);
    for (let i = 0; i < FREE; i++) expect((await login(email, 'wrong guess!', '10.1.0.1')).status).toBe(401);
  });

  it('counts per address: failures from A do not slow the same account down from B', async () => {
    const email = await owner('two-places');
    for (let i = 0; i < FREE; i++) expect((await login(email, 'wrong guess!', '10.2.0.1')).status).toBe(401);
    expect((await login(email, 'wrong guess!', '10.2.0.1')).status).toBe(429);
    expect((await login(email, PASSWORD, '10.2.0.1')).status).toBe(429);
    // A counter shared by every address would refuse these two.
    expect((await login(email, 'wrong guess!', '10.2.0.2')).status).toBe(401);
    expect((await login(email, PASSWORD, '10.2.0.2')).status).toBe(200);
  });

  it('1,000 failed logins from address A, each waiting out its delay: the owner still logs in from address B', async () => {
    const email = await owner('besieged');
    const started = now;
    let failures = 0;
    let refusals = 0;
    while (failures < 1_000) {
      const res = await login(email, `guess number ${failures}`, '10.3.0.1');
      if (res.status === 429) {
        refusals++;
        expect(res.retryAfter).toBeGreaterThanOrEqual(1);
        expect(res.retryAfter).toBeLessThanOrEqual(MAX_DELAY_S);
        now += res.retryAfter * 1000;
      } else {
        expect(res.status).toBe(401);
        failures++;
      }
    }
    // The guesser was slowed to the maximum delay: 1,000 guesses took most of 1,000 minutes.
    expect(now - started).toBeGreaterThan((1_000 - FREE - 10) * MAX_DELAY_S * 1000);
    expect(refusals).toBeGreaterThan(900);
    expect((await login(email, PASSWORD, '10.3.0.2')).status).toBe(200);
    // And a burst from A right now is refused without touching the owner either.
    for (let i = 0; i < 50; i++) expect((await login(email, 'burst guess', '10.3.0.1')).status).toBe(429);
    expect((await login(email, PASSWORD, '10.3.0.3')).status).toBe(200);
  }, 120_000);

  it('cannot be slipped past by concurrent guesses from one address', async () => {
    const email = await owner('rushed');
    const statuses = await Promise.all(
      Array.from({ length: 20 }, (_, i) => login(email, `guess ${i}!`, '10.4.0.1').then((res) => res.status)),
    );
    expect(statuses.filter((status) => status === 401).length).toBeLessThanOrEqual(FREE);
    expect(statuses.filter((status) => status === 429).length).toBeGreaterThanOrEqual(20 - FREE);
  });
});

describe('login throttling per account across addresses', () => {
  it('stops a guess spread over many addresses at the per-account bound; the owner gets in from an address they used', async () => {
    toNextWindow();
    const email = await owner('spread');
    expect((await login(email, PASSWORD, '10.5.255.1')).status).toBe(200);
    const statuses: number[] = [];
    for (let i = 0; i < PER_ACCOUNT + 20; i++)
      statuses.push((await login(email, 'spread guess', `10.5.0.${i}`)).status);
    expect(statuses.slice(0, PER_ACCOUNT)).toEqual(Array(PER_ACCOUNT).fill(401));
    expect(statuses.slice(PER_ACCOUNT)).toEqual(Array(20).fill(429));
    // The right password from a new address is refused too: the bound holds whatever is guessed.
    const fresh = await login(email, PASSWORD, '10.5.1.1');
    expect(fresh.status).toBe(429);
    expect(fresh.retryAfter).toBeGreaterThan(0);
    expect(fresh.retryAfter).toBeLessThanOrEqual(WINDOW_MS / 1000);
    expect((await login(email, PASSWORD, '10.5.255.1')).status).toBe(200);
    // The next window starts from zero.
    toNextWindow();
    expect((await login(email, PASSWORD, '10.5.1.1')).status).toBe(200);
  });
});
