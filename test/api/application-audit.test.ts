// GET /api/applications/{id}/audit: the entries of one application, oldest first, paged by version; 404 for
// an application that does not exist; validation of the id and the page.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_COLLECTION, auditId } from '../../shared/loans/audit.ts';
import { openApiSuite } from '../support/app.ts';
import { applicationSteps } from '../support/applications.ts';

let suite: Awaited<ReturnType<typeof openApiSuite>>;

beforeAll(async () => {
  suite = await openApiSuite(import.meta.filename, { RATE_LIMIT_PER_MINUTE: '1000000' });
});
afterAll(() => suite.database.close());

const steps = applicationSteps(() => suite.call);

describe('GET /api/applications/{id}/audit', () => {
  it('lists who did what, from which status to which, oldest first', async () => {
    const { _id: id } = await steps.createOne(1);
    const edited = await suite.call('PUT', `/api/applications/${id}`, { body: { loanAmount: 25_000, version: 1 } });
    expect(edited.status).toBe(200);
    const moved = await suite.call('PUT', `/api/applications/${id}`, { body: { status: 'under_review', version: 2 } });
    expect(moved.status).toBe(200);
    const approved = await suite.call('PUT', `/api/applications/${id}`, {
      as: 'approver',
      body: { status: 'approved', version: 3 },
    });
    expect(approved.status).toBe(200);

    const reply = await suite.call('GET', `/api/applications/${id}/audit`, { as: 'viewer' });
    expect(reply.status).toBe(200);
    expect(reply.body.applicationId).toBe(id);
    expect(reply.body.next).toBeNull();
    expect(reply.body.items).toMatchObject([
      { version: 1, action: 'create', from: null, to: 'pending', actor: suite.adminIds.admin },
      { version: 2, action: 'update', from: 'pending', to: 'pending', fields: ['loanAmount'] },
      { version: 3, action: 'update', from: 'pending', to: 'under_review' },
      { version: 4, action: 'update', from: 'under_review', to: 'approved', actor: suite.adminIds.approver },
    ]);
    for (const item of reply.body.items) {
      expect(Number.isNaN(Date.parse(item.at))).toBe(false);
      expect(item.requestId).toEqual(expect.any(String));
      // The stored _id and applicationId are not repeated per entry.
      expect(item).not.toHaveProperty('_id');
      expect(item).not.toHaveProperty('applicationId');
    }
  });

  it('is bounded by limit and pages on with after (the next of the previous page)', async () => {
    const { _id: id } = await steps.createOne(2);
    for (let version = 1; version <= 4; version++) {
      const res = await suite.call('PUT', `/api/applications/${id}`, {
        body: { monthlyIncome: 5000 + version, version },
      });
      expect(res.status).toBe(200);
    }
    const first = await suite.call('GET', `/api/applications/${id}/audit?limit=2`);
    expect(first.body.items.map((item: { version: number }) => item.version)).toEqual([1, 2]);
    expect(first.body.next).toBe(2);
    const second = await suite.call('GET', `/api/applications/${id}/audit?limit=2&after=2`);
    expect(second.body.items.map((item: { version: number }) => item.version)).toEqual([3, 4]);
    expect(second.body.next).toBe(4);
    const last = await suite.call('GET', `/api/applications/${id}/audit?limit=2&after=4`);
    expect(last.body.items.map((item: { version: number }) => item.version)).toEqual([5]);
    expect(last.body.next).toBeNull();
    const past = await suite.call('GET', `/api/applications/${id}/audit?after=5`);
    expect(past.status).toBe(200);
    expect(past.body).toEqual({ applicationId: id, items: [], next: null });
  });

  it('defaults to 100 entries and answers at most 500', async () => {
    const { _id: id } = await steps.createOne(3);
    // Entries written straight to the collection: 600 versions of one application.
    await suite.database.db.collection(AUDIT_COLLECTION).insertMany(
      Array.from({ length: 600 }, (_, i) => ({
        _id: auditId(id, i + 2) as never,
        at: new Date(),
        actor: suite.adminIds.admin,
        action: 'update',
        applicationId: id,
        from: 'pending',
        to: 'pending',
        version: i + 2,
      })),
    );
    const byDefault = await suite.call('GET', `/api/applications/${id}/audit`);
    expect(byDefault.body.items).toHaveLength(100);
    expect(byDefault.body.items[0].version).toBe(1);
    expect(byDefault.body.next).toBe(100);
    const most = await suite.call('GET', `/api/applications/${id}/audit?limit=500`);
    expect(most.body.items).toHaveLength(500);
    const tooMany = await suite.call('GET', `/api/applications/${id}/audit?limit=501`);
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error.details).toEqual([expect.objectContaining({ path: 'limit' })]);
  });

  it('404 for an application that does not exist; 400 for a malformed id, limit or after, or an unknown parameter', async () => {
    const missing = await suite.call('GET', '/api/applications/APP-00000000-0000-0000-0000-000000000000/audit');
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('not_found');
    const { _id: id } = await steps.createOne(4);
    for (const path of [
      '/api/applications/not-an-id/audit',
      `/api/applications/${id}/audit?limit=0`,
      `/api/applications/${id}/audit?limit=abc`,
      `/api/applications/${id}/audit?after=-1`,
      `/api/applications/${id}/audit?after=1.5`,
      `/api/applications/${id}/audit?$where=1`,
    ]) {
      const reply = await suite.call('GET', path);
      expect(reply.status, path).toBe(400);
      expect(reply.body.error.code, path).toBe('validation');
    }
  });

  it('needs a session; every role may read it', async () => {
    const { _id: id } = await steps.createOne(5);
    const refused = await suite.call('GET', `/api/applications/${id}/audit`, {
      headers: { authorization: 'Bearer x' },
    });
    expect(refused.status).toBe(401);
    for (const as of ['viewer', 'reviewer', 'approver', 'disburser', 'admin'] as const) {
      expect((await suite.call('GET', `/api/applications/${id}/audit`, { as })).status, as).toBe(200);
    }
  });
});
