// Sessions through HTTP: login, throttling, refresh rotation and reuse, logout seen by another instance.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import { createTestApp } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

type App = ReturnType<typeof createApp>;
let database: TestDatabase;
let app: App;
let other: App;
let services: Services;
const keys = `k1:${btoa(String.fromCharCode(...new Uint8Array(32).fill(7)))}`;
const password = 'a long enough password';
const overrides = { JWT_KEYS: keys, LOGIN_ATTEMPTS_PER_ACCOUNT: '3', LOGIN_ATTEMPTS_PER_ADDRESS: '8' };

function post(target: App, path: string, body?: unknown, headers: Record<string, string> = {}) {
  return target.request(path, {
    method: 'POST',
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function login(email: string, target = app) {
  const res = await post(target, '/api/auth/login', { email, password });
  expect(res.status).toBe(200);
  return (await res.json()) as { accessToken: string; refreshToken: string };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app, services } = await createTestApp(database.db, overrides));
  // A second instance on the same database, as if behind the same load balancer.
  ({ app: other } = await createTestApp(database.db, overrides, '10.0.0.2'));
  for (const [email, roles] of [
    ['ada@example.com', ['admin']],
    ['bob@example.com', ['viewer']],
    ['cy@example.com', ['viewer']],
    ['dee@example.com', ['viewer']],
  ] as const) {
    await services.admins.create({ email, password, roles: [...roles] });
  }
});
afterAll(() => database.close());
afterEach(() => {
  vi.useRealTimers();
});

/**
 * Two instances of a test's own, for a test that moves the clock: a cache that synced on a moved
 * clock thinks itself fresh once real time is back, so the shared instances must not see it.
 */
async function ownInstances() {
  const first = await createTestApp(database.db, overrides);
  const second = await createTestApp(database.db, overrides, '10.0.0.2');
  return { app: first.app, other: second.app };
}

/** Freezes the clocks (Date) past the revocation staleness bound, so every instance's cache is due. */
function pastStalenessBound() {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(Date.now() + services.config.REVOCATION_STALENESS_MS + 1);
}

describe('POST /api/auth/login', () => {
  it('returns a Bearer token pair; the access token opens /api/auth/me on any instance', async () => {
    const res = await post(app, '/api/auth/login', { email: 'Ada@Example.com', password });
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body).toMatchObject({ tokenType: 'Bearer', expiresIn: 900 });
    const me = await other.request('/api/auth/me', { headers: bearer(body.accessToken) });
    expect(me.status).toBe(200);
    expect(await me.json()).toMatchObject({ email: 'ada@example.com', roles: ['admin'] });
  });

  it('gives the same answer for an unknown email and a wrong password', async () => {
    const unknown = await post(app, '/api/auth/login', { email: 'nobody@example.com', password });
    const wrong = await post(app, '/api/auth/login', { email: 'cy@example.com', password: 'wrong password!' });
    expect(unknown.status).toBe(401);
    expect(wrong.status).toBe(401);
    expect(await unknown.json()).toEqual(await wrong.json());
  });

  it('answers 400 with field paths for a malformed body', async () => {
    const res = await post(app, '/api/auth/login', { email: 'not-an-email', password: '', extra: 1 });
    expect(res.status).toBe(400);
    const paths = (await res.json()).error.details.map((d: { path: string }) => d.path);
    expect(paths).toEqual(expect.arrayContaining(['email', 'password']));
  });

  it('throttles failed logins per account across instances, with 429 and Retry-After', async () => {
    for (const target of [app, other, app]) {
      expect(
        (await post(target, '/api/auth/login', { email: 'dee@example.com', password: 'guess guess' })).status,
      ).toBe(401);
    }
    const blocked = await post(other, '/api/auth/login', { email: 'dee@example.com', password });
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await blocked.json()).error.code).toBe('rate_limited');
    // Another account from the same address is not locked by dee's failures.
    expect((await post(app, '/api/auth/login', { email: 'bob@example.com', password })).status).toBe(200);
  });

  it('lets no more than the limit through when guesses arrive all at once', async () => {
    await services.admins.create({ email: 'eve@example.com', password, roles: ['viewer'] });
    const overrides = { JWT_KEYS: keys, LOGIN_ATTEMPTS_PER_ACCOUNT: '3', LOGIN_ATTEMPTS_PER_ADDRESS: '100' };
    const { app: left } = await createTestApp(database.db, overrides, '10.1.0.1');
    const { app: right } = await createTestApp(database.db, overrides, '10.1.0.2');
    const statuses = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        Promise.resolve(
          post(i % 2 ? left : right, '/api/auth/login', { email: 'eve@example.com', password: `guess ${i}!` }),
        ).then((res) => res.status),
      ),
    );
    expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(3);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(17);
  });

  it('throttles failed logins per client address', async () => {
    const overrides = { JWT_KEYS: keys, LOGIN_ATTEMPTS_PER_ADDRESS: '8' };
    const { app: lone } = await createTestApp(database.db, overrides, '10.9.9.9');
    const { app: elsewhere } = await createTestApp(database.db, overrides, '10.9.9.10');
    for (let i = 0; i < 8; i++) {
      const res = await post(lone, '/api/auth/login', { email: `guess${i}@example.com`, password: 'nope nope' });
      expect(res.status).toBe(401);
    }
    const blocked = await post(lone, '/api/auth/login', { email: 'bob@example.com', password });
    expect(blocked.status).toBe(429);
    // Counted per address: one counter for every address would refuse this one too.
    expect((await post(elsewhere, '/api/auth/login', { email: 'bob@example.com', password })).status).toBe(200);
  });
});

