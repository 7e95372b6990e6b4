// Four eyes on money, over HTTP: whoever prepared an application (created it, changed its financial
// fields, uploaded a document) may neither approve nor disburse it, and its approver may not disburse it;
// each refusal is a 403 whose code names the rule, and writes nothing. Batch moves obey the same rule per
// id. Evidence is frozen once decided: no upload to a decided application. A change of financial fields
// under review clears the stale recommendation in the same write and asks for a new score.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import { JOBS_COLLECTION } from '../../shared/concurrency/queue/index.ts';
import { APPLICATIONS_COLLECTION } from '../../shared/loans/applications.ts';
import { DISBURSEMENTS_COLLECTION } from '../../shared/loans/disbursements.ts';
import {
  DOCUMENT_CHUNKS_COLLECTION,
  DOCUMENT_FILES_COLLECTION,
  Documents,
  OCR_JOB,
} from '../../shared/loans/documents.ts';
import { LEDGER_COLLECTION } from '../../shared/loans/ledger.ts';
import { formPng } from '../fixtures/documents.ts';
import { createTestApp } from '../support/app.ts';
import { call, type Reply, TEST_PASSWORD } from '../support/http.ts';
import { openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';

type App = ReturnType<typeof createApp>;
let database: TestDatabase;
let app: App;
let services: Services;

/** Admins by name; the "admin" role has every permission, so only the four-eyes rules stop them. */
const people = {
  creator: 'admin',
  editor: 'admin',
  uploader: 'admin',
  approver: 'admin',
  disburser: 'admin',
  reviewer: 'reviewer',
  plainDisburser: 'disburser',
} as const;
type Person = keyof typeof people;
const tokens = {} as Record<Person, string>;
const ids = {} as Record<Person, string>;

const applications = () => database.db.collection(APPLICATIONS_COLLECTION);
const key = () => crypto.randomUUID();

const as = (
  who: Person,
  method: string,
  path: string,
  options: { body?: unknown; headers?: Record<string, string> } = {},
) => call(app, tokens[who], method, path, options);

async function upload(who: Person, id: string): Promise<Reply> {
  const body = new FormData();
  body.append('file', new File([formPng() as Uint8Array<ArrayBuffer>], 'form.png', { type: 'image/png' }));
  const res = await app.request(`/api/applications/${id}/documents`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tokens[who]}` },
    body,
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}

const move = (who: Person, id: string, status: string) =>
  as(who, 'PUT', `/api/applications/${id}`, { body: { status }, headers: { 'if-match': '*' } });
const disburse = (who: Person, id: string, idempotencyKey = key()) =>
  as(who, 'POST', `/api/applications/${id}/disburse`, { headers: { 'idempotency-key': idempotencyKey } });

/** A pending application made by `creator`. */
async function created(loanAmount = 20_000): Promise<string> {
  const res = await as('creator', 'POST', '/api/applications', {
    body: { applicantName: 'Maria Jensen', monthlyIncome: 4250, loanAmount, termMonths: 36 },
  });
  expect(res.status).toBe(201);
  return res.body._id;
}

/** Created by `creator`, a loan amount changed by `editor`, a document by `uploader`, under review. */
async function prepared(): Promise<string> {
  const id = await created();
  expect(
    (await as('editor', 'PUT', `/api/applications/${id}`, { body: { loanAmount: 18_500, version: 1 } })).status,
  ).toBe(200);
  expect((await upload('uploader', id)).status).toBe(202);
  expect((await move('reviewer', id, 'under_review')).status).toBe(200);
  return id;
}

async function approved(): Promise<string> {
  const id = await prepared();
  expect((await move('approver', id, 'approved')).status).toBe(200);
  return id;
}

function expectRefusal(res: Reply, code: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(403);
  expect(res.body.error.code).toBe(code);
}

const snapshot = (id: string) => applications().findOne({ _id: id as never });
const storedFiles = () => database.db.collection(DOCUMENT_FILES_COLLECTION).countDocuments();

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app, services } = await createTestApp(database.db));
  for (const [who, role] of Object.entries(people) as [Person, (typeof people)[Person]][]) {
    const email = `${who}-${crypto.randomUUID().slice(0, 8)}@example.com`;
    ids[who] = (await services.admins.create({ email, password: TEST_PASSWORD, roles: [role] }))._id;
    const login = await call(app, undefined, 'POST', '/api/auth/login', { body: { email, password: TEST_PASSWORD } });
    tokens[who] = login.body.accessToken;
  }
});
afterAll(async () => {
  await database.close();
});

describe(`four eyes on money, on ${target().kind}`, () => {
  it('records who prepared the application (creator, financial-field editor, uploader) and who approved it', async () => {
    const id = await prepared();
    // A purpose is not a financial field: its editor does not prepare the money.
    const current = await snapshot(id);
    expect(
      (
        await as('disburser', 'PUT', `/api/applications/${id}`, {
          body: { purpose: 'a roof', version: current!.version },
        })
      ).status,
    ).toBe(200);
    const res = await as('reviewer', 'GET', `/api/applications/${id}`);
    expect([...res.body.preparedBy].sort()).toEqual([ids.creator, ids.editor, ids.uploader].sort());
    expect(res.body.approvedBy).toBeUndefined();
    expect((await move('approver', id, 'approved')).status).toBe(200);
    expect(await snapshot(id)).toMatchObject({ status: 'approved', approvedBy: ids.approver });
  });

  it('four_eyes_preparer_cannot_approve: the creator, the editor and the uploader each get 403 and nothing is written', async () => {
    const id = await prepared();
    const before = await snapshot(id);
    for (const who of ['creator', 'editor', 'uploader'] as const) {
      expectRefusal(await move(who, id, 'approved'), 'four_eyes_preparer_cannot_approve');
      // With the body version too (no If-Match), the same answer.
      const res = await as(who, 'PUT', `/api/applications/${id}`, {
        body: { status: 'approved', version: before!.version },
      });
      expectRefusal(res, 'four_eyes_preparer_cannot_approve');
    }
    expect(await snapshot(id)).toEqual(before);
    // Rejecting moves no money: a preparer may still reject.
    expect((await move('creator', id, 'rejected')).status).toBe(200);
  });

  it('an approver who changes a financial field in the approving request is a preparer: 403', async () => {
    const id = await prepared();
    const before = await snapshot(id);
    const res = await as('approver', 'PUT', `/api/applications/${id}`, {
      body: { status: 'approved', loanAmount: 19_000, version: before!.version },
    });
    expectRefusal(res, 'four_eyes_preparer_cannot_approve');
    expect(await snapshot(id)).toEqual(before);
  });

  it('four_eyes_preparer_cannot_disburse and four_eyes_approver_cannot_disburse: 403, no disbursement, no ledger entry', async () => {
    const id = await approved();
    for (const who of ['creator', 'editor', 'uploader'] as const) {
      expectRefusal(await disburse(who, id), 'four_eyes_preparer_cannot_disburse');
    }
    expectRefusal(await disburse('approver', id), 'four_eyes_approver_cannot_disburse');
    expect(await database.db.collection(DISBURSEMENTS_COLLECTION).countDocuments({ _id: id as never })).toBe(0);
    expect(await database.db.collection(LEDGER_COLLECTION).countDocuments({ loanId: id })).toBe(0);
    expect(await snapshot(id)).toMatchObject({ status: 'approved' });
    // Someone who neither prepared nor approved it disburses.
    const paid = await disburse('disburser', id);
    expect(paid.status).toBe(200);
    expect(await database.db.collection(LEDGER_COLLECTION).countDocuments({ loanId: id })).toBe(1);
  });

  it('batch approval: a per-id forbidden outcome naming the rule, the others approved', async () => {
    const mine = await prepared();
    const other = await created();
    expect((await move('reviewer', other, 'under_review')).status).toBe(200);
    const res = await as('editor', 'POST', '/api/applications/batch-update', {
      body: { applicationIds: [mine, other], status: 'approved' },
    });
    expect(res.status).toBe(200);
    expect(res.body.results).toEqual([
      {
        id: mine,
        outcome: 'forbidden',
        code: 'four_eyes_preparer_cannot_approve',
        version: expect.any(Number),
        error: expect.any(String),
      },
      { id: other, outcome: 'updated', version: expect.any(Number) },
    ]);
    expect(res.body.counts).toMatchObject({ updated: 1, forbidden: 1 });
    expect(await snapshot(mine)).toMatchObject({ status: 'under_review' });
    expect(await snapshot(other)).toMatchObject({ status: 'approved', approvedBy: ids.editor });
  });

  it('an upload racing its uploader’s own approval: never both (the check and the write are on one version)', async () => {
    for (let round = 0; round < 8; round++) {
      const id = await created();
      expect((await move('reviewer', id, 'under_review')).status).toBe(200);
      const [uploaded, approval] = await Promise.all([upload('uploader', id), move('uploader', id, 'approved')]);
      expect([uploaded.status, approval.status], `round ${round}`).not.toEqual([202, 200]);
      const doc = await snapshot(id);
      if (doc!.status === 'approved') {
        expect(doc!.preparedBy).not.toContain(ids.uploader);
        expect(
          await database.db.collection(DOCUMENT_FILES_COLLECTION).countDocuments({ 'metadata.applicationId': id }),
        ).toBe(0);
      }
    }
  });
});

describe(`evidence is frozen once decided, on ${target().kind}`, () => {
  it('409 for an upload to an approved, a rejected and a disbursed application; nothing stored, no OCR job', async () => {
    const approvedId = await approved();
    const rejectedId = await prepared();
    expect((await move('approver', rejectedId, 'rejected')).status).toBe(200);
    const disbursedId = await approved();
    expect((await disburse('plainDisburser', disbursedId)).status).toBe(200);
    const files = await storedFiles();
    const chunks = await database.db.collection(DOCUMENT_CHUNKS_COLLECTION).countDocuments();
    const jobs = await database.db.collection(JOBS_COLLECTION).countDocuments({ name: OCR_JOB });
    for (const id of [approvedId, rejectedId, disbursedId]) {
      const before = await snapshot(id);
      const res = await upload('uploader', id);
      expect(res.status, id).toBe(409);
      expect(res.body.error.code).toBe('evidence_frozen');
      expect(await snapshot(id)).toEqual(before);
    }
    expect(await storedFiles()).toBe(files);
    expect(await database.db.collection(DOCUMENT_CHUNKS_COLLECTION).countDocuments()).toBe(chunks);
    expect(await database.db.collection(JOBS_COLLECTION).countDocuments({ name: OCR_JOB })).toBe(jobs);
  });

  it('approved while the upload was being stored: the document is taken back, 409, no OCR job', async () => {
    const id = await created();
    expect((await move('reviewer', id, 'under_review')).status).toBe(200);
    const store = Documents.prototype.store;
    // The approver decides after the uploader was recorded and before the bytes are stored.
    const spy = vi.spyOn(Documents.prototype, 'store').mockImplementationOnce(async function (
      this: Documents,
      ...args
    ) {
      expect((await move('approver', id, 'approved')).status).toBe(200);
      return store.apply(this, args);
    });
    try {
      const res = await upload('uploader', id);
      expect(res.status).toBe(409);
      expect(res.body.error.code).toBe('evidence_frozen');
    } finally {
      spy.mockRestore();
    }
    expect(
      await database.db.collection(DOCUMENT_FILES_COLLECTION).countDocuments({ 'metadata.applicationId': id }),
    ).toBe(0);
    expect(
      await database.db.collection(JOBS_COLLECTION).countDocuments({ name: OCR_JOB, 'data.applicationId': id }),
    ).toBe(0);
    expect(await snapshot(id)).toMatchObject({ status: 'approved', approvedBy: ids.approver });
  });

  it('a financial edit under review clears the recommendation in the same write and publishes a new review job', async () => {
    const id = await prepared();
    // As the approval worker leaves it: a recommendation on the current figures.
    await applications().updateOne(
      { _id: id as never },
      { $set: { recommendation: { recommendation: 'auto_approve', reasons: ['fine'] } }, $inc: { version: 1 } },
    );
    const before = await snapshot(id);
    const res = await as('editor', 'PUT', `/api/applications/${id}`, {
      body: { monthlyIncome: 9000, version: before!.version },
    });
    expect(res.status).toBe(200);
    expect(res.body.recommendation).toBeUndefined();
    const after = await snapshot(id);
    expect(after).toMatchObject({ version: before!.version + 1, monthlyIncome: 9000, status: 'under_review' });
    expect(after!.recommendation).toBeUndefined();
    const job = await database.db
      .collection(JOBS_COLLECTION)
      .findOne({ _id: `application.review:${id}:${after!.version}` as never });
    expect(job).toMatchObject({ name: 'application.review', data: { applicationId: id, version: after!.version } });

    // A purpose edit is not financial: the recommendation stays and no job is published.
    await applications().updateOne(
      { _id: id as never },
      { $set: { recommendation: { recommendation: 'auto_approve', reasons: ['fine'] } }, $inc: { version: 1 } },
    );
    const v = (await snapshot(id))!.version;
    expect((await as('editor', 'PUT', `/api/applications/${id}`, { body: { purpose: 'x', version: v } })).status).toBe(
      200,
    );
    expect((await snapshot(id))!.recommendation).toBeDefined();
    expect(
      await database.db
        .collection(JOBS_COLLECTION)
        .countDocuments({ _id: `application.review:${id}:${v + 1}` as never }),
    ).toBe(0);
  });
});

describe(`FOUR_EYES=false, on ${target().kind}`, () => {
  it('one admin may create, approve and disburse (the rules are configuration; evidence stays frozen)', async () => {
    const { app: lax } = await createTestApp(database.db, { FOUR_EYES: 'false', JWT_KEYS: services.config.JWT_KEYS });
    const asLax = (method: string, path: string, options: { body?: unknown; headers?: Record<string, string> } = {}) =>
      call(lax, tokens.creator, method, path, options);
    const made = await asLax('POST', '/api/applications', {
      body: { applicantName: 'Solo Admin', monthlyIncome: 5000, loanAmount: 10_000, termMonths: 24 },
    });
    const id = made.body._id;
    for (const status of ['under_review', 'approved']) {
      expect(
        (await asLax('PUT', `/api/applications/${id}`, { body: { status }, headers: { 'if-match': '*' } })).status,
      ).toBe(200);
    }
    const paid = await asLax('POST', `/api/applications/${id}/disburse`, { headers: { 'idempotency-key': key() } });
    expect(paid.status).toBe(200);
    // The default app on the same data refuses the same admin.
    expectRefusal(await disburse('creator', await approved()), 'four_eyes_preparer_cannot_disburse');
  });
});
