// Presence through HTTP: PUT/DELETE /api/applications/{id}/presence mark and unmark the caller as editing,
// with an expiry on the server's clock; GET /api/presence lists the unexpired marks from a 1 s per-instance
// cache. Time is a frozen Date moved by hand; queries on `presence` are counted with command monitoring.
import { type CommandStartedEvent, MongoClient } from 'mongodb';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { PRESENCE_COLLECTION } from '../../shared/loans/presence.ts';
import { createTestApp } from '../support/app.ts';
import { sampleApplication } from '../support/applications.ts';
import { adminsByRole, call } from '../support/http.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const TTL = 15_000;
const CACHE = 1_000;

let database: TestDatabase;
let monitored: MongoClient;
let app: ReturnType<typeof createApp>;
let services: Services;
let tokens: Record<Role, string>;
let ids: Record<Role, string>;
let appId: string;
let otherId: string;
let finds = 0;

function watch(event: CommandStartedEvent): void {
  if (event.commandName === 'find' && event.command.find === PRESENCE_COLLECTION) finds++;
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  monitored = new MongoClient(mongoUrl(), { monitorCommands: true });
  monitored.on('commandStarted', watch);
  await monitored.connect();
  ({ app, services } = await createTestApp(monitored.db(database.name), { RATE_LIMIT_PER_MINUTE: '1000000' }));
  ({ tokens, ids } = await adminsByRole(app, services, ['viewer', 'reviewer', 'approver', 'disburser', 'admin']));
  appId = (await call(app, tokens.admin, 'POST', '/api/applications', { body: sampleApplication(1) })).body._id;
  otherId = (await call(app, tokens.admin, 'POST', '/api/applications', { body: sampleApplication(2) })).body._id;
});
afterAll(async () => {
  await monitored.close();
  await database.close();
});
/** The frozen clock's time when the previous test ended: tests move it ahead of the real clock. */
let lastTime = 0;
beforeEach(async () => {
  const now = Math.max(Date.now(), lastTime);
  vi.useFakeTimers({ toFake: ['Date'] });
  // Past every cache entry and every mark an earlier test made.
  vi.setSystemTime(now + TTL + CACHE);
});
afterEach(async () => {
  lastTime = Date.now();
  vi.useRealTimers();
  await database.db.collection(PRESENCE_COLLECTION).deleteMany({});
});

const mark = (as: Role, id = appId, body: unknown = { editing: true }) =>
  call(app, tokens[as], 'PUT', `/api/applications/${id}/presence`, { body });
const unmark = (as: Role, id = appId) => call(app, tokens[as], 'DELETE', `/api/applications/${id}/presence`);
const editing = (query = '', as: Role = 'viewer') => call(app, tokens[as], 'GET', `/api/presence${query}`);
const later = (ms: number) => vi.setSystemTime(Date.now() + ms);

describe('PUT /api/applications/{id}/presence', () => {
  it('marks the caller as editing until PRESENCE_TTL_MS from now, with their name and email', async () => {
    const reply = await mark('reviewer');
    expect(reply.status).toBe(200);
    const admin = await services.admins.get(ids.reviewer);
    expect(reply.body).toEqual({
      applicationId: appId,
      adminId: ids.reviewer,
      adminName: admin!.name,
      adminEmail: admin!.email,
      since: expect.any(String),
      expiresAt: expect.any(String),
    });
    const now = services.clock.now();
    expect(Date.parse(reply.body.expiresAt)).toBeGreaterThan(now + TTL - 1_000);
    expect(Date.parse(reply.body.expiresAt)).toBeLessThanOrEqual(now + TTL);
    const stored = await database.db
      .collection(PRESENCE_COLLECTION)
      .findOne({ _id: `${appId}:${ids.reviewer}` as never });
    expect(stored?.expiresAt).toBeInstanceOf(Date);
  });

  it('a renewal keeps since and moves expiresAt; a lapsed mark starts a new stretch', async () => {
    const first = await mark('reviewer');
    later(5_000);
    const renewed = await mark('reviewer');
    expect(renewed.body.since).toBe(first.body.since);
    expect(Date.parse(renewed.body.expiresAt) - Date.parse(first.body.expiresAt)).toBe(5_000);
    later(TTL + 1);
    const again = await mark('reviewer');
    expect(Date.parse(again.body.since)).toBeGreaterThan(Date.parse(first.body.since));
    expect(await database.db.collection(PRESENCE_COLLECTION).countDocuments()).toBe(1);
  });

  it('needs applications:edit or a status permission: reviewer, approver, disburser, admin; not a viewer', async () => {
    for (const as of ['reviewer', 'approver', 'disburser', 'admin'] as const) {
      expect((await mark(as)).status, as).toBe(200);
      expect((await unmark(as)).status, as).toBe(204);
    }
    for (const refused of [await mark('viewer'), await unmark('viewer')]) {
      expect(refused.status).toBe(403);
      expect(refused.body.error.code).toBe('forbidden');
    }
    const anonymous = await call(app, undefined, 'PUT', `/api/applications/${appId}/presence`, {
      body: { editing: true },
    });
    expect(anonymous.status).toBe(401);
    expect(await database.db.collection(PRESENCE_COLLECTION).countDocuments()).toBe(0);
  });

  it('404 for an application that does not exist; 400 for a bad id or body; 415 for a body not JSON; nothing written', async () => {
    const missing = await mark('reviewer', 'APP-00000000-0000-0000-0000-000000000000');
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('not_found');
    for (const [id, body] of [
      ['not-an-id', { editing: true }],
      [appId, { editing: false }],
      [appId, {}],
      [appId, { editing: true, adminId: ids.admin }],
      [appId, { editing: 'true' }],
    ] as const) {
      const reply = await mark('reviewer', id, body);
      expect(reply.status, JSON.stringify(body)).toBe(400);
      expect(reply.body.error.code).toBe('validation');
    }
    const text = await call(app, tokens.reviewer, 'PUT', `/api/applications/${appId}/presence`, {
      body: 'editing',
      headers: { 'content-type': 'text/plain' },
    });
    expect(text.status).toBe(415);
    expect(await database.db.collection(PRESENCE_COLLECTION).countDocuments()).toBe(0);
  });
});