describe('refresh, logout, logout-all', () => {
  it('rotates the refresh token; reusing the old one revokes the family', async () => {
    const first = await login('bob@example.com');
    const res = await post(app, '/api/auth/refresh', { refreshToken: first.refreshToken });
    expect(res.status).toBe(200);
    const second = await res.json();
    expect(second.refreshToken).not.toBe(first.refreshToken);

    const reuse = await post(other, '/api/auth/refresh', { refreshToken: first.refreshToken });
    expect(reuse.status).toBe(401);
    expect((await reuse.json()).error.code).toBe('refresh_reused');
    expect((await post(app, '/api/auth/refresh', { refreshToken: second.refreshToken })).status).toBe(401);
  });

  it('a logout on one instance is refused by the other within the staleness bound', async () => {
    const { app, other } = await ownInstances();
    const tokens = await login('bob@example.com', app);
    expect((await other.request('/api/auth/me', { headers: bearer(tokens.accessToken) })).status).toBe(200);
    expect((await post(app, '/api/auth/logout', undefined, bearer(tokens.accessToken))).status).toBe(204);
    pastStalenessBound();
    const refused = await other.request('/api/auth/me', { headers: bearer(tokens.accessToken) });
    expect(refused.status).toBe(401);
    expect((await refused.json()).error.code).toBe('token_revoked');
    expect((await post(other, '/api/auth/refresh', { refreshToken: tokens.refreshToken })).status).toBe(401);
  });

  it('logout-all ends every session of the admin', async () => {
    const { app, other } = await ownInstances();
    const one = await login('cy@example.com', app);
    const two = await login('cy@example.com', other);
    expect((await other.request('/api/auth/me', { headers: bearer(two.accessToken) })).status).toBe(200);
    expect((await post(app, '/api/auth/logout-all', undefined, bearer(one.accessToken))).status).toBe(204);
    pastStalenessBound();
    for (const target of [app, other]) {
      const refused = await target.request('/api/auth/me', { headers: bearer(two.accessToken) });
      expect(refused.status).toBe(401);
      expect((await refused.json()).error.code).toBe('token_revoked');
    }
    expect((await post(app, '/api/auth/refresh', { refreshToken: two.refreshToken })).status).toBe(401);
    // The cutoff has millisecond precision: a login right after it works at once.
    const again = await login('cy@example.com', other);
    expect((await app.request('/api/auth/me', { headers: bearer(again.accessToken) })).status).toBe(200);
  });

  it('refuses a missing or malformed Authorization header with 401 and a Bearer challenge', async () => {
    for (const headers of [{}, { authorization: 'Basic abc' }, { authorization: 'Bearer not.a.jwt' }] as Record<
      string,
      string
    >[]) {
      const res = await app.request('/api/auth/me', { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
    }
  });
});

describe('first admin', () => {
  it('is created from ADMIN_EMAIL/ADMIN_PASSWORD only when no admin exists', async () => {
    const fresh = await openTestDatabase(`${import.meta.filename}-bootstrap`);
    const { services: s } = await createTestApp(fresh.db);
    expect(await s.admins.bootstrap('first@example.com', 'first password!!')).toBe('created');
    expect(await s.admins.bootstrap('second@example.com', 'second password!')).toBe('exists');
    expect(await s.admins.bootstrap(undefined, undefined)).toBe('skipped');
    expect(await s.admins.collection.countDocuments()).toBe(1);
    await fresh.close();
  });
});
