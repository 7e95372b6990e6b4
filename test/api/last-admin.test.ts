// Nothing leaves the platform without an active admin (enabled, holding the 'admin' role), however many
// demotions and disables race each other, against the real database (which has no transactions here).
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
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
let serial = 0;

const json = (body: unknown, token?: string, method = 'POST'): RequestInit => ({
  method,
  body: JSON.stringify(body),
  headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
});

async function activeAdmins() {
  return services.admins.collection.countDocuments({ roles: 'admin', disabled: false });
}

async function admin(roles: Role[] = ['admin']) {
  const email = `admin-${++serial}@example.com`;
  const { _id } = await services.admins.create({ email, password: PASSWORD, roles });
  const res = await app.request('/api/auth/login', json({ email, password: PASSWORD }));
  expect(res.status).toBe(200);
  return { id: _id, token: ((await res.json()) as { accessToken: string }).accessToken };
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app, services } = await createTestApp(database.db));
});
afterAll(() => database.close());
// Each test starts with no active admin but the ones it creates (set aside directly in the database).
beforeEach(async () => {
  await services.admins.collection.updateMany({}, { $set: { disabled: true } });
});

describe('the last active admin', () => {
  it('cannot be demoted or disabled: 409 last_admin, nothing changed', async () => {
    const only = await admin();
    // Still holds a token with the admin role, but is no active admin any more.
    const former = await admin();
    await services.admins.collection.updateOne({ _id: former.id }, { $set: { disabled: true } });

    for (const change of [{ roles: ['viewer'] }, { disabled: true }, { roles: ['approver'], disabled: true }]) {
      const res = await app.request(`/api/admins/${only.id}`, json(change, former.token, 'PATCH'));
      expect(res.status, JSON.stringify(change)).toBe(409);
      expect((await res.json()).error.code).toBe('last_admin');
    }
    expect(await services.admins.get(only.id)).toMatchObject({ roles: ['admin'], disabled: false });
    // Changes that keep an active admin still go through: another role beside admin, and a promotion.
    const kept = await app.request(
      `/api/admins/${only.id}`,
      json({ roles: ['admin', 'viewer'] }, former.token, 'PATCH'),
    );
    expect(kept.status).toBe(200);
    const viewer = await admin(['viewer']);
    const promoted = await app.request(`/api/admins/${viewer.id}`, json({ roles: ['admin'] }, former.token, 'PATCH'));
    expect(promoted.status).toBe(200);
    expect(await activeAdmins()).toBe(2);
  });

  it('a change whose process died after claiming the guard is written by the next change, and its sessions ended', async () => {
    const actor = await admin();
    const target = await admin(['viewer']);
    const bystander = await admin(['viewer']);
    // What a process leaves when it dies between its claim and its write to the admin.
    const guards = database.db.collection<{ _id: string; version: number; pending: unknown }>('admin_guard');
    await services.admins.update(bystander.id, { roles: ['reviewer'] });
    const { version } = (await guards.findOne({ _id: 'changes' }))!;
    const { version: targetVersion } = (await services.admins.get(target.id))!;
    await guards.updateOne(
      { _id: 'changes' },
      {
        $set: {
          version: version + 1,
          pending: { adminId: target.id, fromVersion: targetVersion, set: { roles: ['approver'] }, endsSessions: true },
        },
      },
    );

    const res = await app.request(`/api/admins/${bystander.id}`, json({ roles: ['viewer'] }, actor.token, 'PATCH'));
    expect(res.status).toBe(200);
    expect((await services.admins.get(target.id))?.roles).toEqual(['approver']);
    expect((await app.request('/api/auth/me', { headers: { authorization: `Bearer ${target.token}` } })).status).toBe(
      401,
    );
    expect((await guards.findOne({ _id: 'changes' }))?.pending).toBeNull();
  });

  for (const n of [2, 5]) {
    it(`${n} concurrent demotions or disables of the ${n} active admins: exactly one is refused`, async () => {
      const admins = await Promise.all(Array.from({ length: n }, () => admin()));
      const outcomes = await Promise.allSettled(
        admins.map(({ id }, i) => services.admins.update(id, i % 2 ? { disabled: true } : { roles: ['viewer'] })),
      );
      const refused = outcomes.filter((outcome) => outcome.status === 'rejected');
      expect(refused).toHaveLength(1);
      expect((refused[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'last_admin' });
      expect(await activeAdmins()).toBe(1);
    });
  }

  it('two admins demoting each other at the same moment through HTTP, five times over: one admin always stays', async () => {
    for (let round = 0; round < 5; round++) {
      await services.admins.collection.updateMany({}, { $set: { disabled: true } });
      const [a, b] = [await admin(), await admin()];
      const answers = await Promise.all([
        app.request(`/api/admins/${b!.id}`, json({ roles: ['viewer'] }, a!.token, 'PATCH')),
        app.request(`/api/admins/${a!.id}`, json({ disabled: true }, b!.token, 'PATCH')),
      ]);
      const statuses = answers.map((res) => res.status).sort();
      // One wins; the other is refused as the last admin, or finds its own token already revoked.
      expect(statuses[0]).toBe(200);
      expect([401, 409]).toContain(statuses[1]);
      for (const res of answers) if (res.status === 409) expect((await res.json()).error.code).toBe('last_admin');
      expect(await activeAdmins()).toBe(1);
    }
  });

  it('six admins each demoting the next at the same moment through HTTP: at least one stays', async () => {
    const admins = await Promise.all(Array.from({ length: 6 }, () => admin()));
    const answers = await Promise.all(
      admins.map((actor, i) =>
        app.request(
          `/api/admins/${admins[(i + 1) % admins.length]!.id}`,
          json({ roles: ['reviewer'] }, actor.token, 'PATCH'),
        ),
      ),
    );
    for (const res of answers) expect([200, 401, 409]).toContain(res.status);
    expect(await activeAdmins()).toBeGreaterThanOrEqual(1);
  });
});
