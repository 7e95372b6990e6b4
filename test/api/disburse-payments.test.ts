// Disbursement through a payment provider (the repository's simulator, a real HTTP server on a free port):
// provider down -> 202 at once with the disbursement pending, nothing paid, everything completes once when
// it recovers; a success whose answer was lost is not paid again; an open breaker stops calls within its
// bound; the signed callback completes a pending disbursement, refuses a bad signature and shrugs off
// duplicates; the ledger verifies at the end. Each test runs its own app instance (its own breaker).
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import { createMetrics } from '../../api/metrics.ts';
import { startBackground } from '../../api/services.ts';
import { type PaymentProviderSim, startPaymentProviderSim } from '../../scripts/payment-provider-sim.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { DISBURSEMENTS_COLLECTION, Disbursements } from '../../shared/loans/disbursements.ts';
import { LEDGER_COLLECTION, Ledger, LedgerKeys } from '../../shared/loans/ledger.ts';
import { signWebhook, WEBHOOK_SIGNATURE_HEADER } from '../../shared/loans/payments.ts';
import { createTestApp, randomJwtKeys } from '../support/app.ts';
import { approvedApplication } from '../support/applications.ts';
import { adminsByRole, call } from '../support/http.ts';
import { openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';

type App = ReturnType<typeof createApp>;

const PROVIDER_KEY = 'sim-provider-key-0123456789';
const WEBHOOK_SECRET = 'sim-webhook-secret-0123456789abcdef0123';
const roles: Role[] = ['approver', 'disburser', 'admin'];
const keys = { JWT_KEYS: randomJwtKeys(), LEDGER_KEYS: randomJwtKeys('ledger') };

let database: TestDatabase;
let sim: PaymentProviderSim;
let tokens: Record<Role, string>;
/** The app the simulator's callbacks go to (the current test's). */
let current: App;

const key = () => crypto.randomUUID();

/** A fresh instance (its own provider client and breaker) on the shared database and keys. */
async function instance(overrides: Record<string, string> = {}) {
  const { app, services } = await createTestApp(database.db, {
    ...keys,
    PAYMENT_PROVIDER_URL: sim.url,
    PAYMENT_PROVIDER_KEY: PROVIDER_KEY,
    PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET,
    PAYMENT_TIMEOUT_MS: '5000',
    PAYMENT_BACKOFF_MS: '5',
    PAYMENT_BACKOFF_MAX_MS: '20',
    ...overrides,
  });
  current = app;
  return { app, services };
}

const approved = (app: App, loanAmount = 12_000) =>
  approvedApplication(
    app,
    { preparer: tokens.admin, approver: tokens.approver },
    { applicantName: 'Pat Payee', monthlyIncome: 6000, loanAmount, termMonths: 24 },
  );

const disburse = (app: App, id: string, idempotencyKey: string) =>
  call(app, tokens.disburser, 'POST', `/api/applications/${id}/disburse`, {
    headers: { 'idempotency-key': idempotencyKey },
  });

const ledgerCount = (loanId: string) => database.db.collection(LEDGER_COLLECTION).countDocuments({ loanId });
const record = (id: string) => database.db.collection(DISBURSEMENTS_COLLECTION).findOne({ _id: id as never });
const paidFor = (id: string) => sim.state().payments.filter((p) => p.applicationId === id);

function webhook(app: App, body: string, signature?: string) {
  return app.request('/api/payments/webhook', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(signature ? { [WEBHOOK_SIGNATURE_HEADER]: signature } : {}) },
    body,
  });
}

async function verified(app: App) {
  const res = await call(app, tokens.admin, 'GET', '/api/ledger/verify');
  expect(res.status).toBe(200);
  expect(res.body.mismatches).toEqual([]);
  expect(res.body.ok).toBe(true);
}

