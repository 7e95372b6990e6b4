// The whole pipeline through HTTP and real processes: the API and both workers run as operators run
// them. An admin creates an application and uploads a generated image of the loan form; the OCR
// worker reads it; the approval worker recommends; an admin approves; a disburser disburses; the
// ledger holds one entry for the loan and verifies.

import { type ChildProcess, spawn } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ApiInstance, startApiInstances } from '../../scripts/api-instances.ts';
import { stopProcess } from '../../scripts/processes.ts';
import { formPng, sampleForm } from '../fixtures/documents.ts';
import { randomJwtKeys } from '../support/app.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
const children: ChildProcess[] = [];
let origin: string;
let output = '';
let apiInstance: ApiInstance | undefined;

function run(file: string, env: Record<string, string>) {
  const child = spawn(process.execPath, [file], {
    env: {
      ...process.env,
      MONGO_URL: mongoUrl(),
      MONGO_DB: database.name,
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  children.push(child);
  return child;
}

async function until<T>(what: string, probe: () => Promise<T | undefined | null | false>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const value = await probe().catch(() => undefined);
    if (value) return value;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}\n${output}`);
}

async function api(
  token: string | null,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const res = await fetch(`${origin}${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined && !(body instanceof FormData) ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : body instanceof FormData ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  const [api] = await startApiInstances(1, {
    MONGO_URL: mongoUrl(),
    MONGO_DB: database.name,
    JWT_KEYS: randomJwtKeys(),
    LEDGER_KEYS: randomJwtKeys('ledger'),
    PASSWORD_ITERATIONS: '1000',
    ADMIN_EMAIL: 'boss@example.com',
    ADMIN_PASSWORD: 'pipeline admin password',
    LOG_LEVEL: 'warn',
  });
  apiInstance = api!;
  origin = api!.origin;
  run('workers/ocr/main.ts', { QUEUE_LEASE_MS: '5000' });
  // Recommend only: in this story an admin takes the decision.
  run('workers/approval/main.ts', { APPROVAL_AUTO_DECIDE: 'false' });
}, 120_000);

afterAll(async () => {
  await apiInstance?.stop();
  await Promise.all(children.map((child) => stopProcess(child)));
  await database.close();
});

it('application -> document -> OCR -> recommendation -> approval -> disbursement -> verified ledger', async () => {
  const login = await api(null, 'POST', '/api/auth/login', {
    email: 'boss@example.com',
    password: 'pipeline admin password',
  });
  expect(login.status).toBe(200);
  const token: string = login.body.accessToken;

  const created = await api(token, 'POST', '/api/applications', {
    applicantName: sampleForm.applicantName,
    monthlyIncome: 4250,
    loanAmount: 18_500,
    termMonths: 60,
  });
  expect(created.status).toBe(201);
  const id: string = created.body._id;

  const form = new FormData();
  form.append('file', new Blob([Buffer.from(formPng())], { type: 'image/png' }), 'loan-form.png');
  const upload = await api(token, 'POST', `/api/applications/${id}/documents`, form);
  expect(upload.status).toBe(202);
  expect(upload.body).toMatchObject({ documentId: expect.any(String), jobId: expect.any(String) });

  const review = await api(token, 'PUT', `/api/applications/${id}`, { status: 'under_review' }, { 'if-match': '*' });
  expect(review.status).toBe(200);

  // OCR reads the form; the approval worker scores with what it read.
  const scored = await until('OCR and a recommendation based on it', async () => {
    const app = (await api(token, 'GET', `/api/applications/${id}`)).body;
    return app?.ocr?.fields && app.recommendation?.metrics?.ocrConfidence !== null && app.recommendation ? app : null;
  });
  expect(scored.ocr.fields).toMatchObject({
    applicantName: { value: sampleForm.applicantName },
    monthlyIncome: { value: 4250 },
    loanAmount: { value: 18_500 },
    identityNumber: { value: sampleForm.identityNumber },
  });
  expect(scored.recommendation.recommendation).toBe('auto_approve');
  expect(scored.status).toBe('under_review');

  const approved = await api(token, 'PUT', `/api/applications/${id}`, { status: 'approved', version: scored.version });
  expect(approved.status).toBe(200);

  const key = `pipeline-${crypto.randomUUID()}`;
  const disbursed = await api(token, 'POST', `/api/applications/${id}/disburse`, undefined, { 'idempotency-key': key });
  expect(disbursed.status).toBe(200);
  expect(disbursed.body).toMatchObject({ applicationId: id, amount: 18_500, status: 'disbursed' });
  const again = await api(token, 'POST', `/api/applications/${id}/disburse`, undefined, { 'idempotency-key': key });
  expect(again.body).toEqual(disbursed.body);

  const entries = await api(token, 'GET', `/api/applications/${id}/ledger`);
  expect(entries.body.entries).toHaveLength(1);
  expect(entries.body.entries[0]).toMatchObject({ loanId: id, amount: 18_500, type: 'disbursement' });
  const verify = await api(token, 'GET', '/api/ledger/verify');
  expect(verify.body).toMatchObject({ ok: true });
  expect((await api(token, 'GET', `/api/applications/${id}`)).body.status).toBe('disbursed');
}, 180_000);
