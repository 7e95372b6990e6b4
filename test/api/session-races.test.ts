// Sessions follow the admin, not the moment of login: a login or a refresh that races a role change or
// a disable never ends up with a session, or a token, carrying what the admin was before the change.
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { ApiConfig } from '../../shared/core/config.ts';
import type { PublicAdmin } from '../../shared/identity/admins.ts';
import { parseJwtKeys, type Role, Sessions } from '../../shared/identity/sessions.ts';
import { createTestApp } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

type App = ReturnType<typeof createApp>;
const PASSWORD = 'a long enough password';

let database: TestDatabase;
let app: App;
let other: App;
let services: Services;
let config: ApiConfig;
let rootToken: string;

const json = (body: unknown, token?: string, method = 'POST'): RequestInit => ({
  method,
  body: JSON.stringify(body),
  headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
});
const bearer = (token: string): RequestInit => ({ headers: { authorization: `Bearer ${token}` } });

async function login(email: string, on = app) {
  const res = await on.request('/api/auth/login', json({ email, password: PASSWORD }));
  return { status: res.status, body: await res.json() };
}

/**
 * Holds the next login of `email` right after its read of the admin (password checked, roles read) and
 * before the session is written. `read` resolves once the read is done; `release()` lets the login go on.
 */
function holdLoginAfterRead(email: string) {
  const admins = services.admins;
  const real = admins.authenticate;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let readDone!: () => void;
  const read = new Promise<void>((resolve) => {
    readDone = resolve;
  });
  admins.authenticate = async (who: string, password: string): Promise<PublicAdmin | null> => {
    const admin = await real.call(admins, who, password);
    if (who !== email) return admin;
    admins.authenticate = real;
    readDone();
    await gate;
    return admin;
  };
  return { read, release };
}

async function liveSessions(adminId: string) {
  return database.db.collection('sessions').find({ adminId, revokedAt: null }).toArray();
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  const first = await createTestApp(database.db);
  ({ app, services, config } = first);
  ({ app: other } = await createTestApp(database.db, { JWT_KEYS: first.config.JWT_KEYS }));
  await services.admins.create({ email: 'root@example.com', password: PASSWORD, roles: ['admin'] });
  rootToken = (await login('root@example.com')).body.accessToken;
});
afterAll(() => database.close());

async function adminWith(email: string, roles: Role[]) {
  return (await services.admins.create({ email, password: PASSWORD, roles }))._id;
}

describe('a login racing a change to its admin', () => {
  it('read before a role change, session written after its logout-all: the login ends up with the new roles only', async () => {
    const id = await adminWith('race-roles@example.com', ['viewer']);
    const held = holdLoginAfterRead('race-roles@example.com');
    const pending = login('race-roles@example.com');
    await held.read;

    const patched = await app.request(`/api/admins/${id}`, json({ roles: ['approver'] }, rootToken, 'PATCH'));
    expect(patched.status).toBe(200);
    held.release();
    const { status, body } = await pending;

    // The login read 'viewer'; what it hands out must still be the admin as they are now.
    expect(status).toBe(200);
    for (const on of [app, other]) {
      const me = await on.request('/api/auth/me', bearer(body.accessToken));
      expect(me.status).toBe(200);
      expect((await me.json()).roles).toEqual(['approver']);
    }
    const refreshed = await app.request('/api/auth/refresh', json({ refreshToken: body.refreshToken }));
    expect(refreshed.status).toBe(200);
    const me = await other.request('/api/auth/me', bearer((await refreshed.json()).accessToken));
    expect((await me.json()).roles).toEqual(['approver']);
    const live = await liveSessions(id);
    expect(live.length).toBeGreaterThan(0);
    for (const session of live) expect(session.roles).toEqual(['approver']);
  });

  it('read before a disable, session written after its logout-all: the login is refused and no session is left', async () => {
    const id = await adminWith('race-disable@example.com', ['reviewer']);
    const held = holdLoginAfterRead('race-disable@example.com');
    const pending = login('race-disable@example.com');
    await held.read;

    const patched = await app.request(`/api/admins/${id}`, json({ disabled: true }, rootToken, 'PATCH'));
    expect(patched.status).toBe(200);
    held.release();
    const { status, body } = await pending;

    // The same answer as any login of a disabled admin.
    expect(status).toBe(401);
    expect(body.error.code).toBe('invalid_credentials');
    expect(await liveSessions(id)).toEqual([]);
  });
});

