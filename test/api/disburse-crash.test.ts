// A disbursing process SIGKILLed right after each step leaves a state that a retry with the same key,
// through HTTP on another instance, completes: exactly one ledger entry, the application disbursed, the
// chain verified. Another key meanwhile gets 409 without waiting for the dead holder's lease.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { APPLICATIONS_COLLECTION } from '../../shared/loans/applications.ts';
import {
  DISBURSEMENTS_COLLECTION,
  type DisbursementStep,
  disbursementSteps,
} from '../../shared/loans/disbursements.ts';
import { LEDGER_COLLECTION } from '../../shared/loans/ledger.ts';
import { createTestApp } from '../support/app.ts';
import { approvedApplication } from '../support/applications.ts';
import { adminsByRole, call } from '../support/http.ts';
import { mongoUrl, openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';
import { killStarted, startNode } from '../support/processes.ts';

const fixture = fileURLToPath(new URL('../fixtures/disburse-crash.ts', import.meta.url));
// Long enough that the fixture renews its lease on a loaded machine (1 s was lost before the ledger step
// beside stress-ng and other suites); each retry then waits up to this long for the dead holder's lease.
const LEASE_TTL_MS = 3000;

let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
let tokens: Record<Role, string>;

const approved = (loanAmount: number) =>
  approvedApplication(
    app,
    { preparer: tokens.admin, approver: tokens.approver },
    { applicantName: 'Crash Tester', monthlyIncome: 8000, loanAmount, termMonths: 24 },
  );

/** Runs the fixture until it reports the crash point, then SIGKILLs it. */
async function crashAfter(step: DisbursementStep, applicationId: string, idempotencyKey: string): Promise<void> {
  const crashing = startNode(fixture, {
    env: {
      MONGO_URL: mongoUrl(),
      MONGO_DB: database.name,
      APPLICATION_ID: applicationId,
      IDEMPOTENCY_KEY: idempotencyKey,
      LEDGER_KEYS: services.config.LEDGER_KEYS,
      CRASH_AFTER: step,
      LEASE_TTL_MS: String(LEASE_TTL_MS),
    },
  });
  await crashing.printed(`crash-point ${step}`);
  await crashing.kill();
  expect(crashing.child.signalCode).toBe('SIGKILL');
}

const ledgerEntries = (loanId: string) => database.db.collection(LEDGER_COLLECTION).find({ loanId }).toArray();
const applicationDoc = (id: string) => database.db.collection(APPLICATIONS_COLLECTION).findOne({ _id: id as never });
const disbursementDoc = (id: string) => database.db.collection(DISBURSEMENTS_COLLECTION).findOne({ _id: id as never });

/** What the database holds right after the process died at each step. */
const expectedAfter: Record<DisbursementStep, { entries: number; status: string; intent: boolean; record: string }> = {
  claim: { entries: 0, status: 'approved', intent: false, record: 'disbursing' },
  intent: { entries: 0, status: 'approved', intent: true, record: 'disbursing' },
  ledger: { entries: 1, status: 'approved', intent: true, record: 'disbursing' },
  application: { entries: 1, status: 'disbursed', intent: true, record: 'disbursing' },
  record: { entries: 1, status: 'disbursed', intent: true, record: 'disbursed' },
};

describe(`disbursement killed between steps, retried over HTTP, on ${target().kind}`, () => {
  beforeAll(async () => {
    database = await openTestDatabase(import.meta.filename);
    ({ app, services } = await createTestApp(database.db));
    ({ tokens } = await adminsByRole(app, services, ['admin', 'approver', 'disburser']));
  });
  afterAll(async () => {
    await killStarted();
    await database.close();
  });

  it.each(disbursementSteps)('SIGKILL right after "%s": the same key completes it once', async (step) => {
    const amount = 10_000 + disbursementSteps.indexOf(step);
    const id = await approved(amount);
    const idempotencyKey = `crash-${step}-${crypto.randomUUID()}`;
    await crashAfter(step, id, idempotencyKey);

    const expected = expectedAfter[step];
    expect(await ledgerEntries(id)).toHaveLength(expected.entries);
    const halfway = await applicationDoc(id);
    expect(halfway?.status).toBe(expected.status);
    expect(halfway?.disbursement?.idempotencyKey).toBe(expected.intent ? idempotencyKey : undefined);
    expect((await disbursementDoc(id))?.state).toBe(expected.record);

    // Another key is told at once who owns this loan's disbursement, dead holder or not.
    const other = await call(app, tokens.disburser, 'POST', `/api/applications/${id}/disburse`, {
      headers: { 'idempotency-key': crypto.randomUUID() },
    });
    expect(other.status).toBe(409);
    expect(other.body.current).toMatchObject({ idempotencyKey, state: expected.record });

    const started = Date.now();
    const retry = await call(app, tokens.disburser, 'POST', `/api/applications/${id}/disburse`, {
      headers: { 'idempotency-key': idempotencyKey },
    });
    expect(retry.status).toBe(200);
    expect(retry.body).toMatchObject({ applicationId: id, idempotencyKey, amount, status: 'disbursed' });

    const entries = await ledgerEntries(id);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ _id: retry.body.ledgerSeq, amount });
    expect(await applicationDoc(id)).toMatchObject({
      status: 'disbursed',
      disbursement: { idempotencyKey, state: 'disbursed', ledgerSeq: retry.body.ledgerSeq },
    });
    expect(await disbursementDoc(id)).toMatchObject({ state: 'disbursed', ledgerSeq: retry.body.ledgerSeq });
    const again = await call(app, tokens.disburser, 'POST', `/api/applications/${id}/disburse`, {
      headers: { 'idempotency-key': idempotencyKey },
    });
    expect(again).toMatchObject({ status: 200, body: retry.body });
    const verify = await call(app, tokens.admin, 'GET', '/api/ledger/verify');
    expect(verify.body).toMatchObject({ ok: true });
    console.log(`crash after ${step}: retry completed in ${Date.now() - started} ms`);
  });

  it('the ledger holds exactly one entry per crashed loan, contiguous', async () => {
    const all = await database.db.collection(LEDGER_COLLECTION).find({}).sort({ _id: 1 }).toArray();
    expect(all.map((e) => e._id)).toEqual(disbursementSteps.map((_, i) => i + 1));
    expect(new Set(all.map((e) => e.loanId)).size).toBe(disbursementSteps.length);
  });
});
