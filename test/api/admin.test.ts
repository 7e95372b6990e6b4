// Operations and admin management through HTTP: queue stats, creating, listing and changing admins.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { createTestApp } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

type App = ReturnType<typeof createApp>;
const PASSWORD = 'a long enough password';

let database: TestDatabase;
let app: App;
let services: Services;
let adminToken: string;
let adminId: string;
let jwtKeys: string;

const json = (body: unknown, token?: string, method = 'POST'): RequestInit => ({
  method,
  body: JSON.stringify(body),
  headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
});
const bearer = (token: string): RequestInit => ({ headers: { authorization: `Bearer ${token}` } });

async function login(email: string, password = PASSWORD, on = app) {
  const res = await on.request('/api/auth/login', json({ email, password }));
  return { status: res.status, body: (await res.json()) as { accessToken: string; refreshToken: string } };
}

async function adminWith(email: string, roles: Role[]) {
  const created = await services.admins.create({ email, password: PASSWORD, roles });
  const { body } = await login(email);
  return { id: created._id, token: body.accessToken, refreshToken: body.refreshToken };
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  const first = await createTestApp(database.db);
  ({ app, services } = first);
  jwtKeys = first.config.JWT_KEYS;
  const root = await adminWith('root@example.com', ['admin']);
  adminToken = root.token;
  adminId = root.id;
});
afterAll(() => database.close());
afterEach(() => {
  vi.useRealTimers();
});

const errorOf = async (res: Response) =>
  ((await res.json()) as { error: { code: string; details?: { path: string }[] } }).error;

describe('GET /api/admin/queue-stats', () => {
  it('needs a token and the queue:stats permission', async () => {
    expect((await app.request('/api/admin/queue-stats')).status).toBe(401);
    const viewer = await adminWith('stats-viewer@example.com', ['viewer']);
    const res = await app.request('/api/admin/queue-stats', bearer(viewer.token));
    expect(res.status).toBe(403);
    expect((await res.json()).error.code).toBe('forbidden');
  });

  it('answers pending, processing, completed and failed plus delayed, the oldest wait and counts per job name', async () => {
    await services.queue.add('email', { to: 'a' });
    await services.queue.add('email', { to: 'b' });
    await services.queue.add('report', { id: 1 }, { delay: 60_000 });
    const res = await app.request('/api/admin/queue-stats', bearer(adminToken));
    expect(res.status).toBe(200);
    const stats = await res.json();
    expect(stats).toMatchObject({
      pending: 3,
      processing: 0,
      completed: 0,
      failed: 0,
      waiting: 2,
      delayed: 1,
      active: 0,
      byName: {
        email: { waiting: 2, delayed: 0, active: 0, completed: 0, failed: 0 },
        report: { waiting: 0, delayed: 1, active: 0, completed: 0, failed: 0 },
      },
    });
    expect(stats.oldestWaitingAgeMs).toBeGreaterThanOrEqual(0);
    expect(stats.oldestWaitingAgeMs).toBeLessThan(60_000);
    expect(res.headers.get('ratelimit-limit')).toBe(String(services.config.RATE_LIMIT_PER_MINUTE));
  });
});

