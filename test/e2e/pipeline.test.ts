// The whole pipeline through HTTP and real processes: the API and both workers run as operators run
// them, and every role walks an application from creation to payment under four eyes. A reviewer creates
// it and uploads a generated image of the loan form; the OCR worker reads it; the approval worker scores
// it, approving by itself only loans up to APPROVAL_AUTO_APPROVE_MAX_AMOUNT; whoever prepared it may
// neither approve nor disburse it, its approver may not disburse it; a disburser who did neither pays;
// the ledger holds one entry per loan and verifies.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ApiInstance, startApiInstances } from '../../scripts/api-instances.ts';
import { formPng, sampleApplication, sampleForm } from '../fixtures/documents.ts';
import { apiProcessEnv } from '../support/app.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { type NodeProcess, startNode } from '../support/processes.ts';
import { remoteCaller } from '../support/remote.ts';
import { waitForValue } from '../support/wait.ts';

let database: TestDatabase;
let origin: string;
let apiInstance: ApiInstance | undefined;

const workers: NodeProcess[] = [];
const output = () => workers.map((worker) => worker.output()).join('\n');

function run(file: string, env: Record<string, string>) {
  workers.push(
    startNode(file, {
      env: { MONGO_URL: mongoUrl(), MONGO_DB: database.name, HOST: '127.0.0.1', LOG_LEVEL: 'warn', ...env },
    }),
  );
}

/** Polls `probe` until it gives a value (a failed probe counts as none). */
const until = <T>(what: string, probe: () => Promise<T | undefined | null | false>, ms = 60_000) =>
  waitForValue(() => probe().catch(() => undefined), Boolean, {
    timeoutMs: ms,
    intervalMs: 200,
    what: `waiting for ${what}`,
    detail: output,
  }) as Promise<T>;

const api = remoteCaller(() => origin);

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  const [api] = await startApiInstances(
    1,
    apiProcessEnv(database.name, { ADMIN_EMAIL: 'boss@example.com', ADMIN_PASSWORD: 'pipeline admin password' }),
  );
  apiInstance = api!;
  origin = api!.origin;
  run('workers/ocr/main.ts', { QUEUE_LEASE_MS: '5000' });
  // Decides by itself, but approves only loans up to 10,000.
  run('workers/approval/main.ts', { APPROVAL_AUTO_DECIDE: 'true', APPROVAL_AUTO_APPROVE_MAX_AMOUNT: '10000' });
}, 120_000);

afterAll(async () => {
  await apiInstance?.stop();
  await Promise.all(workers.map((worker) => worker.stop()));
  await database.close();
});

const PASSWORD = 'a long pipeline password';

async function login(email: string, password = PASSWORD): Promise<string> {
  const res = await api(null, 'POST', '/api/auth/login', { email, password });
  expect(res.status).toBe(200);
  return res.body.accessToken;
}

/** The people of the story, each an admin account made by the first admin through the API. */
async function staff() {
  const boss = await login('boss@example.com', 'pipeline admin password');
  const accounts = {
    reviewer: ['reviewer'],
    // Can do everything: only the four-eyes rules stop them.
    editor: ['admin'],
    // May approve and disburse, but not both for one loan.
    approver: ['approver', 'disburser'],
    disburser: ['disburser'],
    viewer: ['viewer'],
  } as const;
  const tokens = { boss } as Record<keyof typeof accounts | 'boss', string>;
  for (const [name, roles] of Object.entries(accounts)) {
    const email = `${name}-${crypto.randomUUID().slice(0, 8)}@example.com`;
    const made = await api(boss, 'POST', '/api/admins', { email, password: PASSWORD, roles });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    tokens[name as keyof typeof accounts] = await login(email);
  }
  return tokens;
}

function formData(bytes: Uint8Array) {
  const form = new FormData();
  form.append('file', new Blob([Buffer.from(bytes)], { type: 'image/png' }), 'loan-form.png');
  return form;
}

const refused = (res: { status: number; body: { error?: { code?: string } } }) => [res.status, res.body?.error?.code];

