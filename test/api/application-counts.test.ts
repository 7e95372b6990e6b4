// GET /api/applications/counts: every status with its count, from one aggregate, kept in this instance's
// memory for LIST_CACHE_MS and dropped by this instance's writes. Commands on the applications collection
// are counted with the driver's command monitoring; time is a frozen Date moved by hand.
import { type CommandStartedEvent, MongoClient } from 'mongodb';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { APPLICATIONS_COLLECTION } from '../../shared/loans/applications.ts';
import { createTestApp } from '../support/app.ts';
import { applicationSteps } from '../support/applications.ts';
import { adminsByRole, call, callerFor } from '../support/http.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const BOUND = 2500;

let database: TestDatabase;
let monitored: MongoClient;
let app: ReturnType<typeof createApp>;
let services: Services;
let tokens: Record<Role, string>;
let aggregates = 0;

function watch(event: CommandStartedEvent): void {
  if (event.commandName === 'aggregate' && event.command.aggregate === APPLICATIONS_COLLECTION) aggregates++;
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  monitored = new MongoClient(mongoUrl(), { monitorCommands: true });
  monitored.on('commandStarted', watch);
  await monitored.connect();
  ({ app, services } = await createTestApp(monitored.db(database.name), {
    LIST_CACHE_MS: String(BOUND),
    RATE_LIMIT_PER_MINUTE: '1000000',
  }));
  tokens = (await adminsByRole(app, services, ['viewer', 'admin', 'approver'])).tokens;
});
afterAll(async () => {
  await monitored.close();
  await database.close();
});
beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(Date.now() + BOUND);
  services.listCache.clear();
});
afterEach(() => {
  vi.useRealTimers();
});

const counts = (token = tokens.viewer) => call(app, token, 'GET', '/api/applications/counts');
const steps = applicationSteps(() => callerFor(app, tokens));

describe('GET /api/applications/counts', () => {
  it('names every status, 0 when none, on an empty collection', async () => {
    const reply = await counts();
    expect(reply.status).toBe(200);
    expect(reply.body).toEqual({
      counts: { pending: 0, under_review: 0, approved: 0, rejected: 0, disbursed: 0 },
      total: 0,
    });
    expect(reply.headers.get('cache-control')).toBe('private, no-cache');
    expect(reply.headers.get('cache-status')).toBe('loan-admin; fwd=miss; stored');
  });

  it('counts each status and the total; is not taken for an application id', async () => {
    const a = await steps.createOne(1);
    const b = await steps.createOne(2);
    await steps.createOne(3);
    await steps.walk(a._id, ['under_review']);
    await steps.walk(b._id, ['under_review', 'approved']);
    const reply = await counts();
    expect(reply.status).toBe(200);
    expect(reply.body).toEqual({
      counts: { pending: 1, under_review: 1, approved: 1, rejected: 0, disbursed: 0 },
      total: 3,
    });
  });

  it('50 concurrent requests cost one aggregate; more within LIST_CACHE_MS cost none; then it is read again', async () => {
    const before = aggregates;
    const replies = await Promise.all(Array.from({ length: 50 }, () => counts()));
    expect(aggregates - before).toBe(1);
    expect(new Set(replies.map((reply) => JSON.stringify(reply.body))).size).toBe(1);
    vi.setSystemTime(Date.now() + BOUND - 1);
    const hit = await counts();
    expect(hit.headers.get('cache-status')).toMatch(/^loan-admin; hit; ttl=0; detail="ttl-ms=\d+"$/);
    expect(hit.headers.get('age')).toBe('2');
    expect(aggregates - before).toBe(1);
    vi.setSystemTime(Date.now() + 1);
    await counts();
    expect(aggregates - before).toBe(2);
  });

  it("this instance's write shows at once (the entry is dropped); another instance's within the bound", async () => {
    const first = await counts();
    const created = await steps.createOne(9);
    const after = await counts();
    expect(after.headers.get('cache-status')).toBe('loan-admin; fwd=miss; stored');
    expect(after.body.counts.pending).toBe(first.body.counts.pending + 1);
    expect(after.body.total).toBe(first.body.total + 1);
    // A write this instance did not make (another instance, a worker): served from memory until the bound.
    await database.db.collection(APPLICATIONS_COLLECTION).updateOne(
      { _id: created._id as never },
      {
        $set: { status: 'rejected' },
      },
    );
    expect((await counts()).body).toEqual(after.body);
    vi.setSystemTime(Date.now() + BOUND);
    const later = await counts();
    expect(later.body.counts.rejected).toBe(after.body.counts.rejected + 1);
    expect(later.body.counts.pending).toBe(after.body.counts.pending - 1);
  });

  it('needs a session (every role holds applications:read), checked before the cache', async () => {
    await counts();
    const refused = await call(app, undefined, 'GET', '/api/applications/counts');
    expect(refused.status).toBe(401);
    expect(refused.body.error.code).toBe('unauthorized');
    expect((await counts(tokens.approver)).status).toBe(200);
  });
});