describe('POST /api/admins', () => {
  it('creates an admin (201, Location, no password hash) who can then log in with those roles', async () => {
    const res = await app.request(
      '/api/admins',
      json(
        { email: 'New.Person@Example.com', name: 'New Person', password: PASSWORD, roles: ['reviewer'] },
        adminToken,
      ),
    );
    expect(res.status).toBe(201);
    const text = await res.text();
    expect(text).not.toMatch(/password/i);
    const created = JSON.parse(text);
    expect(created).toMatchObject({
      email: 'new.person@example.com',
      name: 'New Person',
      roles: ['reviewer'],
      disabled: false,
    });
    expect(res.headers.get('location')).toBe(`/api/admins/${created.id}`);
    expect(Number.isNaN(Date.parse(created.createdAt))).toBe(false);
    const stored = await services.admins.collection.findOne({ _id: created.id });
    expect(stored).toMatchObject({ email: 'new.person@example.com', roles: ['reviewer'], disabled: false });
    expect(stored?.passwordHash).toEqual(expect.any(String));
    expect(stored?.passwordHash).not.toContain(PASSWORD);

    const { status, body } = await login('new.person@example.com');
    expect(status).toBe(200);
    const me = await app.request('/api/auth/me', bearer(body.accessToken));
    expect(await me.json()).toMatchObject({ id: created.id, roles: ['reviewer'] });
  });

  it('answers 409 for an email that exists, whatever its case', async () => {
    const body = { email: 'dup@example.com', password: PASSWORD, roles: ['viewer'] };
    const first = await app.request('/api/admins', json(body, adminToken));
    expect(first.status).toBe(201);
    const { id } = (await first.json()) as { id: string };
    const again = await app.request(
      '/api/admins',
      json({ ...body, email: 'DUP@Example.com', roles: ['admin'] }, adminToken),
    );
    expect(again.status).toBe(409);
    expect((await errorOf(again)).code).toBe('conflict');
    // The first account is the only one, unchanged.
    const stored = await services.admins.collection.find({ email: 'dup@example.com' }).toArray();
    expect(stored).toMatchObject([{ _id: id, roles: ['viewer'] }]);
  });

  it('validates the body with field paths: short password, unknown role, repeated role, extra keys', async () => {
    const cases: [unknown, string][] = [
      [{ email: 'x1@example.com', password: 'short', roles: ['viewer'] }, 'password'],
      [{ email: 'x2@example.com', password: PASSWORD, roles: ['owner'] }, 'roles.0'],
      [{ email: 'x3@example.com', password: PASSWORD, roles: ['viewer', 'viewer'] }, 'roles'],
      [{ email: 'x4@example.com', password: PASSWORD, roles: [] }, 'roles'],
      [{ email: 'not-an-email', password: PASSWORD, roles: ['viewer'] }, 'email'],
      [{ email: 'x5@example.com', password: PASSWORD, roles: ['viewer'], $where: '1' }, ''],
    ];
    for (const [body, path] of cases) {
      const res = await app.request('/api/admins', json(body, adminToken));
      expect(res.status, JSON.stringify(body)).toBe(400);
      const error = (await res.json()).error;
      expect(error.code).toBe('validation');
      expect(error.details.map((d: { path: string }) => d.path)).toContain(path);
    }
    expect(await services.admins.collection.countDocuments({ email: /^x\d@/ })).toBe(0);
  });

  it('is refused to anyone without admins:manage', async () => {
    const reviewer = await adminWith('reviewer-create@example.com', ['reviewer']);
    const res = await app.request(
      '/api/admins',
      json({ email: 'sneaky@example.com', password: PASSWORD, roles: ['admin'] }, reviewer.token),
    );
    expect(res.status).toBe(403);
    expect((await errorOf(res)).code).toBe('forbidden');
    expect(await services.admins.collection.countDocuments({ email: 'sneaky@example.com' })).toBe(0);
  });
});

describe('GET /api/admins', () => {
  it('lists admins by email without password hashes, page by page', async () => {
    const res = await app.request('/api/admins', bearer(adminToken));
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).not.toMatch(/password/i);
    const all = JSON.parse(text) as { items: { email: string }[]; next: string | null };
    const emails = all.items.map((a) => a.email);
    expect(emails).toEqual([...emails].sort());
    expect(emails).toContain('root@example.com');
    expect(emails.length).toBe(await services.admins.collection.countDocuments());
    expect(all.next).toBeNull();

    const seen: string[] = [];
    let after: string | null = null;
    do {
      const query: string = after ? `&after=${encodeURIComponent(after)}` : '';
      const page = await app.request(`/api/admins?limit=2${query}`, bearer(adminToken));
      const body = (await page.json()) as typeof all;
      expect(body.items.length).toBeLessThanOrEqual(2);
      seen.push(...body.items.map((a) => a.email));
      after = body.next;
    } while (after);
    expect(seen).toEqual(emails);
  });

  it('rejects a bad limit and refuses non-admins', async () => {
    for (const limit of ['0', '501', 'ten']) {
      const res = await app.request(`/api/admins?limit=${limit}`, bearer(adminToken));
      expect(res.status, limit).toBe(400);
      const error = await errorOf(res);
      expect(error.code).toBe('validation');
      expect(error.details?.map((d) => d.path)).toContain('limit');
    }
    const viewer = await adminWith('list-viewer@example.com', ['viewer']);
    const refused = await app.request('/api/admins', bearer(viewer.token));
    expect(refused.status).toBe(403);
    expect((await errorOf(refused)).code).toBe('forbidden');
  });
});

