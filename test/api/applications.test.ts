// Applications over HTTP: create, get with ETag, versioned PUT (409/412/428/400/404 and their order),
// permissions, strict input, audit entries and published jobs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import { JOBS_COLLECTION } from '../../shared/concurrency/queue/index.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { APPLICATIONS_COLLECTION } from '../../shared/loans/applications.ts';
import { AUDIT_COLLECTION } from '../../shared/loans/audit.ts';
import { openApiSuite } from '../support/app.ts';
import { applicationSteps, sampleApplication } from '../support/applications.ts';
import type { callerFor } from '../support/http.ts';
import type { TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
let adminIds: Record<Role, string>;
const roles: Role[] = ['viewer', 'reviewer', 'approver', 'disburser', 'admin'];

let call: ReturnType<typeof callerFor>;

const sample = sampleApplication;
const { createOne, walk } = applicationSteps(() => call);

const applications = () => database.db.collection(APPLICATIONS_COLLECTION);
const audit = () => database.db.collection(AUDIT_COLLECTION);
const jobs = () => database.db.collection(JOBS_COLLECTION);

beforeAll(async () => {
  ({ database, app, services, adminIds, call } = await openApiSuite(
    import.meta.filename,
    { RATE_LIMIT_PER_MINUTE: '1000000' },
    roles,
  ));
});
afterAll(() => database.close());

describe('create and get', () => {
  it('POST creates a pending application at version 1 with Location and ETag, audited', async () => {
    const res = await call('POST', '/api/applications', {
      as: 'reviewer',
      body: { ...sample(1), email: 'a@example.com', purpose: 'car', identityNumber: 'AB-1234' },
    });
    expect(res.status).toBe(201);
    const id = res.body._id as string;
    expect(id).toMatch(/^APP-/);
    expect(res.headers.get('location')).toBe(`/api/applications/${id}`);
    expect(res.headers.get('etag')).toBe('"1"');
    expect(res.body).toMatchObject({
      status: 'pending',
      version: 1,
      createdBy: adminIds.reviewer,
      updatedBy: adminIds.reviewer,
      email: 'a@example.com',
    });
    expect(res.body.lastChange).toBeUndefined();

    const got = await call('GET', `/api/applications/${id}`, { as: 'viewer' });
    expect(got.status).toBe(200);
    expect(got.headers.get('etag')).toBe('"1"');
    expect(got.body).toEqual(res.body);

    const entries = await audit().find({ applicationId: id }).toArray();
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      _id: `${id}:1`,
      action: 'create',
      actor: adminIds.reviewer,
      from: null,
      to: 'pending',
      version: 1,
    });
    expect(entries[0]!.requestId).toBe(res.headers.get('x-request-id'));
  });

  it('GET answers 404 for an absent id and 400 for malformed ids, never 500', async () => {
    const absent = await call('GET', '/api/applications/APP-00000000-0000-4000-8000-000000000000');
    expect(absent.status).toBe(404);
    expect(absent.body.error.code).toBe('not_found');
    for (const bad of ['nope', '%24gt', 'APP-%24where', `APP-${'x'.repeat(100)}`, '%7B%7D', 'APP-a%2Fb']) {
      const res = await call('GET', `/api/applications/${bad}`);
      expect(res.status, bad).toBe(400);
      expect(res.body.error.code, bad).toBe('validation');
    }
    const put = await call('PUT', '/api/applications/%24ne', { body: { status: 'under_review', version: 1 } });
    expect(put.status).toBe(400);
    expect(put.body.error.code).toBe('validation');
  });

  it('strict input: unknown, $-prefixed and prototype keys, and out-of-range numbers get 400 and write nothing', async () => {
    const before = await applications().countDocuments();
    const auditBefore = await audit().countDocuments();
    const bodies = [
      { ...sample(), extra: 1 },
      { ...sample(), $set: { status: 'approved' } },
      `{"applicantName":"x","monthlyIncome":1,"loanAmount":1000,"termMonths":1,"__proto__":{"status":"approved"}}`,
      `{"applicantName":"x","monthlyIncome":1,"loanAmount":1000,"termMonths":1,"constructor":{"prototype":{}}}`,
      { ...sample(), applicantName: { $gt: '' } },
      { ...sample(), loanAmount: 1e12 },
      { ...sample(), termMonths: 12.5 },
      { ...sample(), status: 'approved' },
      { ...sample(), version: 7 },
    ];
    for (const body of bodies) {
      const res = await call('POST', '/api/applications', { body });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error.code).toBe('validation');
    }
    const out = await call('POST', '/api/applications', { body: { ...sample(), loanAmount: 1e12 } });
    expect(out.body.error.details).toEqual(expect.arrayContaining([expect.objectContaining({ path: 'loanAmount' })]));

    const { _id: id } = await createOne();
    const putBodies = [
      { version: 1, $inc: { version: 5 } },
      `{"version":1,"__proto__":{"status":"approved"}}`,
      { version: 1, status: { $ne: 'x' } },
      { version: { $gt: 0 }, status: 'under_review' },
      { version: 1, status: 'pending' },
      { version: 1, createdBy: 'me' },
      { version: 1, _id: 'APP-other-id-123' },
    ];
    for (const body of putBodies) {
      const res = await call('PUT', `/api/applications/${id}`, { body });
      expect(res.status, JSON.stringify(body)).toBe(400);
    }
    for (const query of [
      '$where=1',
      'status[$ne]=x',
      'status=$ne',
      '__proto__[x]=1',
      'constructor=1',
      'limit=5&limit=6',
    ]) {
      const res = await call('GET', `/api/applications?${query}`);
      expect(res.status, query).toBe(400);
    }
    expect(await applications().countDocuments()).toBe(before + 1);
    expect(await audit().countDocuments()).toBe(auditBefore + 1);
    expect(await applications().findOne({ _id: id } as never)).toMatchObject({ version: 1, status: 'pending' });
  });
});

