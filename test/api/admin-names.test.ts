// GET /api/admins/names: any signed-in admin may turn admin ids into names (screens name people); ids
// that are no admin (a worker, a deleted account, garbage) are left out; the list is bounded.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openApiSuite } from '../support/app.ts';

let suite: Awaited<ReturnType<typeof openApiSuite>>;
beforeAll(async () => {
  suite = await openApiSuite(import.meta.filename);
});
afterAll(async () => {
  await suite.database.close();
});

it('names the admins among the ids, for every role, and leaves out the rest', async () => {
  const { adminIds, call } = suite;
  const ids = [adminIds.approver, 'approval-worker', adminIds.reviewer, adminIds.approver, 'not-an-admin'];
  for (const role of ['viewer', 'reviewer', 'admin'] as const) {
    const res = await call('GET', `/api/admins/names?ids=${encodeURIComponent(ids.join(','))}`, { as: role });
    expect(res.status, role).toBe(200);
    expect(res.body.items.sort((a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id))).toEqual(
      [adminIds.approver, adminIds.reviewer]
        .sort()
        .map((id) => ({ id, name: expect.stringMatching(/@example\.com$/) })),
    );
    // Names only: no email field, no roles, no password hash.
    for (const item of res.body.items) expect(Object.keys(item).sort()).toEqual(['id', 'name']);
  }
});

it('refuses no session (401), no ids or more than 100 (400)', async () => {
  const { app, call } = suite;
  expect((await app.request('/api/admins/names?ids=x')).status).toBe(401);
  expect((await call('GET', '/api/admins/names')).status).toBe(400);
  expect((await call('GET', '/api/admins/names?ids=')).status).toBe(400);
  const many = Array.from({ length: 101 }, (_, i) => `id-${i}`).join(',');
  const tooMany = await call('GET', `/api/admins/names?ids=${many}`);
  expect(tooMany.status).toBe(400);
  expect(tooMany.body.error.code).toBe('validation');
});
