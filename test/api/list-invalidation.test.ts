// Another instance's change drops this instance's cached pages as soon as its change feed hears it, long
// before LIST_CACHE_MS (a minute here) would: the feed, not the clock, makes the list fresh.
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { APPLICATIONS_COLLECTION } from '../../shared/loans/applications.ts';
import { createTestApp, openApiSuite } from '../support/app.ts';
import { sampleApplication } from '../support/applications.ts';
import { call } from '../support/http.ts';
import type { TestDatabase } from '../support/mongo.ts';

// A wide poll margin: on a busy machine a write stamped by this process can land seconds after its stamp,
// and what is tested here is that the feed drops pages, not how far back a poll reads (README: the margin).
const settings = {
  LIST_CACHE_MS: '60000',
  LIST_TOTAL_CACHE_MS: '60000',
  EVENTS_SOURCE: 'poll',
  EVENTS_POLL_MS: '50',
  EVENTS_POLL_MARGIN_MS: '15000',
};

let database: TestDatabase;
let services: Services;
let tokens: Record<Role, string>;
/** The instance whose cache is watched; `writer` is another instance on the same database. */
let reader: ReturnType<typeof createApp>;
let writer: ReturnType<typeof createApp>;

beforeAll(async () => {
  ({ database, app: writer, services, tokens } = await openApiSuite(import.meta.filename, settings));
  const other = await createTestApp(database.db, { ...settings, JWT_KEYS: services.config.JWT_KEYS });
  reader = other.app;
  await other.services.feed.start();
  return () => other.services.feed.close();
});
afterAll(() => database?.close());

const idsOn = async (query: string) => {
  const reply = await call(reader, tokens.viewer, 'GET', `/api/applications?${query}`);
  expect(reply.status).toBe(200);
  return { ids: (reply.body.items as { _id: string }[]).map((item) => item._id), total: reply.body.total as number };
};

it("another instance's create and status move reach this instance's cached pages through the feed", async () => {
  const created = await call(writer, tokens.reviewer, 'POST', '/api/applications', { body: sampleApplication() });
  expect(created.status).toBe(201);
  const id = created.body._id as string;
  await vi.waitFor(async () => expect((await idsOn('status=pending')).ids).toContain(id), { timeout: 10_000 });
  const underReview = await idsOn('status=under_review');
  expect(underReview.ids).not.toContain(id);

  const moved = await call(writer, tokens.reviewer, 'PUT', `/api/applications/${id}`, {
    body: { status: 'under_review', version: 1 },
  });
  expect(moved.status).toBe(200);
  // Both the page it left and the page it joined are dropped, and their totals with them.
  await vi.waitFor(async () => expect((await idsOn('status=under_review')).ids).toContain(id), { timeout: 10_000 });
  expect((await idsOn('status=pending')).ids).not.toContain(id);
  expect((await idsOn('status=under_review')).total).toBe(underReview.total + 1);
});

it("a worker's write behind the API (updatedAt stamped, no HTTP) drops the pages too", async () => {
  const older = (await call(writer, tokens.reviewer, 'POST', '/api/applications', { body: sampleApplication(1) })).body
    ._id as string;
  const created = await call(writer, tokens.reviewer, 'POST', '/api/applications', { body: sampleApplication(2) });
  const id = created.body._id as string;
  await vi.waitFor(async () => expect((await idsOn('status=pending&sort=-updatedAt')).ids[0]).toBe(id), {
    timeout: 10_000,
  });
  expect((await idsOn('status=pending&sort=-updatedAt')).ids[1]).toBe(older);
  await database.db
    .collection(APPLICATIONS_COLLECTION)
    .updateOne({ _id: older as never }, { $set: { updatedAt: new Date() }, $inc: { version: 1 } });
  await vi.waitFor(async () => expect((await idsOn('status=pending&sort=-updatedAt')).ids[0]).toBe(older), {
    timeout: 10_000,
  });
});