describe('versioned PUT', () => {
  it('100 concurrent PUTs with the same version: exactly one 200 and 99 409s, final version 2, one audit entry', async () => {
    const { _id: id } = await createOne();
    const replies = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        call('PUT', `/api/applications/${id}`, { body: { status: 'under_review', version: 1, purpose: `p${i}` } }),
      ),
    );
    const statuses = replies.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(99);
    const winner = replies.find((r) => r.status === 200)!;
    expect(winner.body).toMatchObject({ version: 2, status: 'under_review' });
    expect(winner.headers.get('etag')).toBe('"2"');
    for (const loser of replies.filter((r) => r.status === 409)) {
      expect(loser.body.error.code).toBe('conflict');
      expect(loser.body.current).toMatchObject({ _id: id, version: 2, purpose: winner.body.purpose });
    }
    const doc = await applications().findOne({ _id: id } as never);
    expect(doc).toMatchObject({ version: 2, status: 'under_review', purpose: winner.body.purpose });
    expect(await audit().countDocuments({ applicationId: id, version: 2 })).toBe(1);
    expect(await audit().countDocuments({ applicationId: id })).toBe(2);
    expect(await jobs().countDocuments({ name: 'application.review', 'data.applicationId': id })).toBe(1);
  });

  it('If-Match: 200 on a match, 412 with current on a mismatch, * matches any existing document', async () => {
    const { _id: id } = await createOne();
    const ok = await call('PUT', `/api/applications/${id}`, {
      body: { purpose: 'home' },
      headers: { 'if-match': '"1"' },
    });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('etag')).toBe('"2"');
    expect(ok.body).toMatchObject({ version: 2, purpose: 'home', updatedBy: adminIds.admin });

    const stale = await call('PUT', `/api/applications/${id}`, {
      body: { purpose: 'boat' },
      headers: { 'if-match': '"1"' },
    });
    expect(stale.status).toBe(412);
    expect(stale.body.error.code).toBe('precondition_failed');
    expect(stale.body.current).toMatchObject({ _id: id, version: 2, purpose: 'home' });

    const weak = await call('PUT', `/api/applications/${id}`, {
      body: { purpose: 'boat' },
      headers: { 'if-match': 'W/"2"' },
    });
    expect(weak.status).toBe(412);

    const list = await call('PUT', `/api/applications/${id}`, {
      body: { purpose: 'boat' },
      headers: { 'if-match': '"7", "2"' },
    });
    expect(list.status).toBe(200);
    expect(list.body.version).toBe(3);

    const any = await call('PUT', `/api/applications/${id}`, {
      body: { status: 'under_review' },
      headers: { 'if-match': '*' },
    });
    expect(any.status).toBe(200);
    expect(any.body).toMatchObject({ version: 4, status: 'under_review' });

    const absent = await call('PUT', '/api/applications/APP-00000000-0000-4000-8000-000000000001', {
      body: { purpose: 'x' },
      headers: { 'if-match': '*' },
    });
    expect(absent.status).toBe(404);

    const garbage = await call('PUT', `/api/applications/${id}`, {
      body: { purpose: 'x' },
      headers: { 'if-match': '4' },
    });
    expect(garbage.status).toBe(400);
    expect((await applications().findOne({ _id: id } as never))?.version).toBe(4);
  });

  it('428 when neither a version nor If-Match is given, and nothing changes', async () => {
    const { _id: id } = await createOne();
    const res = await call('PUT', `/api/applications/${id}`, { body: { status: 'under_review' } });
    expect(res.status).toBe(428);
    expect(res.body.error.code).toBe('precondition_required');
    expect((await applications().findOne({ _id: id } as never))?.version).toBe(1);
  });

  it('400 for an illegal move, a same-status move, frozen fields and an empty change', async () => {
    const { _id: id } = await createOne();
    const skip = await call('PUT', `/api/applications/${id}`, { body: { status: 'approved', version: 1 } });
    expect(skip.status).toBe(400);
    expect(skip.body.error.details).toMatchObject({ reason: 'invalid_transition', from: 'pending', to: 'approved' });

    expect(await walk(id, ['under_review'])).toBe(2);
    const same = await call('PUT', `/api/applications/${id}`, { body: { status: 'under_review', version: 2 } });
    expect(same.status).toBe(400);
    expect(same.body.error.details.reason).toBe('invalid_transition');

    const approved = await call('PUT', `/api/applications/${id}`, {
      as: 'approver',
      body: { status: 'approved', version: 2 },
    });
    expect(approved.status).toBe(200);
    const frozen = await call('PUT', `/api/applications/${id}`, { body: { loanAmount: 999_999, version: 3 } });
    expect(frozen.status).toBe(400);
    expect(frozen.body.error.details.reason).toBe('not_editable');
    const back = await call('PUT', `/api/applications/${id}`, { body: { status: 'rejected', version: 3 } });
    expect(back.status).toBe(400);
    const nothing = await call('PUT', `/api/applications/${id}`, { body: { version: 3 } });
    expect(nothing.status).toBe(400);
    // Disbursed only through POST .../disburse, which writes the ledger: PUT refuses it.
    const disbursed = await call('PUT', `/api/applications/${id}`, { body: { status: 'disbursed', version: 3 } });
    expect(disbursed.status).toBe(400);
    expect(disbursed.body.error.details.map((d: { path: string }) => d.path)).toEqual(['status']);
    const history = await audit().find({ applicationId: id }).sort({ version: 1 }).toArray();
    expect(history.map((e) => [e.from, e.to, e.version])).toEqual([
      [null, 'pending', 1],
      ['pending', 'under_review', 2],
      ['under_review', 'approved', 3],
    ]);
  });

  it('order of checks: 404 before the version, the version (409/412) before the move (400)', async () => {
    const { _id: id } = await createOne();
    await walk(id, ['under_review']);
    // Stale AND illegal: the writer must learn that someone else changed the document.
    const stale = await call('PUT', `/api/applications/${id}`, { body: { status: 'under_review', version: 1 } });
    expect(stale.status).toBe(409);
    expect(stale.body.current.version).toBe(2);
    const staleTag = await call('PUT', `/api/applications/${id}`, {
      body: { status: 'under_review' },
      headers: { 'if-match': '"1"' },
    });
    expect(staleTag.status).toBe(412);
    const fresh = await call('PUT', `/api/applications/${id}`, { body: { status: 'under_review', version: 2 } });
    expect(fresh.status).toBe(400);
    const absent = await call('PUT', '/api/applications/APP-00000000-0000-4000-8000-000000000002', {
      body: { status: 'approved', version: 1 },
    });
    expect(absent.status).toBe(404);
    // A body version and If-Match that cannot both hold: If-Match is judged first.
    const both = await call('PUT', `/api/applications/${id}`, {
      body: { purpose: 'x', version: 2 },
      headers: { 'if-match': '"1"' },
    });
    expect(both.status).toBe(412);
    const bodyStale = await call('PUT', `/api/applications/${id}`, {
      body: { purpose: 'x', version: 1 },
      headers: { 'if-match': '*' },
    });
    expect(bodyStale.status).toBe(409);
  });
});

