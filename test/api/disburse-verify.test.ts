// GET /api/ledger/verify against someone who can write to the database but holds no ledger key: a suffix
// edited and rehashed with plain SHA-256 (head moved along), a cut tail (head moved back), a deleted
// disbursement record, an entry moved to another loan. Each is named: where the chain breaks, and which
// application, disbursement record and ledger entry disagree. The database is restored after each case.
import { afterEach, beforeAll, afterAll as cleanup, describe, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import type { LedgerDoc } from '../../shared/loans/ledger.ts';
import { createTestApp, randomJwtKeys } from '../support/app.ts';
import { approvedApplication } from '../support/applications.ts';
import { adminsByRole, call } from '../support/http.ts';
import { plainLedgerHash } from '../support/ledger.ts';
import { openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';

let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
let tokens: Record<Role, string>;
/** Disbursed loans in ledger order: [applicationId, seq, amount]. */
const disbursed: { id: string; seq: number; amount: number }[] = [];
let approvedOnly: string;

const tampered = ['ledger', 'ledger_heads', 'disbursements', 'applications'];
let snapshot: Record<string, RawDoc[]> = {};

const approved = (loanAmount: number) =>
  approvedApplication(
    app,
    { preparer: tokens.reviewer, approver: tokens.approver },
    { applicantName: 'Vera Verify', monthlyIncome: 7000, loanAmount, termMonths: 24 },
  );

const verify = async () => {
  const res = await call(app, tokens.admin, 'GET', '/api/ledger/verify');
  expect(res.status).toBe(200);
  return res.body;
};

// biome-ignore lint/suspicious/noExplicitAny: raw documents of four collections, edited as an attacker would
type RawDoc = { _id: number | string; [field: string]: any };
const raw = (name: string) => database.db.collection<RawDoc>(name);

/**
 * What a database writer without the key can do: rewrite entries from `from` on with the documented
 * plain SHA-256 encoding (no kid), relinked, and move the head to the new last hash.
 */
async function rehashFrom(from: number, edit: (entry: RawDoc) => void): Promise<void> {
  const entries = (await raw('ledger').find({}).sort({ _id: 1 }).toArray()) as (RawDoc & { _id: number })[];
  let prevHash = entries.find((e) => e._id === from - 1)?.hash ?? '0'.repeat(64);
  for (const entry of entries.filter((e) => e._id >= from)) {
    if (entry._id === from) edit(entry);
    delete entry.kid;
    entry.prevHash = prevHash;
    entry.hash = plainLedgerHash(entry as LedgerDoc);
    prevHash = entry.hash;
    await raw('ledger').replaceOne({ _id: entry._id }, entry);
  }
  await raw('ledger_heads').updateOne({ _id: 'ledger' }, { $set: { seq: entries.at(-1)!._id, hash: prevHash } });
}

describe(`GET /api/ledger/verify against a database writer on ${target().kind}`, () => {
  beforeAll(async () => {
    database = await openTestDatabase(import.meta.filename);
    ({ app, services } = await createTestApp(database.db, { LEDGER_KEYS: randomJwtKeys('ledger1') }));
    // Four eyes: one admin prepares, another approves, a third disburses.
    ({ tokens } = await adminsByRole(app, services, ['reviewer', 'approver', 'disburser', 'admin']));
    for (const amount of [11_000, 22_000, 33_000, 44_000]) {
      const id = await approved(amount);
      const res = await call(app, tokens.disburser, 'POST', `/api/applications/${id}/disburse`, {
        headers: { 'idempotency-key': crypto.randomUUID() },
      });
      expect(res.status).toBe(200);
      disbursed.push({ id, seq: res.body.ledgerSeq, amount });
    }
    approvedOnly = await approved(55_000);
    for (const name of tampered) snapshot[name] = await raw(name).find({}).toArray();
  });
  afterEach(async () => {
    for (const name of tampered) {
      await raw(name).deleteMany({});
      if (snapshot[name]!.length > 0) await raw(name).insertMany(snapshot[name]!);
    }
  });
  cleanup(async () => {
    snapshot = {};
    await database.close();
  });

  it('an intact ledger: ok, every disbursement cross-checked, nothing named', async () => {
    const body = await verify();
    expect(body).toMatchObject({ ok: true, entries: 4, head: { seq: 4 }, mismatches: [] });
    expect(body.firstBroken).toBeUndefined();
  });

  it('verify while loans are being disbursed: a disbursement in flight is never reported', async () => {
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push(await approved(60_000 + i));
    let disbursing = true;
    const answers: { ok: boolean; mismatches: unknown[] }[] = [];
    const verifier = (async () => {
      while (disbursing) answers.push(await verify());
    })();
    await Promise.all(
      ids.map(async (id) => {
        const res = await call(app, tokens.disburser, 'POST', `/api/applications/${id}/disburse`, {
          headers: { 'idempotency-key': crypto.randomUUID() },
        });
        expect(res.status).toBe(200);
      }),
    );
    disbursing = false;
    await verifier;
    answers.push(await verify());
    expect(answers.length).toBeGreaterThan(1);
    for (const answer of answers) expect(answer).toMatchObject({ ok: true, mismatches: [] });
  });

  it('a suffix edited and rehashed without the key, head moved along: the first rewritten entry and the amount it contradicts', async () => {
    const victim = disbursed[1]!;
    await rehashFrom(victim.seq, (entry) => {
      entry.amount = 9_000_000;
    });
    const body = await verify();
    expect(body.ok).toBe(false);
    expect(body.firstBroken).toMatchObject({ seq: victim.seq, reason: 'legacy' });
    expect(body.mismatches).toContainEqual(
      expect.objectContaining({ code: 'amount_mismatch', applicationId: victim.id, seq: victim.seq }),
    );
  });

  it('a cut tail, head moved back to the new last entry: the disbursement whose entry is gone', async () => {
    const last = disbursed.at(-1)!;
    const before = await raw('ledger').findOne({ _id: last.seq - 1 });
    await raw('ledger').deleteOne({ _id: last.seq });
    await raw('ledger_heads').updateOne({ _id: 'ledger' }, { $set: { seq: last.seq - 1, hash: before!.hash } });
    const body = await verify();
    expect(body.ok).toBe(false);
    expect(body.firstBroken).toBeUndefined(); // what is left is a valid chain...
    expect(body.mismatches).toContainEqual(
      expect.objectContaining({ code: 'entry_missing', applicationId: last.id, seq: last.seq }),
    );
  });

  it('a deleted disbursement record: the ledger entry and the application left without it', async () => {
    const victim = disbursed[2]!;
    await raw('disbursements').deleteOne({ _id: victim.id });
    const body = await verify();
    expect(body.ok).toBe(false);
    expect(body.firstBroken).toBeUndefined();
    expect(body.mismatches).toContainEqual(
      expect.objectContaining({ code: 'record_missing', applicationId: victim.id, seq: victim.seq }),
    );
  });

  it('an entry moved to another loan (rehashed without the key): the break, the loan it left and the loan it names', async () => {
    const victim = disbursed[0]!;
    await rehashFrom(victim.seq, (entry) => {
      entry.loanId = approvedOnly;
    });
    const body = await verify();
    expect(body.ok).toBe(false);
    expect(body.firstBroken).toMatchObject({ seq: victim.seq, reason: 'legacy' });
    expect(body.mismatches).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ code: 'entry_other_loan', applicationId: victim.id, seq: victim.seq }),
        expect.objectContaining({ code: 'record_missing', applicationId: approvedOnly, seq: victim.seq }),
      ]),
    );
  });
});
