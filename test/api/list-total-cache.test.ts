// A list's total is reused by an instance for LIST_TOTAL_CACHE_MS, so a thousand admins paging
// cost one count per status per period, not one per request.
import { afterAll, afterEach, beforeAll, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import { seedApplications } from '../../scripts/seed.ts';
import { createTestApp } from '../support/app.ts';
import { adminsByRole, call } from '../support/http.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
let token: string;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app, services } = await createTestApp(database.db, { LIST_TOTAL_CACHE_MS: '400' }));
  token = (await adminsByRole(app, services, ['viewer'])).tokens.viewer;
  await seedApplications(database.db, 30);
});
afterAll(() => database.close());
afterEach(() => {
  vi.useRealTimers();
});

it('reuses the total within the period and counts again after it', async () => {
  const total = async () => (await call(app, token, 'GET', '/api/applications?limit=1')).body.total as number;
  // The period is read on a frozen clock, moved by hand: a busy machine can neither end it early nor late.
  vi.useFakeTimers({ toFake: ['Date'] });
  // Past any period another test's list started: this test's first list counts.
  vi.setSystemTime(Date.now() + services.config.LIST_TOTAL_CACHE_MS);
  expect(await total()).toBe(30);
  await seedApplications(database.db, 5);
  vi.setSystemTime(Date.now() + services.config.LIST_TOTAL_CACHE_MS - 1);
  expect(await total()).toBe(30);
  vi.setSystemTime(Date.now() + 1);
  expect(await total()).toBe(35);
});

it('abandons the database read of a client that has gone (499, not a 500)', async () => {
  const controller = new AbortController();
  controller.abort();
  const res = await app.request(
    new Request('http://app/api/applications?limit=5', {
      headers: { authorization: `Bearer ${token}` },
      signal: controller.signal,
    }),
  );
  expect(res.status).toBe(499);
  expect((await res.json()).error.code).toBe('client_closed_request');
});
