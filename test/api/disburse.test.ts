// Disbursement over HTTP: the Idempotency-Key contract (428/400, same key -> same body, other key -> 409),
// permissions, one ledger entry per loan under 20 concurrent requests on three app instances, a loan's
// ledger, and /api/ledger/verify naming a tampered entry.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { APPLICATIONS_COLLECTION } from '../../shared/loans/applications.ts';
import { AUDIT_COLLECTION } from '../../shared/loans/audit.ts';
import { DISBURSEMENTS_COLLECTION } from '../../shared/loans/disbursements.ts';
import { LEDGER_COLLECTION } from '../../shared/loans/ledger.ts';
import { createTestApp, randomJwtKeys } from '../support/app.ts';
import { approvedApplication } from '../support/applications.ts';
import { adminsByRole, call } from '../support/http.ts';
import { openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';

type App = ReturnType<typeof createApp>;

let database: TestDatabase;
let apps: App[];
let tokens: Record<Role, string>;
const roles: Role[] = ['viewer', 'approver', 'disburser', 'admin'];

const key = () => crypto.randomUUID();

/** Three instances on one database, sharing the signing key so a token works on each. */
async function threeInstances(db: TestDatabase['db']) {
  // Shared signing and ledger keys, so a token works on each instance and each appends to one chain.
  const keys = { JWT_KEYS: randomJwtKeys(), LEDGER_KEYS: randomJwtKeys('ledger') };
  const instances = await Promise.all([1, 2, 3].map(() => createTestApp(db, keys)));
  const apps = instances.map((instance) => instance.app);
  const { tokens } = await adminsByRole(apps[0]!, instances[0]!.services, roles);
  return { apps, services: instances[0]!.services, tokens };
}

const approved = (loanAmount = 25_000, on = { apps, tokens }) =>
  approvedApplication(
    on.apps[0]!,
    { preparer: on.tokens.admin, approver: on.tokens.approver },
    { applicantName: 'Ada Borrower', monthlyIncome: 6000, loanAmount, termMonths: 36 },
  );

function disburse(
  id: string,
  idempotencyKey: string | undefined,
  options: { app?: App; as?: Role; tokens?: Record<Role, string> } = {},
) {
  const headers: Record<string, string> = idempotencyKey === undefined ? {} : { 'idempotency-key': idempotencyKey };
  return call(
    options.app ?? apps[0]!,
    (options.tokens ?? tokens)[options.as ?? 'disburser'],
    'POST',
    `/api/applications/${id}/disburse`,
    {
      headers,
    },
  );
}

const ledgerCount = (loanId: string) => database.db.collection(LEDGER_COLLECTION).countDocuments({ loanId });

describe(`POST /api/applications/:id/disburse on ${target().kind}`, () => {
  beforeAll(async () => {
    database = await openTestDatabase(import.meta.filename);
    ({ apps, tokens } = await threeInstances(database.db));
  });
  afterAll(async () => {
    await database.close();
  });

  it('428 without Idempotency-Key, 400 for a malformed one, 403 without status:disbursed; nothing written', async () => {
    const id = await approved();
    const missing = await disburse(id, undefined);
    expect(missing.status).toBe(428);
    expect(missing.body.error.code).toBe('precondition_required');
    for (const bad of ['short', 'has space in it', 'x'.repeat(129), '"unterminated']) {
      const res = await disburse(id, bad);
      expect(res.status, bad).toBe(400);
      expect(res.body.error.details[0].path).toBe('idempotency-key');
    }
    for (const as of ['approver', 'viewer'] as const) {
      const refused = await disburse(id, key(), { as });
      expect(refused.status, as).toBe(403);
      expect(refused.body.error.code).toBe('forbidden');
    }
    expect(await database.db.collection(DISBURSEMENTS_COLLECTION).countDocuments({ _id: id as never })).toBe(0);
    expect(await ledgerCount(id)).toBe(0);
  });

  it('404 for an unknown application; 400 for one that is not approved, with nothing written', async () => {
    const unknown = await disburse('APP-00000000-no-such-loan', key());
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('not_found');
    const created = await call(apps[0]!, tokens.admin, 'POST', '/api/applications', {
      body: { applicantName: 'Pending Person', monthlyIncome: 3000, loanAmount: 1000, termMonths: 12 },
    });
    const res = await disburse(created.body._id, key());
    expect(res.status).toBe(400);
    expect(res.body.error.details).toMatchObject({ reason: 'invalid_transition', from: 'pending' });
    // Counted for this loan: earlier tests (in any order) disbursed others.
    const id = created.body._id as string;
    expect(await database.db.collection(DISBURSEMENTS_COLLECTION).countDocuments({ _id: id as never })).toBe(0);
    expect(await ledgerCount(id)).toBe(0);
  });

  it('disburses once: approved -> disbursed, one fenced ledger entry, audit per version; the same key returns the same body', async () => {
    const id = await approved(42_000);
    const idempotencyKey = key();
    const first = await disburse(id, idempotencyKey);
    expect(first.status).toBe(200);
    expect(first.body).toEqual({
      applicationId: id,
      idempotencyKey,
      amount: 42_000,
      ledgerSeq: expect.any(Number),
      disbursedAt: expect.any(String),
      status: 'disbursed',
    });

    const app = await call(apps[1]!, tokens.viewer, 'GET', `/api/applications/${id}`);
    expect(app.body).toMatchObject({
      status: 'disbursed',
      version: 5, // create 1, under_review 2, approved 3, intent 4, disbursed 5
      disbursement: { idempotencyKey, amount: 42_000, state: 'disbursed', ledgerSeq: first.body.ledgerSeq },
    });
    const audit = await database.db
      .collection(AUDIT_COLLECTION)
      .find({ applicationId: id, version: { $in: [4, 5] } })
      .sort({ version: 1 })
      .toArray();
    expect(audit.map((a) => [a.from, a.to])).toEqual([
      ['approved', 'approved'],
      ['approved', 'disbursed'],
    ]);

    const ledger = await call(apps[2]!, tokens.disburser, 'GET', `/api/applications/${id}/ledger`);
    expect(ledger.status).toBe(200);
    expect(ledger.body.entries).toHaveLength(1);
    expect(ledger.body.entries[0]).toMatchObject({
      seq: first.body.ledgerSeq,
      loanId: id,
      type: 'disbursement',
      amount: 42_000,
      at: first.body.disbursedAt,
      idempotencyKey: `disbursement:${id}`,
      fence: { key: `loan:${id}`, token: expect.any(Number) },
    });

    // Sequential retries, on other instances and in the RFC 8941 quoted form: the same answer.
    expect(await disburse(id, idempotencyKey, { app: apps[1] })).toMatchObject({ status: 200, body: first.body });
    expect(await disburse(id, `"${idempotencyKey}"`, { app: apps[2] })).toMatchObject({
      status: 200,
      body: first.body,
    });
    const other = await disburse(id, key());
    expect(other.status).toBe(409);
    expect(other.body.current).toMatchObject({ applicationId: id, idempotencyKey, state: 'disbursed' });
    expect(await ledgerCount(id)).toBe(1);
  });

  it('the same key 10 times at once on three instances: ten identical 200s, one entry', async () => {
    const id = await approved();
    const idempotencyKey = key();
    const replies = await Promise.all(
      Array.from({ length: 10 }, (_, i) => disburse(id, idempotencyKey, { app: apps[i % 3] })),
    );
    expect(replies.map((r) => r.status)).toEqual(Array(10).fill(200));
    for (const reply of replies) expect(reply.body).toEqual(replies[0]!.body);
    expect(await ledgerCount(id)).toBe(1);
  });

  it('20 concurrent disbursements of one loan with 20 different keys: one 200, nineteen 409, one ledger entry', async () => {
    const id = await approved(77_000);
    const keys = Array.from({ length: 20 }, key);
    const started = Date.now();
    const replies = await Promise.all(keys.map((k, i) => disburse(id, k, { app: apps[i % 3] })));
    const elapsed = Date.now() - started;
    const winners = replies.filter((r) => r.status === 200);
    const losers = replies.filter((r) => r.status === 409);
    expect(winners).toHaveLength(1);
    expect(losers).toHaveLength(19);
    const winner = winners[0]!.body;
    expect(keys).toContain(winner.idempotencyKey);
    for (const loser of losers) {
      expect(loser.body.current).toMatchObject({ applicationId: id, idempotencyKey: winner.idempotencyKey });
    }
    expect(await ledgerCount(id)).toBe(1);
    const app = await database.db.collection(APPLICATIONS_COLLECTION).findOne({ _id: id as never });
    expect(app).toMatchObject({ status: 'disbursed', disbursement: { idempotencyKey: winner.idempotencyKey } });
    const verify = await call(apps[1]!, tokens.admin, 'GET', '/api/ledger/verify');
    expect(verify.body).toMatchObject({ ok: true });
    console.log(`20 keys at once on 3 instances: 1 winner, 19 x 409 in ${elapsed} ms`);
  });

  it("GET a loan's ledger: 404 for an unknown application, empty before disbursement", async () => {
    expect(
      (await call(apps[0]!, tokens.disburser, 'GET', '/api/applications/APP-00000000-missing/ledger')).status,
    ).toBe(404);
    const id = await approved();
    const empty = await call(apps[0]!, tokens.disburser, 'GET', `/api/applications/${id}/ledger`);
    expect(empty).toMatchObject({ status: 200, body: { applicationId: id, entries: [] } });
    expect((await call(apps[0]!, tokens.viewer, 'GET', `/api/applications/${id}/ledger`)).status).toBe(403);
  });

  it('GET /api/ledger/verify is admin-only and names a tampered entry (reason hash) and a deleted one (gap)', async () => {
    // A database of its own with three entries of its own: the test breaks the chain on purpose, and
    // must neither depend on nor break the other tests' ledger, whatever the order.
    const own = await openTestDatabase(import.meta.filename);
    try {
      const { apps, tokens } = await threeInstances(own.db);
      for (let i = 0; i < 3; i++) {
        const id = await approved(25_000, { apps, tokens });
        expect((await disburse(id, key(), { app: apps[0], tokens })).status).toBe(200);
      }
      expect((await call(apps[0]!, tokens.disburser, 'GET', '/api/ledger/verify')).status).toBe(403);
      const intact = await call(apps[0]!, tokens.admin, 'GET', '/api/ledger/verify');
      expect(intact.body).toMatchObject({ ok: true, entries: 3 });
      expect(intact.body.firstBroken).toBeUndefined();

      const entries = own.db.collection<{ _id: number; amount: number }>(LEDGER_COLLECTION);
      await entries.updateOne({ _id: 2 }, { $inc: { amount: 1_000_000 } });
      const tampered = await call(apps[1]!, tokens.admin, 'GET', '/api/ledger/verify');
      expect(tampered.body).toMatchObject({ ok: false, entries: 1, firstBroken: { seq: 2, reason: 'hash' } });

      await entries.updateOne({ _id: 2 }, { $inc: { amount: -1_000_000 } });
      expect((await call(apps[1]!, tokens.admin, 'GET', '/api/ledger/verify')).body.ok).toBe(true);
      await entries.deleteOne({ _id: 2 });
      const deleted = await call(apps[2]!, tokens.admin, 'GET', '/api/ledger/verify');
      expect(deleted.body).toMatchObject({ ok: false, firstBroken: { seq: 2, reason: 'gap' } });
    } finally {
      await own.close();
    }
  });
});