describe('a login whose re-read of the admin precedes the change', () => {
  it("its session was written before the change's logout-all, which revokes it: its token is refused everywhere", async () => {
    const id = await adminWith('race-late@example.com', ['viewer']);
    const admin = (await services.admins.get(id))!;
    let reread!: () => void;
    const reread$ = new Promise<void>((resolve) => {
      reread = resolve;
    });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    // The login path's Sessions, held between its re-read of the admin and the token it then signs.
    const sessions = new Sessions(database.db, {
      keys: parseJwtKeys(config.JWT_KEYS),
      signingKid: 'test',
      accessTtlS: config.ACCESS_TOKEN_TTL_S,
      refreshTtlS: config.REFRESH_TOKEN_TTL_S,
      clock: services.clock,
      revocations: services.revocations,
      admins: async (who) => {
        const state = await services.admins.sessionState(who);
        reread();
        await gate;
        return state;
      },
    });
    const pending = sessions.issue({ id, roles: admin.roles, epoch: admin.sessionEpoch ?? 0 });
    await reread$;
    const patched = await app.request(`/api/admins/${id}`, json({ roles: ['approver'] }, rootToken, 'PATCH'));
    expect(patched.status).toBe(200);
    release();
    const pair = await pending;

    // Signed with the roles read before the change, and refused: its session is among those revoked.
    expect(decodeJwt(pair.accessToken).roles).toEqual(['viewer']);
    for (const on of [app, other]) {
      await vi.waitFor(
        async () => expect((await on.request('/api/auth/me', bearer(pair.accessToken))).status).toBe(401),
        { timeout: 10_000, interval: 50 },
      );
    }
    const refreshed = await app.request('/api/auth/refresh', json({ refreshToken: pair.refreshToken }));
    expect(refreshed.status).toBe(401);
    expect(await liveSessions(id)).toEqual([]);
  });
});

describe('a refresh re-reads the admin', () => {
  it('after a role change whose logout-all never ran (the process died first), the refresh is refused and the family ended', async () => {
    const id = await adminWith('refresh-stale@example.com', ['disburser']);
    const { body } = await login('refresh-stale@example.com');
    // The change as PATCH writes it, without the logout-all that follows it in the route.
    await services.admins.update(id, { roles: ['viewer'] });

    const refreshed = await app.request('/api/auth/refresh', json({ refreshToken: body.refreshToken }));
    expect(refreshed.status).toBe(401);
    expect((await refreshed.json()).error.code).toBe('session_revoked');
    expect(await liveSessions(id)).toEqual([]);
    // A new login gets the roles the admin has now.
    const again = await login('refresh-stale@example.com');
    const me = await app.request('/api/auth/me', bearer(again.body.accessToken));
    expect((await me.json()).roles).toEqual(['viewer']);
  });

  it('after a disable whose logout-all never ran, the refresh is refused', async () => {
    const id = await adminWith('refresh-disabled@example.com', ['viewer']);
    const { body } = await login('refresh-disabled@example.com');
    await services.admins.update(id, { disabled: true });
    const refreshed = await app.request('/api/auth/refresh', json({ refreshToken: body.refreshToken }));
    expect(refreshed.status).toBe(401);
    expect(await liveSessions(id)).toEqual([]);
  });

  it('an unchanged admin refreshes as before, keeping their roles', async () => {
    const id = await adminWith('refresh-same@example.com', ['approver']);
    const { body } = await login('refresh-same@example.com');
    await services.admins.update(id, { disabled: false });
    const refreshed = await app.request('/api/auth/refresh', json({ refreshToken: body.refreshToken }));
    expect(refreshed.status).toBe(200);
    const me = await app.request('/api/auth/me', bearer((await refreshed.json()).accessToken));
    expect((await me.json()).roles).toEqual(['approver']);
  });
});