describe(`disbursement through a payment provider on ${target().kind}`, () => {
  beforeAll(async () => {
    database = await openTestDatabase(import.meta.filename);
    sim = await startPaymentProviderSim({
      key: PROVIDER_KEY,
      webhookSecret: WEBHOOK_SECRET,
      deliver: (body, signature) => webhook(current, body, signature),
    });
    const { app, services } = await createTestApp(database.db, keys);
    ({ tokens } = await adminsByRole(app, services, roles));
  });
  beforeEach(() => sim.setFaults({ duplicateWebhooks: 0 }));
  afterAll(async () => {
    await sim?.close();
    await database?.close();
  });

  it('provider down: 202 at once with the disbursement pending, nothing paid; on recovery a retry and the resume sweep complete each once', async () => {
    const { app, services } = await instance({ PAYMENT_MAX_ATTEMPTS: '3', PAYMENT_BREAKER_FAILURES: '100' });
    const [a, b] = [await approved(app, 11_000), await approved(app, 11_001)];
    const [keyA, keyB] = [key(), key()];
    sim.setFaults({ mode: 'error', duplicateWebhooks: 0 });
    const before = sim.state().calls;

    const first = await disburse(app, a, keyA);
    expect(first.status).toBe(202);
    expect(first.body).toMatchObject({ applicationId: a, idempotencyKey: keyA, status: 'pending', amount: 11_000 });
    expect(first.body.payment.state).toBe('pending');
    expect(sim.state().calls - before).toBe(3); // PAYMENT_MAX_ATTEMPTS, then it answers
    expect((await disburse(app, b, keyB)).status).toBe(202);
    expect((await disburse(app, a, keyA)).status).toBe(202); // the same request again: still pending
    expect(paidFor(a)).toEqual([]);
    expect(await ledgerCount(a)).toBe(0);
    const app404 = await call(app, tokens.disburser, 'GET', `/api/applications/${a}`);
    expect(app404.body.status).toBe('approved');
    await verified(app); // a pending disbursement is not a contradiction

    sim.setFaults({ mode: 'ok', duplicateWebhooks: 0 });
    const done = await disburse(app, a, keyA);
    expect(done.status).toBe(200);
    expect(done.body).toMatchObject({ applicationId: a, status: 'disbursed', amount: 11_000 });
    expect((await disburse(app, a, keyA)).body).toEqual(done.body); // identical answer, no new call needed

    // b: nobody retries; the worker's sweep completes it, as the admin who asked.
    const sweep = new Disbursements(database.db, {
      ledger: new Ledger(database.db, { keys: LedgerKeys.parse(keys.LEDGER_KEYS), clock: services.clock }),
      locks: services.locks,
      clock: services.clock,
      payments: services.payments!,
    });
    const swept = await sweep.resumePending(0, 1_000);
    expect(swept.completed).toBeGreaterThanOrEqual(1);
    expect((await record(b))?.state).toBe('disbursed');
    expect((await disburse(app, b, keyB)).status).toBe(200);

    for (const id of [a, b]) {
      expect(paidFor(id)).toHaveLength(1);
      expect(await ledgerCount(id)).toBe(1);
    }
    expect(services.paymentStats.outcomes.server_error).toBeGreaterThanOrEqual(9);
    await verified(app);
  });

  it('a success whose answer was lost is not paid again: the retry gets the same receipt', async () => {
    // Inside one request: the first attempt's answer is lost, the retry (same key) gets the receipt.
    const { app } = await instance({ PAYMENT_MAX_ATTEMPTS: '3' });
    const id = await approved(app, 12_500);
    sim.setFaults({ mode: 'lose', count: 1, duplicateWebhooks: 0 });
    const repeats = sim.state().repeats;
    const res = await disburse(app, id, key());
    expect(res.status).toBe(200);
    expect(paidFor(id)).toHaveLength(1);
    expect(sim.state().repeats - repeats).toBe(1);
    expect((await record(id))?.payment).toMatchObject({ state: 'paid', paymentId: paidFor(id)[0]!.paymentId });

    // Across requests: one attempt only, the answer lost -> 202; the client's retry completes it.
    const single = await instance({ PAYMENT_MAX_ATTEMPTS: '1' });
    const other = await approved(single.app, 12_501);
    const k = key();
    sim.setFaults({ mode: 'lose', count: 1, duplicateWebhooks: 0 });
    expect((await disburse(single.app, other, k)).status).toBe(202);
    expect(paidFor(other)).toHaveLength(1); // the provider did pay
    expect(await ledgerCount(other)).toBe(0);
    expect((await disburse(single.app, other, k)).status).toBe(200);
    expect(paidFor(other)).toHaveLength(1);
    expect(await ledgerCount(other)).toBe(1);
    await verified(app);
  });

  it('an open breaker stops calls within its bound, fails fast, and a half-open probe closes it', async () => {
    const FAILURES = 3;
    const { app, services } = await instance({
      PAYMENT_MAX_ATTEMPTS: '2',
      PAYMENT_BREAKER_FAILURES: String(FAILURES),
      PAYMENT_BREAKER_HALF_OPEN_MS: '300',
    });
    sim.setFaults({ mode: 'error', duplicateWebhooks: 0 });
    const loans: { id: string; key: string }[] = [];
    for (let i = 0; i < 10; i++) loans.push({ id: await approved(app, 13_000 + i), key: key() });
    const before = sim.state().calls;
    for (const loan of loans) expect((await disburse(app, loan.id, loan.key)).status).toBe(202);
    const calls = sim.state().calls - before;
    // The breaker opens after FAILURES failed attempts in a row; while open, no request reaches the provider
    // (a half-open probe may have come due on a slow machine: at most one per 300 ms, each reopening it).
    expect(calls).toBeGreaterThanOrEqual(FAILURES);
    expect(calls).toBeLessThanOrEqual(FAILURES + services.paymentStats.breakerOpened - 1);
    console.info(
      `breaker: ${calls} provider calls for ${loans.length} requests, opened ${services.paymentStats.breakerOpened}x, ${services.paymentStats.outcomes.breaker_open} failed fast`,
    );
    // Every request after the first ends on a fast failure (its own retry, or its only attempt, meets the open breaker).
    expect(services.paymentStats.outcomes.breaker_open).toBe(loans.length - 1);
    expect(services.paymentStats.breakerOpened).toBeGreaterThanOrEqual(1);
    expect(sim.state().payments.filter((p) => loans.some((l) => l.id === p.applicationId))).toEqual([]);
    // What /metrics (Node) exports of it.
    const scraped = await createMetrics({ queue: services.queue, payments: services.paymentStats }).registry.metrics();
    expect(scraped).toContain(`payment_provider_calls_total{outcome="breaker_open"} ${loans.length - 1}`);
    expect(scraped).toContain(`payment_provider_breaker_opened_total ${services.paymentStats.breakerOpened}`);
    expect(scraped).toContain(`payment_provider_breaker_open ${services.paymentStats.breaker === 'open' ? 1 : 0}`);

    sim.setFaults({ mode: 'ok', duplicateWebhooks: 0 });
    // Half-open after 300 ms: the first request then is the probe; its success closes the breaker.
    await vi.waitFor(
      async () => {
        expect((await disburse(app, loans[0]!.id, loans[0]!.key)).status).toBe(200);
      },
      { timeout: 10_000, interval: 100 },
    );
    expect(services.paymentStats.breaker).toBe('closed');
    for (const loan of loans) expect((await disburse(app, loan.id, loan.key)).status).toBe(200);
    for (const loan of loans) {
      expect(paidFor(loan.id)).toHaveLength(1);
      expect(await ledgerCount(loan.id)).toBe(1);
    }
    await verified(app);
  });

  it('a time-out (provider hangs) answers 202 within the time-out and completes later', async () => {
    const { app, services } = await instance({ PAYMENT_MAX_ATTEMPTS: '1', PAYMENT_TIMEOUT_MS: '1500' });
    const id = await approved(app, 14_000);
    const k = key();
    sim.setFaults({ mode: 'hang', count: 1, duplicateWebhooks: 0 });
    expect((await disburse(app, id, k)).status).toBe(202);
    expect(services.paymentStats.outcomes.timeout).toBe(1);
    expect((await disburse(app, id, k)).status).toBe(200);
    expect(paidFor(id)).toHaveLength(1);
    expect(await ledgerCount(id)).toBe(1);
  });

  it('the callback: a bad signature is refused, a good one completes a pending disbursement, duplicates are harmless', async () => {
    const { app } = await instance({ PAYMENT_MAX_ATTEMPTS: '1' });
    const id = await approved(app, 15_000);
    const k = key();
    // The provider pays but the answer is lost; it then calls back three times.
    sim.setFaults({ mode: 'lose', count: 1, duplicateWebhooks: 3 });
    // 202 (pending) as a rule; 200 when a callback completed it before the lost answer was noticed (a busy
    // machine): either way it is paid once, below.
    expect([200, 202]).toContain((await disburse(app, id, k)).status);
    await sim.settled();
    await vi.waitFor(async () => expect((await record(id))?.state).toBe('disbursed'), { timeout: 10_000 });
    expect((await record(id))?.payment).toMatchObject({ state: 'paid' });
    expect(paidFor(id)).toHaveLength(1);
    expect(await ledgerCount(id)).toBe(1);

    const body = JSON.stringify({
      idempotencyKey: `disbursement:${id}`,
      paymentId: paidFor(id)[0]!.paymentId,
      status: 'paid',
    });
    // Replayed later: harmless.
    const replay = await webhook(app, body, await signWebhook(WEBHOOK_SECRET, body));
    expect(replay.status).toBe(200);
    expect(await replay.json()).toEqual({ result: 'disbursed' });
    // Bad signatures: wrong secret, tampered body, missing, malformed.
    const wrong = await signWebhook('another-secret-0123456789abcdef0123456', body);
    const tampered = body.replace('"paid"', '"paid" ');
    for (const [b, sig] of [
      [body, wrong],
      [tampered, await signWebhook(WEBHOOK_SECRET, body)],
      [body, undefined],
      [body, 'sha256=zz'],
    ] as const) {
      const res = await webhook(app, b, sig);
      expect(res.status).toBe(401);
    }
    // Unknown payment identity: taken and ignored.
    const unknown = JSON.stringify({ idempotencyKey: 'disbursement:nope', paymentId: 'pay_x', status: 'paid' });
    expect(await (await webhook(app, unknown, await signWebhook(WEBHOOK_SECRET, unknown))).json()).toEqual({
      result: 'unknown',
    });
    // The client's retry gets the finished disbursement; nothing more was paid.
    expect((await disburse(app, id, k)).status).toBe(200);
    expect(paidFor(id)).toHaveLength(1);
    expect(await ledgerCount(id)).toBe(1);
    await verified(app);
  });

  it("a running instance's resume sweep completes a pending disbursement nobody asks about again", async () => {
    const { app, services } = await instance({ PAYMENT_MAX_ATTEMPTS: '1', PAYMENT_RESUME_INTERVAL_MS: '100' });
    const id = await approved(app, 16_500);
    sim.setFaults({ mode: 'error', duplicateWebhooks: 0 });
    expect((await disburse(app, id, key())).status).toBe(202);
    const stop = startBackground(services);
    try {
      sim.setFaults({ mode: 'ok', duplicateWebhooks: 0 });
      await vi.waitFor(async () => expect((await record(id))?.state).toBe('disbursed'), {
        timeout: 15_000,
        interval: 50,
      });
    } finally {
      await stop();
    }
    expect(paidFor(id)).toHaveLength(1);
    expect(await ledgerCount(id)).toBe(1);
  });

  it('a refusal (4xx) is not retried: 502 payment_refused, the record says refused, nothing paid', async () => {
    const { app } = await instance({ PAYMENT_PROVIDER_KEY: 'not-the-providers-key-0123', PAYMENT_MAX_ATTEMPTS: '3' });
    const id = await approved(app, 17_000);
    const before = sim.state().calls;
    const res = await disburse(app, id, key());
    expect(res.status).toBe(502);
    expect(res.body.error.code).toBe('payment_refused');
    expect(res.body.error.details.status).toBe(401);
    expect(sim.state().calls - before).toBe(1);
    expect((await record(id))?.payment).toMatchObject({ state: 'refused', attempts: 1 });
    expect(paidFor(id)).toEqual([]);
    expect(await ledgerCount(id)).toBe(0);
  });

  it('a refused payment, cancelled by a disburser, leaves the loan approved; a new key disburses it once as its next attempt, under a payment identity of its own', async () => {
    const refusing = await instance({ PAYMENT_PROVIDER_KEY: 'not-the-providers-key-0123' });
    const id = await approved(refusing.app, 18_000);
    const first = key();
    expect((await disburse(refusing.app, id, first)).status).toBe(502);
    const cancelPath = `/api/applications/${id}/disbursement/cancel`;
    expect((await call(refusing.app, tokens.approver, 'POST', cancelPath)).status).toBe(403);

    const cancelled = await call(refusing.app, tokens.disburser, 'POST', cancelPath);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({
      applicationId: id,
      idempotencyKey: first,
      state: 'cancelled',
      attempt: 0,
      amount: 18_000,
      payment: { state: 'refused' },
    });
    const read = await call(refusing.app, tokens.disburser, 'GET', `/api/applications/${id}`);
    expect(read.body.status).toBe('approved');
    expect(read.body.disbursement).toBeUndefined();
    const audit = await call(refusing.app, tokens.admin, 'GET', `/api/applications/${id}/audit`);
    expect(audit.status).toBe(200);
    expect(JSON.stringify(audit.body)).toContain('disbursement');
    const again = await call(refusing.app, tokens.disburser, 'POST', cancelPath);
    expect(again.status).toBe(409);
    expect(again.body.current).toMatchObject({ state: 'cancelled' });

    const { app } = await instance();
    const reused = await disburse(app, id, first);
    expect(reused.status).toBe(409);
    expect(reused.body.error.message).toMatch(/cancelled/);
    const second = key();
    const done = await disburse(app, id, second);
    expect(done.status).toBe(200);
    expect(done.body).toMatchObject({ applicationId: id, idempotencyKey: second, status: 'disbursed', amount: 18_000 });
    expect(paidFor(id).map((payment) => payment.idempotencyKey)).toEqual([`disbursement:${id}#1`]);
    expect(await ledgerCount(id)).toBe(1);
    expect(await record(id)).toMatchObject({
      state: 'disbursed',
      attempt: 1,
      idempotencyKey: second,
      cancelledAttempts: [{ attempt: 0, idempotencyKey: first, payment: { state: 'refused' } }],
    });
    // A callback naming the cancelled attempt completes nothing; the current attempt's is harmless.
    for (const [identity, result] of [
      [`disbursement:${id}`, 'unknown'],
      [`disbursement:${id}#1`, 'disbursed'],
    ]) {
      const body = JSON.stringify({ idempotencyKey: identity, paymentId: 'pay_late', status: 'paid' });
      const res = await webhook(app, body, await signWebhook(WEBHOOK_SECRET, body));
      expect(await res.json()).toEqual({ result });
    }
    expect(await ledgerCount(id)).toBe(1);
    expect((await disburse(app, id, key())).status).toBe(409); // disbursed: another key is refused
    await verified(app);
  });

  it('cancel: 404 for a loan without a disbursement, 409 for a payment that is pending, not refused', async () => {
    const { app } = await instance({ PAYMENT_MAX_ATTEMPTS: '1', PAYMENT_BREAKER_FAILURES: '100' });
    const [idle, waiting] = [await approved(app, 19_000), await approved(app, 19_001)];
    expect((await call(app, tokens.disburser, 'POST', `/api/applications/${idle}/disbursement/cancel`)).status).toBe(
      404,
    );
    sim.setFaults({ mode: 'error', duplicateWebhooks: 0 });
    expect((await disburse(app, waiting, key())).status).toBe(202);
    const refused = await call(app, tokens.disburser, 'POST', `/api/applications/${waiting}/disbursement/cancel`);
    expect(refused.status).toBe(409);
    expect(refused.body.current).toMatchObject({ state: 'disbursing', payment: { state: 'pending' } });
    sim.setFaults({ mode: 'ok', duplicateWebhooks: 0 });
    expect((await disburse(app, waiting, (await record(waiting))!.idempotencyKey as string)).status).toBe(200);
  });

  it('without a webhook secret the route answers 404; without a provider URL nothing changes', async () => {
    const { app } = await createTestApp(database.db, keys);
    current = app;
    const body = '{"idempotencyKey":"disbursement:x","paymentId":"p","status":"paid"}';
    expect((await webhook(app, body, await signWebhook(WEBHOOK_SECRET, body))).status).toBe(404);
    const calls = sim.state().calls;
    const id = await approved(app, 16_000);
    const res = await disburse(app, id, key());
    expect(res.status).toBe(200);
    expect(sim.state().calls).toBe(calls);
    expect((await record(id))?.payment).toBeUndefined();
  });
});
