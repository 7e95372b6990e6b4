// Fault: a lease holder frozen (SIGSTOP) past its lease while another process takes the lease over and
// writes; resumed (SIGCONT), it attempts every guarded write with its old token. Each must be refused,
// and the resources keep exactly what the new holder wrote.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimFence, FENCES_COLLECTION, fencedUpdate, LockManager } from '../../shared/concurrency/leases.ts';
import { Ledger, LedgerKeys, ledgerFenceResource, ledgerIndexes, loanLockKey } from '../../shared/loans/ledger.ts';
import { mongoUrl, openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';
import { startNode } from '../support/processes.ts';

const fixture = fileURLToPath(new URL('../fixtures/lease-holder.ts', import.meta.url));

describe(`a lease holder frozen past its lease, on ${target().kind}`, () => {
  let tdb: TestDatabase;

  beforeAll(async () => {
    tdb = await openTestDatabase(import.meta.filename, { indexes: [ledgerIndexes] });
  });
  afterAll(async () => {
    await tdb.close();
  });

  it('SIGSTOP past the TTL, SIGCONT: fencedUpdate, claimFence, ledger append and renew with the old token are all refused', async () => {
    const loanId = 'APP-fault-sigstop-1';
    const ttlMs = 1_500;
    const loans = tdb.db.collection<{ _id: string; status: string }>('loans');
    await loans.insertOne({ _id: loanId, status: 'approved' });
    const ledger = new Ledger(tdb.db, {
      keys: new LedgerKeys(new Map([['k1', crypto.getRandomValues(new Uint8Array(32))]])),
    });

    const holder = startNode(fixture, {
      args: [mongoUrl(), tdb.name, loanId, String(ttlMs), '--loan', '--collection', 'loans'],
      stdin: true,
    });

    try {
      const oldToken = (await holder.event('acquired')).token as number;
      holder.child.kill('SIGSTOP');
      const frozenAt = performance.now();
      const locks = new LockManager(tdb.db, { owner: 'successor' });
      expect(await locks.acquire(loanLockKey(loanId), { waitMs: 0 })).toBeNull(); // still its lease
      const lease = await locks.acquire(loanLockKey(loanId), { ttlMs: 30_000, waitMs: 20_000 });
      expect(lease).not.toBeNull();
      expect(performance.now() - frozenAt).toBeGreaterThan(ttlMs - 500); // taken only once the TTL ran out
      expect(lease!.token).toBeGreaterThan(oldToken);

      // The successor does its work under the new token on every resource.
      await fencedUpdate(loans, { _id: loanId }, { $set: { status: `paid by ${lease!.token}` } }, lease!);
      await claimFence(tdb.db, `payout:${loanId}`, lease!);
      const written = await ledger.append(
        { loanId, type: 'disbursement', amount: 1_000, idempotencyKey: `fresh-${lease!.token}` },
        { lease: lease! },
      );
      const headBefore = await ledger.head();

      expect(await holder.resume('go')).toBe(0);
      expect(holder.reported('fencedUpdate')?.outcome).toBe('stale_token');
      expect(holder.reported('claimFence')?.outcome).toBe('stale_token');
      expect(holder.reported('ledgerAppend')?.outcome).toBe('stale_token');
      expect(holder.reported('renew')?.outcome).toBe('refused');

      // Nothing the old holder tried is there.
      expect(await loans.findOne({ _id: loanId })).toMatchObject({ status: `paid by ${lease!.token}` });
      expect(await loans.findOne({ _id: loanId })).not.toHaveProperty('entries');
      const fences = tdb.db.collection<{ _id: string; token: number }>(FENCES_COLLECTION);
      expect((await fences.findOne({ _id: `payout:${loanId}` }))?.token).toBe(lease!.token);
      expect((await fences.findOne({ _id: ledgerFenceResource(loanId) }))?.token).toBe(lease!.token);
      expect(await ledger.entriesForLoan(loanId)).toEqual([written.entry]);
      expect(await ledger.head()).toEqual(headBefore);
      expect((await ledger.verify()).ok).toBe(true);
      expect(await locks.release(lease!)).toBe(true);
      console.log(
        `old token ${oldToken} refused on all 3 writes and on renew after a freeze of ${Math.round(performance.now() - frozenAt)} ms (TTL ${ttlMs} ms); new token ${lease!.token}`,
      );
    } finally {
      await holder.kill();
    }
  }, 60_000);
});
