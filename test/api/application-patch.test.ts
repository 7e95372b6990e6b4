// PATCH /api/applications/{id} over HTTP: the media type and the base version are checked first (415,
// 428, 400, 412); a patch merges over changes to other paths since its base (PUT's included) and answers
// 409 merge_conflict naming each overlap; notes merge per note; a status in a patch obeys the state
// machine, the permissions and four eyes as PUT does, and never merges over a status or applicant change.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MERGE_PATCH_TYPE } from '../../api/routes/application-patch.ts';
import { APPLICATIONS_COLLECTION } from '../../shared/loans/applications.ts';
import { openApiSuite } from '../support/app.ts';
import { sampleApplication } from '../support/applications.ts';
import type { Reply } from '../support/http.ts';

let suite: Awaited<ReturnType<typeof openApiSuite>>;

beforeAll(async () => {
  suite = await openApiSuite(import.meta.filename);
});
afterAll(() => suite.database.close());

type Role = 'viewer' | 'reviewer' | 'approver' | 'disburser' | 'admin';
const patch = (id: string, body: unknown, options: { as?: Role; headers?: Record<string, string> } = {}) =>
  suite.call('PATCH', `/api/applications/${id}`, {
    as: options.as,
    body,
    headers: { 'content-type': MERGE_PATCH_TYPE, ...options.headers },
  });

async function created(as: Role = 'admin'): Promise<string> {
  const res = await suite.call('POST', '/api/applications', { as, body: sampleApplication() });
  expect(res.status).toBe(201);
  return res.body._id;
}

const ok = (res: Reply) => {
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
};

describe('the request', () => {
  it('takes application/merge-patch+json only (415)', async () => {
    const id = await created();
    const res = await suite.call('PATCH', `/api/applications/${id}`, { body: { baseVersion: 1, purpose: 'x' } });
    expect(res.status).toBe(415);
    expect(res.body.error.code).toBe('unsupported_media_type');
    // No body at all: the session is checked first (401 without one), then the same 415.
    const bare = await suite.call('PATCH', `/api/applications/${id}`, { headers: { 'if-match': '"1"' } });
    expect(bare.status, JSON.stringify(bare.body)).toBe(415);
    expect(bare.body.error.code).toBe('unsupported_media_type');
  });

  it('needs a base version (428), one If-Match tag that agrees with baseVersion (400)', async () => {
    const id = await created();
    const none = await patch(id, { purpose: 'car' });
    expect(none.status).toBe(428);
    expect(none.body.error.code).toBe('precondition_required');
    const disagree = await patch(id, { baseVersion: 1, purpose: 'car' }, { headers: { 'if-match': '"2"' } });
    expect(disagree.status).toBe(400);
    const star = await patch(id, { purpose: 'car' }, { headers: { 'if-match': '*' } });
    expect(star.status).toBe(400);
    const agree = await patch(id, { baseVersion: 1, purpose: 'car' }, { headers: { 'if-match': '"1"' } });
    expect(ok(agree).version).toBe(2);
    expect(agree.headers.get('etag')).toBe('"2"');
  });

  it('answers a base newer than the application with 412 (If-Match) or 409 (baseVersion)', async () => {
    const id = await created();
    const ifMatch = await patch(id, { purpose: 'car' }, { headers: { 'if-match': '"5"' } });
    expect(ifMatch.status).toBe(412);
    const body = await patch(id, { baseVersion: 5, purpose: 'car' });
    expect(body.status).toBe(409);
    expect(body.body.error.code).toBe('conflict');
  });

  it('refuses an empty patch, an unknown field and a bad note id with 400', async () => {
    const id = await created();
    expect((await patch(id, { baseVersion: 1 })).status).toBe(400);
    expect((await patch(id, { baseVersion: 1, createdBy: 'me' })).status).toBe(400);
    expect((await patch(id, { baseVersion: 1, notes: { 'a.b': { text: 'x' } } })).status).toBe(400);
    expect((await patch(id, { baseVersion: 1, applicantName: null })).status).toBe(400);
  });
});

