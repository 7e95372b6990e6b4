// Hot list pages from this instance's memory (LIST_CACHE_MS), and conditional requests on both GET routes.
// Database commands are counted with the driver's command monitoring; time is a frozen Date moved by hand.
import { type CommandStartedEvent, MongoClient } from 'mongodb';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import { seedApplications } from '../../scripts/seed.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { APPLICATIONS_COLLECTION } from '../../shared/loans/applications.ts';
import { createTestApp } from '../support/app.ts';
import { sampleApplication } from '../support/applications.ts';
import { adminsByRole, call, type Reply, TEST_PASSWORD } from '../support/http.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const BOUND = 2500;
const overrides = { LIST_CACHE_MS: String(BOUND), RATE_LIMIT_PER_MINUTE: '1000000' };

let database: TestDatabase;
let monitored: MongoClient;
let app: ReturnType<typeof createApp>;
let services: Services;
let tokens: Record<Role, string>;
/** Commands on the applications collection by name (find: a page; aggregate/count: a total). */
const commands = { find: 0, aggregate: 0, count: 0 };
/** Called when a page query is sent, while it is in flight. */
let onFind: (() => void) | undefined;

function watch(event: CommandStartedEvent): void {
  const name = event.commandName as keyof typeof commands;
  if (!(name in commands) || event.command[name] !== APPLICATIONS_COLLECTION) return;
  commands[name]++;
  if (name === 'find') onFind?.();
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  monitored = new MongoClient(mongoUrl(), { monitorCommands: true });
  monitored.on('commandStarted', watch);
  await monitored.connect();
  ({ app, services } = await createTestApp(monitored.db(database.name), overrides));
  tokens = (await adminsByRole(app, services, ['viewer', 'reviewer', 'approver'])).tokens;
  await seedApplications(database.db, 40);
});
afterAll(async () => {
  await monitored.close();
  await database.close();
});
beforeEach(() => {
  // Each test starts past every entry an earlier one made, on a clock that moves only by hand.
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(Date.now() + BOUND);
  services.listCache.clear();
  onFind = undefined;
});
afterEach(() => {
  vi.useRealTimers();
});

const list = (query: string, headers: Record<string, string> = {}, token = tokens.viewer) =>
  call(app, token, 'GET', `/api/applications?${query}`, { headers });
const cacheStatus = (reply: Reply) => reply.headers.get('cache-status');
const finds = () => commands.find;