describe('DELETE /api/applications/{id}/presence', () => {
  it("ends the caller's own mark only; 204 whether or not there was one", async () => {
    await mark('reviewer');
    await mark('approver');
    expect((await unmark('reviewer')).status).toBe(204);
    expect((await unmark('reviewer')).status).toBe(204);
    const left = await database.db.collection(PRESENCE_COLLECTION).find().toArray();
    expect(left.map((doc) => doc.adminId)).toEqual([ids.approver]);
  });
});

describe('GET /api/presence', () => {
  it('lists the unexpired marks by application, and leaves out those that lapsed', async () => {
    await mark('reviewer');
    later(10);
    await mark('approver');
    await mark('disburser', otherId);
    const reply = await editing();
    expect(reply.status).toBe(200);
    const expected = [
      { applicationId: appId, adminId: ids.reviewer },
      { applicationId: appId, adminId: ids.approver },
      { applicationId: otherId, adminId: ids.disburser },
    ].sort((a, b) => (a.applicationId < b.applicationId ? -1 : a.applicationId > b.applicationId ? 1 : 0));
    expect(reply.body.editing).toMatchObject(expected);
    const one = await editing(`?applicationId=${otherId}`);
    expect(one.body.editing).toMatchObject([{ applicationId: otherId, adminId: ids.disburser }]);

    // The reviewer renews, the others do not: after the TTL only the reviewer is left (filtered, not deleted).
    later(TTL - 1_000);
    await mark('reviewer');
    later(1_001);
    const after = await editing();
    expect(after.body.editing).toMatchObject([{ applicationId: appId, adminId: ids.reviewer }]);
    expect(await database.db.collection(PRESENCE_COLLECTION).countDocuments()).toBeGreaterThanOrEqual(1);
  });

  it('1,000 polls within a second cost one query on this instance; a change shows within the second', async () => {
    await mark('reviewer');
    const before = finds;
    const replies = await Promise.all(Array.from({ length: 1_000 }, () => editing()));
    expect(replies.every((reply) => reply.status === 200 && reply.body.editing.length === 1)).toBe(true);
    expect(finds - before).toBe(1);
    await unmark('reviewer');
    later(CACHE - 1);
    expect((await editing()).body.editing).toHaveLength(1);
    expect(finds - before).toBe(1);
    later(1);
    expect((await editing()).body.editing).toEqual([]);
    expect(finds - before).toBe(2);
  });

  it('a cached mark that lapses is left out without a query', async () => {
    await mark('reviewer');
    await editing();
    const before = finds;
    // The cache serves for 1 s; move just past the mark's expiry within a fresh cache period.
    later(TTL - 500);
    expect((await editing()).body.editing).toHaveLength(1);
    const read = finds;
    later(600);
    expect((await editing()).body.editing).toEqual([]);
    expect(finds - read).toBe(0);
    expect(finds - before).toBe(1);
  });

  it('needs a session; every role may read; 400 for an unknown parameter or a bad applicationId', async () => {
    expect((await call(app, undefined, 'GET', '/api/presence')).status).toBe(401);
    for (const as of ['viewer', 'reviewer', 'approver', 'disburser', 'admin'] as const) {
      expect((await editing('', as)).status, as).toBe(200);
    }
    for (const query of ['?applicationId=nope', '?x=1']) {
      const reply = await editing(query);
      expect(reply.status, query).toBe(400);
    }
  });
});