describe('the description and the other PATCH route', () => {
  it('documents both outcomes of PATCH with examples in /openapi.json', async () => {
    const spec = (await suite.call('GET', '/openapi.json')).body;
    const operation = spec.paths['/api/applications/{id}'].patch;
    expect(Object.keys(operation.requestBody.content)).toEqual([MERGE_PATCH_TYPE]);
    expect(operation.responses['200'].content['application/json'].example.mergedOver).toHaveLength(1);
    expect(Object.keys(operation.responses['409'].content['application/json'].examples)).toEqual([
      'merge_conflict',
      'merge_base_too_old',
    ]);
  });

  it('describes contact, notes and checklist on every answer that carries an application, as they come', async () => {
    const spec = (await suite.call('GET', '/openapi.json')).body;
    const application = spec.components.schemas.Application;
    expect(Object.keys(application.properties)).toEqual(expect.arrayContaining(['contact', 'notes', 'checklist']));
    expect(application.properties.notes.additionalProperties.required).toEqual(['text', 'by', 'at']);
    const id = await created();
    ok(
      await patch(id, {
        baseVersion: 1,
        contact: { phone: '+1 555 0100' },
        notes: { n1: { text: 'first call' } },
        checklist: { payslips: { done: true } },
      }),
    );
    const one = (await suite.call('GET', `/api/applications/${id}`)).body;
    const listed = (await suite.call('GET', '/api/applications?limit=200')).body.items.find(
      (item: { _id: string }) => item._id === id,
    );
    for (const doc of [one, listed]) {
      expect(doc.contact).toEqual({ phone: '+1 555 0100' });
      expect(doc.notes.n1).toEqual({ text: 'first call', by: suite.adminIds.admin, at: expect.any(String) });
      expect(new Date(doc.notes.n1.at).toISOString()).toBe(doc.notes.n1.at);
      expect(doc.checklist.payslips).toMatchObject({ done: true, by: suite.adminIds.admin });
    }
  });

  it('leaves PATCH /api/admins/:id on application/json', async () => {
    const res = await suite.call('PATCH', `/api/admins/${suite.adminIds.viewer}`, { body: { disabled: false } });
    expect(res.status).toBe(200);
    const wrongType = await suite.call('PATCH', `/api/admins/${suite.adminIds.viewer}`, {
      body: { disabled: false },
      headers: { 'content-type': MERGE_PATCH_TYPE },
    });
    expect(wrongType.status).toBe(415);
  });
});

describe('merging', () => {
  it('merges over a PUT to another field and collides with a PUT to the same one', async () => {
    const id = await created();
    const put = await suite.call('PUT', `/api/applications/${id}`, { body: { version: 1, applicantName: 'Ada' } });
    expect(put.status).toBe(200);
    const merged = ok(await patch(id, { baseVersion: 1, contact: { phone: '+44 20 7946 0999' } }, { as: 'reviewer' }));
    expect(merged).toMatchObject({ version: 3, applicantName: 'Ada', contact: { phone: '+44 20 7946 0999' } });
    expect(merged.mergedOver).toEqual([
      { version: 2, by: suite.adminIds.admin, at: expect.any(String), paths: ['applicantName'] },
    ]);
    const clash = await patch(id, { baseVersion: 1, applicantName: 'Grace' }, { as: 'reviewer' });
    expect(clash.status).toBe(409);
    expect(clash.body.error.code).toBe('merge_conflict');
    expect(clash.body.error.details.conflicts).toEqual([
      {
        path: 'applicantName',
        theirPath: 'applicantName',
        theirs: 'Ada',
        by: suite.adminIds.admin,
        at: expect.any(String),
        version: 2,
        yours: 'Grace',
      },
    ]);
    expect(clash.body.current.version).toBe(3);
  });

  it('names the base value a patch knew, and a whole object collides with a field inside it', async () => {
    const id = await created();
    ok(await patch(id, { baseVersion: 1, contact: { phone: '+1 555 0100' } }));
    ok(await patch(id, { baseVersion: 2, contact: { phone: '+1 555 0101' } }));
    const clash = await patch(id, { baseVersion: 2, contact: null }, { as: 'reviewer' });
    expect(clash.status).toBe(409);
    expect(clash.body.error.details.conflicts).toEqual([
      expect.objectContaining({
        path: 'contact',
        theirPath: 'contact.phone',
        base: '+1 555 0100',
        theirs: '+1 555 0101',
      }),
    ]);
    // null deletes (RFC 7396)
    const cleared = ok(await patch(id, { baseVersion: 3, contact: { phone: null } }));
    expect(cleared.contact).toEqual({});
  });

  it('lands two notes added at once, and refuses the second edit of one note', async () => {
    const id = await created();
    const [a, b] = await Promise.all([
      patch(id, { baseVersion: 1, notes: { n1: { text: 'called the applicant' } } }, { as: 'reviewer' }),
      patch(id, { baseVersion: 1, notes: { n2: { text: 'payslips checked' } } }),
    ]);
    ok(a);
    ok(b);
    const doc = (await suite.call('GET', `/api/applications/${id}`)).body;
    expect(doc.version).toBe(3);
    expect(doc.notes.n1).toMatchObject({ text: 'called the applicant', by: suite.adminIds.reviewer });
    expect(doc.notes.n2).toMatchObject({ text: 'payslips checked', by: suite.adminIds.admin });
    const edits = await Promise.all([
      patch(id, { baseVersion: 3, notes: { n1: { text: 'called twice' } } }, { as: 'reviewer' }),
      patch(id, { baseVersion: 3, notes: { n1: { text: 'no answer' } } }),
    ]);
    expect(edits.map((res) => res.status).sort()).toEqual([200, 409]);
    const lost = edits.find((res) => res.status === 409)!;
    const won = edits.find((res) => res.status === 200)!;
    expect(lost.body.error.details.conflicts[0]).toMatchObject({
      path: 'notes.n1',
      theirs: { text: won.body.notes.n1.text },
      base: { text: 'called the applicant' },
    });
  });

  it('never shows the change log or the last change', async () => {
    const id = await created();
    ok(await patch(id, { baseVersion: 1, checklist: { income: { done: true } } }));
    const doc = (await suite.call('GET', `/api/applications/${id}`)).body;
    expect(doc.changes).toBeUndefined();
    expect(doc.lastChange).toBeUndefined();
    const list = (await suite.call('GET', '/api/applications?limit=200')).body.items;
    expect(list.every((item: Record<string, unknown>) => item.changes === undefined)).toBe(true);
    const stored = await suite.database.db.collection(APPLICATIONS_COLLECTION).findOne({ _id: id as never });
    expect(stored?.changes).toHaveLength(2);
  });
});