describe('list pages from memory', () => {
  it('50 concurrent identical lists cost one page query and one count; more within the bound cost none', async () => {
    const [findsBefore, countsBefore] = [finds(), commands.aggregate];
    const replies = await Promise.all(Array.from({ length: 50 }, () => list('limit=10&status=pending')));
    expect(finds() - findsBefore).toBe(1);
    expect(commands.aggregate - countsBefore).toBe(1);
    expect(replies.every((reply) => reply.status === 200)).toBe(true);
    expect(new Set(replies.map((reply) => reply.headers.get('etag'))).size).toBe(1);
    expect(new Set(replies.map((reply) => JSON.stringify(reply.body))).size).toBe(1);
    const statuses = replies.map(cacheStatus);
    expect(statuses.filter((s) => s === 'loan-admin; fwd=miss; stored')).toHaveLength(1);
    // The others joined the query in flight, or came after it landed.
    expect(
      statuses.filter((s) => s === 'loan-admin; fwd=miss; collapsed; stored' || s?.startsWith('loan-admin; hit;')),
    ).toHaveLength(49);
    const again = await Promise.all(Array.from({ length: 50 }, () => list('limit=10&status=pending')));
    expect(finds() - findsBefore).toBe(1);
    expect(again.every((reply) => cacheStatus(reply) === `loan-admin; hit; ttl=2; detail="ttl-ms=${BOUND}"`)).toBe(
      true,
    );
    expect(again[0]!.headers.get('cache-control')).toBe('private, no-cache');
    expect(again[0]!.headers.get('age')).toBe('0');
  });

  it('a change made behind the API is visible exactly at the bound, measured from when the query was sent', async () => {
    const t0 = Date.now();
    const first = await list('limit=5');
    expect(cacheStatus(first)).toBe('loan-admin; fwd=miss; stored');
    await seedApplications(database.db, 1); // a direct write: nobody tells this instance
    vi.setSystemTime(t0 + BOUND - 1);
    const stale = await list('limit=5');
    expect(stale.body).toEqual(first.body);
    expect(stale.headers.get('etag')).toBe(first.headers.get('etag'));
    expect(stale.headers.get('age')).toBe('2');
    expect(cacheStatus(stale)).toBe('loan-admin; hit; ttl=0; detail="ttl-ms=1"');
    vi.setSystemTime(t0 + BOUND);
    const fresh = await list('limit=5');
    expect(cacheStatus(fresh)).toBe('loan-admin; fwd=miss; stored');
    expect(fresh.body.total).toBe(first.body.total + 1);
    expect(fresh.headers.get('etag')).not.toBe(first.headers.get('etag'));
    expect(fresh.headers.get('age')).toBe('0');
  });

  it('changed() drops exactly the pages of all statuses, of the new status and of the one it left', async () => {
    const queries = ['limit=5', 'status=pending', 'status=under_review', 'status=approved', 'status=rejected'];
    for (const query of queries) expect(cacheStatus(await list(query))).toBe('loan-admin; fwd=miss; stored');
    const outcomes = async () => {
      const before = finds();
      const result: Record<string, boolean> = {};
      for (const query of queries) result[query] = cacheStatus(await list(query))!.startsWith('loan-admin; hit');
      return { hits: result, finds: finds() - before };
    };
    services.listCache.changed({ status: 'under_review', from: 'pending' });
    expect(await outcomes()).toEqual({
      hits: {
        'limit=5': false,
        'status=pending': false,
        'status=under_review': false,
        'status=approved': true,
        'status=rejected': true,
      },
      finds: 3,
    });
    services.listCache.changed({ status: 'approved' });
    expect((await outcomes()).finds).toBe(2);
    services.listCache.clear();
    expect((await outcomes()).finds).toBe(queries.length);
  });

  it('a change while a page query is in flight: its answer is served but not stored', async () => {
    onFind = () => {
      onFind = undefined;
      services.listCache.changed({ status: 'pending' });
    };
    const before = finds();
    const racing = await list('limit=3&status=pending');
    expect(racing.status).toBe(200);
    expect(cacheStatus(racing)).toBe('loan-admin; fwd=miss');
    expect(cacheStatus(await list('limit=3&status=pending'))).toBe('loan-admin; fwd=miss; stored');
    expect(cacheStatus(await list('limit=3&status=pending'))).toMatch(/^loan-admin; hit;/);
    expect(finds() - before).toBe(2);
  });

  it('a client that leaves does not abort the query it shares: the other waiter gets the page, stored', async () => {
    const url = 'http://app/api/applications?limit=7&status=approved';
    const headers = { authorization: `Bearer ${tokens.viewer}` };
    const controller = new AbortController();
    let second: Promise<Response> | undefined;
    onFind = () => {
      onFind = undefined;
      controller.abort();
      second = Promise.resolve(app.request(url, { headers }));
    };
    const before = finds();
    const first = await app.request(new Request(url, { headers, signal: controller.signal }));
    expect(first.status).toBe(499);
    expect((await first.json()).error.code).toBe('client_closed_request');
    await vi.waitFor(() => expect(second).toBeDefined());
    const other = await second!;
    expect(other.status).toBe(200);
    expect(other.headers.get('cache-status')).toMatch(/^loan-admin; (fwd=miss; collapsed; stored|hit;)/);
    expect((await other.json()).items.length).toBeGreaterThan(0);
    expect(cacheStatus(await list('limit=7&status=approved'))).toMatch(/^loan-admin; hit;/);
    expect(finds() - before).toBe(1);
  });
});

describe('list pages and reused totals', () => {
  it("a page that reuses a total is as old as the total: its Age and its end count from the total's read", async () => {
    const withTotals = await createTestApp(monitored.db(database.name), { ...overrides, LIST_TOTAL_CACHE_MS: '2000' });
    const viewer = (await adminsByRole(withTotals.app, withTotals.services, ['viewer'])).tokens.viewer;
    const get = (query: string) => call(withTotals.app, viewer, 'GET', `/api/applications?${query}`);
    const t0 = Date.now();
    const counts = commands.aggregate;
    expect((await get('limit=2&status=rejected')).headers.get('age')).toBe('0');
    vi.setSystemTime(t0 + 1500);
    const second = await get('limit=2&page=2&status=rejected');
    expect(commands.aggregate - counts).toBe(1); // the total read at t0 served page 2 too
    expect(cacheStatus(second)).toBe('loan-admin; fwd=miss; stored');
    expect(second.headers.get('age')).toBe('1');
    vi.setSystemTime(t0 + BOUND - 1);
    expect(cacheStatus(await get('limit=2&page=2&status=rejected'))).toBe('loan-admin; hit; ttl=0; detail="ttl-ms=1"');
    vi.setSystemTime(t0 + BOUND);
    const renewed = await get('limit=2&page=2&status=rejected');
    expect(cacheStatus(renewed)).toBe('loan-admin; fwd=miss; stored');
    expect(renewed.headers.get('age')).toBe('0');
    expect(commands.aggregate - counts).toBe(2);
    // A change drops the totals it alters too: the next page counts again.
    withTotals.services.listCache.changed({ status: 'approved', from: 'rejected' });
    expect(cacheStatus(await get('limit=2&status=rejected'))).toBe('loan-admin; fwd=miss; stored');
    expect(commands.aggregate - counts).toBe(3);
  });
});