it('every role from application to payment, with both workers: four eyes on approval and disbursement', async () => {
  const t = await staff();
  const get = async (id: string) => (await api(t.viewer, 'GET', `/api/applications/${id}`)).body;
  const disburse = (token: string, id: string) =>
    api(token, 'POST', `/api/applications/${id}/disburse`, undefined, {
      'idempotency-key': `pipeline-${crypto.randomUUID()}`,
    });

  // ---- A: 18,500 is above the worker's limit: it recommends, an approver decides. ------------------
  const created = await api(t.reviewer, 'POST', '/api/applications', sampleApplication(18_000, 60));
  expect(created.status).toBe(201);
  const a: string = created.body._id;
  expect((await api(t.reviewer, 'POST', `/api/applications/${a}/documents`, formData(formPng()))).status).toBe(202);
  expect(
    (await api(t.reviewer, 'PUT', `/api/applications/${a}`, { status: 'under_review' }, { 'if-match': '*' })).status,
  ).toBe(200);

  // OCR reads the form; the approval worker scores with what it read.
  const scored = await until('OCR and a recommendation based on it', async () => {
    const app = await get(a);
    return app?.ocr?.fields && app.recommendation?.metrics?.ocrConfidence !== null && app.recommendation ? app : null;
  });
  expect(scored.ocr.fields).toMatchObject({
    applicantName: { value: sampleForm.applicantName },
    monthlyIncome: { value: 4250 },
    loanAmount: { value: 18_500 },
    identityNumber: { value: sampleForm.identityNumber },
  });
  expect(scored.recommendation.metrics.amountToAnnualIncome).toBe(0.353); // 18,000 declared

  // The editor corrects the amount to the form's: the stale score goes in that write, a new one follows.
  const edited = await api(t.editor, 'PUT', `/api/applications/${a}`, { loanAmount: 18_500 }, { 'if-match': '*' });
  expect(edited.status).toBe(200);
  expect(edited.body.recommendation).toBeUndefined();
  const rescored = await until('a new recommendation on the corrected amount', async () => {
    const app = await get(a);
    return app?.recommendation?.metrics?.amountToAnnualIncome === 0.363 ? app : null;
  });
  expect(rescored.recommendation.recommendation).toBe('auto_approve');
  // Above APPROVAL_AUTO_APPROVE_MAX_AMOUNT: the worker only recommended.
  expect(rescored.status).toBe('under_review');
  expect([...rescored.preparedBy].length).toBe(2);

  const approve = (token: string) =>
    api(token, 'PUT', `/api/applications/${a}`, { status: 'approved' }, { 'if-match': '*' });
  expect(refused(await approve(t.reviewer))).toEqual([403, 'forbidden']);
  expect(refused(await approve(t.disburser))).toEqual([403, 'forbidden']);
  expect(refused(await approve(t.editor))).toEqual([403, 'four_eyes_preparer_cannot_approve']);
  const approved = await approve(t.approver);
  expect(approved.status).toBe(200);

  expect(refused(await disburse(t.approver, a))).toEqual([403, 'four_eyes_approver_cannot_disburse']);
  expect(refused(await disburse(t.editor, a))).toEqual([403, 'four_eyes_preparer_cannot_disburse']);
  expect(refused(await disburse(t.reviewer, a))).toEqual([403, 'forbidden']);
  // The evidence is frozen now.
  expect(refused(await api(t.editor, 'POST', `/api/applications/${a}/documents`, formData(formPng())))).toEqual([
    409,
    'evidence_frozen',
  ]);
  const paid = await disburse(t.disburser, a);
  expect(paid.status).toBe(200);
  expect(paid.body).toMatchObject({ applicationId: a, amount: 18_500, status: 'disbursed' });

  // ---- B: 9,500 is within the limit: the worker approves; a disburser who did not prepare it pays. --
  const smallForm = { ...sampleForm, loanAmount: '$9,500' };
  const small = await api(t.editor, 'POST', '/api/applications', sampleApplication(9_500, 36));
  expect(small.status).toBe(201);
  const b: string = small.body._id;
  expect((await api(t.reviewer, 'POST', `/api/applications/${b}/documents`, formData(formPng(smallForm)))).status).toBe(
    202,
  );
  expect(
    (await api(t.reviewer, 'PUT', `/api/applications/${b}`, { status: 'under_review' }, { 'if-match': '*' })).status,
  ).toBe(200);
  const auto = await until('the approval worker approving it', async () => {
    const app = await get(b);
    return app?.status === 'approved' ? app : null;
  });
  expect(auto).toMatchObject({ approvedBy: 'approval-worker', recommendation: { recommendation: 'auto_approve' } });
  expect(auto.ocr.fields.loanAmount.value).toBe(9_500);
  expect(refused(await disburse(t.editor, b))).toEqual([403, 'four_eyes_preparer_cannot_disburse']);
  const paidB = await disburse(t.approver, b);
  expect(paidB.status).toBe(200);

  for (const id of [a, b]) {
    expect((await get(id)).status).toBe('disbursed');
    const entries = await api(t.disburser, 'GET', `/api/applications/${id}/ledger`);
    expect(entries.body.entries).toHaveLength(1);
    expect(entries.body.entries[0]).toMatchObject({ loanId: id, type: 'disbursement' });
  }
  expect((await api(t.boss, 'GET', '/api/ledger/verify')).body).toMatchObject({ ok: true, entries: 2 });
}, 240_000);