describe('status moves', () => {
  it('obey the permissions, the state machine and four eyes', async () => {
    const id = await created();
    const viewer = await patch(id, { baseVersion: 1, status: 'under_review' }, { as: 'viewer' });
    expect(viewer.status).toBe(403);
    const illegal = await patch(id, { baseVersion: 1, status: 'approved' }, { as: 'approver' });
    expect(illegal.status).toBe(400);
    expect(illegal.body.error.details).toMatchObject({ reason: 'invalid_transition', from: 'pending' });
    ok(await patch(id, { baseVersion: 1, status: 'under_review' }, { as: 'reviewer' }));
    // The admin created it: four eyes.
    const own = await patch(id, { baseVersion: 2, status: 'approved' });
    expect(own.status).toBe(403);
    expect(own.body.error.code).toBe('four_eyes_preparer_cannot_approve');
    const approved = ok(await patch(id, { baseVersion: 2, status: 'approved' }, { as: 'approver' }));
    expect(approved).toMatchObject({ status: 'approved', approvedBy: suite.adminIds.approver });
    const frozen = await patch(id, { baseVersion: 3, purpose: 'late edit' });
    expect(frozen.status).toBe(400);
    expect(frozen.body.error.details.reason).toBe('not_editable');
  });

  it('collide with a status move or an applicant change since the base', async () => {
    const id = await created();
    ok(await patch(id, { baseVersion: 1, status: 'under_review' }, { as: 'reviewer' }));
    const decisions = await Promise.all([
      patch(id, { baseVersion: 2, status: 'approved' }, { as: 'approver' }),
      patch(id, { baseVersion: 2, status: 'rejected' }, { as: 'approver' }),
    ]);
    expect(decisions.map((res) => res.status).sort()).toEqual([200, 409]);
    const lost = decisions.find((res) => res.status === 409)!;
    expect(lost.body.error.details.conflicts[0]).toMatchObject({ path: 'status', theirPath: 'status' });

    const other = await created();
    ok(await patch(other, { baseVersion: 1, status: 'under_review' }, { as: 'reviewer' }));
    ok(await patch(other, { baseVersion: 2, loanAmount: 30_000 }, { as: 'reviewer' }));
    const blind = await patch(other, { baseVersion: 2, status: 'approved' }, { as: 'approver' });
    expect(blind.status).toBe(409);
    expect(blind.body.error.details.conflicts).toEqual([
      expect.objectContaining({ path: 'status', theirPath: 'loanAmount', theirs: 30_000, yours: 'approved' }),
    ]);
    // A note since the base does not stop a decision.
    ok(await patch(other, { baseVersion: 3, notes: { r: { text: 'fine' } } }));
    ok(await patch(other, { baseVersion: 3, status: 'approved' }, { as: 'approver' }));
  });
});