describe('conditional requests', () => {
  it('lists: 304 for a current ETag (weak, in a list, or *), 200 with a new ETag after a write', async () => {
    const first = await list('limit=4');
    const etag = first.headers.get('etag')!;
    expect(etag).toMatch(/^"[A-Za-z0-9_-]{22}"$/);
    for (const sent of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
      const res = await app.request('/api/applications?limit=4', {
        headers: { authorization: `Bearer ${tokens.viewer}`, 'if-none-match': sent },
      });
      expect(res.status, sent).toBe(304);
      expect(await res.text()).toBe('');
      expect(res.headers.get('etag')).toBe(etag);
      expect(res.headers.get('cache-status')).toMatch(/^loan-admin; hit;/);
      expect(res.headers.get('age')).toBe('0');
      expect(res.headers.get('cache-control')).toBe('private, no-cache');
    }
    expect((await list('limit=4', { 'if-none-match': '"other"' })).status).toBe(200);
    const malformed = await list('limit=4', { 'if-none-match': 'not-a-tag' });
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.code).toBe('validation');
    // A write through this instance drops the pages it changes at once.
    expect((await call(app, tokens.reviewer, 'POST', '/api/applications', { body: sampleApplication(1) })).status).toBe(
      201,
    );
    const after = await list('limit=4', { 'if-none-match': etag });
    expect(after.status).toBe(200);
    expect(after.body.total).toBe(first.body.total + 1);
    expect(after.headers.get('etag')).not.toBe(etag);
  });

  it('a PATCH through this instance drops the list pages it changes at once (field and status)', async () => {
    const made = await call(app, tokens.reviewer, 'POST', '/api/applications', { body: sampleApplication(3) });
    const id: string = made.body._id;
    const newest = () => list('limit=5&sort=-updatedAt');
    const pending = () => list('limit=100&status=pending&sort=-updatedAt');
    expect(cacheStatus(await newest())).toMatch(/fwd=miss/);
    expect(cacheStatus(await newest())).toMatch(/^loan-admin; hit;/);
    const patched = await call(app, tokens.reviewer, 'PATCH', `/api/applications/${id}`, {
      body: JSON.stringify({ applicantName: 'Patched Through The API' }),
      headers: { 'content-type': 'application/merge-patch+json', 'if-match': '"1"' },
    });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    const afterField = await newest();
    expect(cacheStatus(afterField)).toMatch(/fwd=miss/);
    expect(afterField.body.items[0].applicantName).toBe('Patched Through The API');
    // A status move drops the pages of the status it left.
    expect((await pending()).body.items.map((item: { _id: string }) => item._id)).toContain(id);
    const moved = await call(app, tokens.reviewer, 'PATCH', `/api/applications/${id}`, {
      body: JSON.stringify({ status: 'under_review' }),
      headers: { 'content-type': 'application/merge-patch+json', 'if-match': '"2"' },
    });
    expect(moved.status, JSON.stringify(moved.body)).toBe(200);
    const afterMove = await pending();
    expect(cacheStatus(afterMove)).toMatch(/fwd=miss/);
    expect(afterMove.body.items.map((item: { _id: string }) => item._id)).not.toContain(id);
  });

  it('one application: 304 for its current version, 200 with the new ETag after a write', async () => {
    const created = await call(app, tokens.reviewer, 'POST', '/api/applications', { body: sampleApplication(2) });
    const path = `/api/applications/${created.body._id}`;
    const get = (ifNoneMatch?: string) =>
      call(app, tokens.viewer, 'GET', path, { headers: ifNoneMatch ? { 'if-none-match': ifNoneMatch } : {} });
    const plain = await get();
    expect(plain.headers.get('etag')).toBe('"1"');
    expect(plain.headers.get('cache-control')).toBe('private, no-cache');
    for (const sent of ['"1"', 'W/"1"', '"7", "1"', '*']) {
      const res = await get(sent);
      expect(res.status, sent).toBe(304);
      expect(res.body).toBeNull();
      expect(res.headers.get('etag')).toBe('"1"');
    }
    const moved = await call(app, tokens.reviewer, 'PUT', path, { body: { status: 'under_review', version: 1 } });
    expect(moved.status).toBe(200);
    const after = await get('"1"');
    expect(after.status).toBe(200);
    expect(after.headers.get('etag')).toBe('"2"');
    expect(after.body.status).toBe('under_review');
    expect((await get('"2"')).status).toBe(304);
  });

  it("one application is exact right after another instance's write, while this instance's list may lag", async () => {
    const other = await createTestApp(database.db, overrides);
    const otherReviewer = (await adminsByRole(other.app, other.services, ['reviewer'])).tokens.reviewer;
    const created = await call(app, tokens.reviewer, 'POST', '/api/applications', { body: sampleApplication(3) });
    const id = created.body._id as string;
    const page = await list('limit=200&status=pending');
    expect(page.body.items.map((item: { _id: string }) => item._id)).toContain(id);
    const moved = await call(other.app, otherReviewer, 'PUT', `/api/applications/${id}`, {
      body: { status: 'under_review', version: 1 },
    });
    expect(moved.status).toBe(200);
    const single = await call(app, tokens.viewer, 'GET', `/api/applications/${id}`, {
      headers: { 'if-none-match': '"1"' },
    });
    expect(single.status).toBe(200);
    expect(single.body).toMatchObject({ status: 'under_review', version: 2 });
    // The list here has not heard of it yet: it serves its page until the bound (the change feed's job).
    const lagging = await list('limit=200&status=pending');
    expect(cacheStatus(lagging)).toMatch(/^loan-admin; hit;/);
    expect(lagging.body.items.map((item: { _id: string }) => item._id)).toContain(id);
  });

  it('100 writers on one version with the cache on: exactly 1 success and 99 conflicts, then the list shows it', async () => {
    const created = await call(app, tokens.reviewer, 'POST', '/api/applications', { body: sampleApplication(4) });
    const id = created.body._id as string;
    expect((await list('limit=200&status=under_review')).status).toBe(200); // warm
    const replies = await Promise.all(
      Array.from({ length: 100 }, () =>
        call(app, tokens.reviewer, 'PUT', `/api/applications/${id}`, { body: { status: 'under_review', version: 1 } }),
      ),
    );
    const statuses = replies.map((reply) => reply.status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(1);
    expect(statuses.filter((status) => status === 409)).toHaveLength(99);
    const reviewed = await list('limit=200&status=under_review');
    expect(cacheStatus(reviewed)).toBe('loan-admin; fwd=miss; stored');
    expect(reviewed.body.items.map((item: { _id: string }) => item._id)).toContain(id);
  });
});