describe('PATCH /api/admins/:id', () => {
  it('a role change ends every session of that admin on every instance; the next login has the new roles', async () => {
    // A second instance on the same database, verifying the same signing keys; this test's own, as the
    // clock moves below (a cache that synced on a moved clock thinks itself fresh once real time is back).
    const { app: other } = await createTestApp(database.db, { JWT_KEYS: jwtKeys });
    const target = await adminWith('promote@example.com', ['viewer']);
    expect((await other.request('/api/auth/me', bearer(target.token))).status).toBe(200);

    const res = await app.request(`/api/admins/${target.id}`, json({ roles: ['approver'] }, adminToken, 'PATCH'));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id: target.id, roles: ['approver'], disabled: false });

    expect((await services.admins.get(target.id))?.roles).toEqual(['approver']);

    // This instance knows at once; the other once its revocation cache is older than the staleness
    // bound. The clocks are frozen and moved past that bound, so a busy machine cannot stretch it.
    vi.useFakeTimers({ toFake: ['Date'] });
    const here = await app.request('/api/auth/me', bearer(target.token));
    expect(here.status).toBe(401);
    expect((await errorOf(here)).code).toBe('token_revoked');
    vi.setSystemTime(Date.now() + services.config.REVOCATION_STALENESS_MS + 1);
    const elsewhere = await other.request('/api/auth/me', bearer(target.token));
    expect(elsewhere.status).toBe(401);
    expect((await errorOf(elsewhere)).code).toBe('token_revoked');
    vi.useRealTimers();
    // The refresh token cannot mint a token with the old roles either.
    const refreshed = await app.request('/api/auth/refresh', json({ refreshToken: target.refreshToken }));
    expect(refreshed.status).toBe(401);

    const { body } = await login('promote@example.com');
    const me = await other.request('/api/auth/me', bearer(body.accessToken));
    expect(me.status).toBe(200);
    expect((await me.json()).roles).toEqual(['approver']);
  });

  it('disabling ends the sessions and refuses the next login with the usual answer', async () => {
    const target = await adminWith('disable-me@example.com', ['reviewer']);
    const res = await app.request(`/api/admins/${target.id}`, json({ disabled: true }, adminToken, 'PATCH'));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id: target.id, roles: ['reviewer'], disabled: true });
    expect((await services.admins.get(target.id))?.disabled).toBe(true);
    const ended = await app.request('/api/auth/me', bearer(target.token));
    expect(ended.status).toBe(401);
    expect((await errorOf(ended)).code).toBe('token_revoked');
    const denied = await login('disable-me@example.com');
    expect(denied.status).toBe(401);
    expect((denied.body as unknown as { error: { code: string } }).error.code).toBe('invalid_credentials');

    const enabled = await app.request(`/api/admins/${target.id}`, json({ disabled: false }, adminToken, 'PATCH'));
    expect(enabled.status).toBe(200);
    expect((await enabled.json()).disabled).toBe(false);
    expect((await services.admins.get(target.id))?.disabled).toBe(false);
    expect((await login('disable-me@example.com')).status).toBe(200);
  });

  it('an admin may not remove their own admin role nor disable themselves', async () => {
    for (const body of [{ roles: ['viewer'] }, { disabled: true }, { roles: ['approver'], disabled: true }]) {
      const res = await app.request(`/api/admins/${adminId}`, json(body, adminToken, 'PATCH'));
      expect(res.status).toBe(400);
      const error = (await res.json()).error;
      expect(error.code).toBe('validation');
      expect(error.details.length).toBeGreaterThan(0);
    }
    const self = await services.admins.get(adminId);
    expect(self).toMatchObject({ roles: ['admin'], disabled: false });
    expect((await app.request('/api/auth/me', bearer(adminToken))).status).toBe(200);
  });

  it('answers 404 for an unknown id and 400 for an empty or malformed change', async () => {
    const unknown = await app.request(
      `/api/admins/${crypto.randomUUID()}`,
      json({ disabled: true }, adminToken, 'PATCH'),
    );
    expect(unknown.status).toBe(404);
    expect((await unknown.json()).error.code).toBe('not_found');
    const target = await adminWith('patch-edges@example.com', ['viewer']);
    const before = await services.admins.get(target.id);
    for (const body of [{}, { roles: 'admin' }, { disabled: 'yes' }, { email: 'x@example.com' }, { roles: [] }]) {
      const res = await app.request(`/api/admins/${target.id}`, json(body, adminToken, 'PATCH'));
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect((await errorOf(res)).code, JSON.stringify(body)).toBe('validation');
    }
    const long = await app.request(`/api/admins/${'x'.repeat(200)}`, json({ disabled: true }, adminToken, 'PATCH'));
    expect(long.status).toBe(400);
    expect((await errorOf(long)).code).toBe('validation');
    // Nothing above changed the admin nor ended their session.
    expect(await services.admins.get(target.id)).toEqual(before);
    expect((await app.request('/api/auth/me', bearer(target.token))).status).toBe(200);
  });

  it('is refused to anyone without admins:manage', async () => {
    const approver = await adminWith('approver-patch@example.com', ['approver']);
    const res = await app.request(`/api/admins/${approver.id}`, json({ roles: ['admin'] }, approver.token, 'PATCH'));
    expect(res.status).toBe(403);
    expect((await errorOf(res)).code).toBe('forbidden');
    expect((await services.admins.get(approver.id))?.roles).toEqual(['approver']);
  });

  it('changing your own roles while keeping admin works and ends your own sessions too', async () => {
    const second = await adminWith('second-root@example.com', ['admin']);
    const res = await app.request(
      `/api/admins/${second.id}`,
      json({ roles: ['admin', 'disburser'] }, second.token, 'PATCH'),
    );
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id: second.id, roles: ['admin', 'disburser'] });
    expect((await services.admins.get(second.id))?.roles).toEqual(['admin', 'disburser']);
    const ended = await app.request('/api/auth/me', bearer(second.token));
    expect(ended.status).toBe(401);
    expect((await errorOf(ended)).code).toBe('token_revoked');
  });
});

describe('the trail of admin changes', () => {
  it('records who created an admin and who changed its roles or access, and nothing for a refusal', async () => {
    const trail = () => database.db.collection('admin_audit');
    const created = await app.request(
      '/api/admins',
      json({ email: 'trail@example.com', password: 'a long enough password', roles: ['viewer'] }, adminToken),
    );
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    const patched = await app.request(`/api/admins/${id}`, json({ roles: ['approver'] }, adminToken, 'PATCH'));
    expect(patched.status).toBe(200);
    const viewer = await adminWith('trail-viewer@example.com', ['viewer']);
    expect((await app.request(`/api/admins/${id}`, json({ disabled: true }, viewer.token, 'PATCH'))).status).toBe(403);

    const entries = await trail().find({ adminId: id }).sort({ at: 1 }).toArray();
    expect(entries).toMatchObject([
      { actor: adminId, action: 'admin.create', changes: { email: 'trail@example.com', roles: ['viewer'] } },
      { actor: adminId, action: 'admin.update', changes: { roles: ['approver'] } },
    ]);
    expect(entries[0]?.requestId).toEqual(expect.any(String));
  });
});