describe('permissions', () => {
  it('403 for a role without the permission, checked before the database; 401 without a token', async () => {
    const { _id: id } = await createOne();
    const cases: [Role, string, string, unknown][] = [
      ['viewer', 'POST', '/api/applications', sample()],
      ['approver', 'POST', '/api/applications', sample()],
      ['viewer', 'PUT', `/api/applications/${id}`, { status: 'under_review', version: 1 }],
      ['approver', 'PUT', `/api/applications/${id}`, { status: 'under_review', version: 1 }],
      ['reviewer', 'PUT', `/api/applications/${id}`, { status: 'approved', version: 1 }],
      ['disburser', 'PUT', `/api/applications/${id}`, { status: 'approved', version: 1 }],
      ['approver', 'PUT', `/api/applications/${id}`, { purpose: 'x', version: 1 }],
      ['disburser', 'PUT', `/api/applications/${id}`, { purpose: 'x', version: 99 }],
      ['reviewer', 'PUT', '/api/applications/APP-00000000-0000-4000-8000-000000000003', { status: 'rejected' }],
      ['viewer', 'POST', '/api/applications/batch-update', { applicationIds: [id], status: 'under_review' }],
      ['reviewer', 'POST', '/api/applications/batch-update', { applicationIds: [id], status: 'approved' }],
    ];
    const before = await applications().countDocuments();
    for (const [role, method, path, body] of cases) {
      const res = await call(method, path, { as: role, body });
      expect(res.status, `${role} ${method} ${JSON.stringify(body)}`).toBe(403);
      expect(res.body.error.code).toBe('forbidden');
    }
    expect(await applications().countDocuments()).toBe(before);
    expect((await applications().findOne({ _id: id } as never))?.version).toBe(1);

    for (const role of roles) expect((await call('GET', `/api/applications/${id}`, { as: role })).status).toBe(200);
    const anonymous = await app.request(`/api/applications/${id}`);
    expect(anonymous.status).toBe(401);
    const reviewer = await call('PUT', `/api/applications/${id}`, {
      as: 'reviewer',
      body: { status: 'under_review', version: 1 },
    });
    expect(reviewer.status).toBe(200);
    const approver = await call('PUT', `/api/applications/${id}`, {
      as: 'approver',
      body: { status: 'approved', version: 2 },
    });
    expect(approver.status).toBe(200);
    const disburser = await call('POST', `/api/applications/${id}/disburse`, {
      as: 'disburser',
      headers: { 'idempotency-key': 'permissions-test-1' },
    });
    expect(disburser.status).toBe(200);
  });
});

describe('jobs', () => {
  it('an approval publishes application.approved once, even when the same PUT is retried', async () => {
    const { _id: id } = await createOne();
    const version = await walk(id, ['under_review']);
    const approve = { status: 'approved', version };
    const first = await call('PUT', `/api/applications/${id}`, { as: 'approver', body: approve });
    expect(first.status).toBe(200);
    const retry = await call('PUT', `/api/applications/${id}`, { as: 'approver', body: approve });
    expect(retry.status).toBe(409);
    const anyRetry = await call('PUT', `/api/applications/${id}`, {
      as: 'approver',
      body: { status: 'approved' },
      headers: { 'if-match': '*' },
    });
    expect(anyRetry.status).toBe(400);
    const published = await jobs().find({ name: 'application.approved', 'data.applicationId': id }).toArray();
    expect(published).toHaveLength(1);
    expect(published[0]).toMatchObject({
      _id: `application.approved:${id}:3`,
      data: { applicationId: id, version: 3 },
      state: 'waiting',
    });
    expect(await jobs().countDocuments({ name: 'application.review', 'data.applicationId': id })).toBe(1);
    const stats = await services.queue.stats();
    expect(stats.byName['application.approved']?.waiting).toBeGreaterThanOrEqual(1);
  });
});