describe('permissions on warm entries', () => {
  it('an admin without applications:read gets 403 and a revoked token 401, whatever the instance holds', async () => {
    const warm = await list('limit=5');
    expect(cacheStatus(await list('limit=5'))).toMatch(/^loan-admin; hit;/);
    const email = `roleless-${crypto.randomUUID().slice(0, 8)}@example.com`;
    await services.admins.create({ email, password: TEST_PASSWORD, roles: [] });
    const login = await call(app, undefined, 'POST', '/api/auth/login', { body: { email, password: TEST_PASSWORD } });
    const roleless = await list('limit=5', {}, login.body.accessToken);
    expect(roleless.status).toBe(403);
    expect(roleless.body.items).toBeUndefined();
    const leaving = (await adminsByRole(app, services, ['viewer'])).tokens.viewer;
    expect((await list('limit=5', {}, leaving)).status).toBe(200);
    expect((await call(app, leaving, 'POST', '/api/auth/logout')).status).toBe(204);
    vi.setSystemTime(Date.now() + services.config.REVOCATION_STALENESS_MS + 1);
    const revoked = await list('limit=5', { 'if-none-match': warm.headers.get('etag')! }, leaving);
    expect(revoked.status).toBe(401);
    expect(revoked.body.error.code).toBe('token_revoked');
    // The entry is still warm for an admin who may read it.
    expect(cacheStatus(await list('limit=5'))).toMatch(/^loan-admin; hit;/);
  });
});
