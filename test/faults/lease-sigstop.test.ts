// Fault: a lease holder frozen (SIGSTOP) past its lease while another process takes the lease over and
// writes; resumed (SIGCONT), it attempts every guarded write with its old token. Each must be refused,
// and the resources keep exactly what the new holder wrote.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimFence, FENCES_COLLECTION, fencedUpdate, LockManager } from '../../shared/concurrency/leases.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { Ledger, LedgerKeys, ledgerFenceResource, ledgerIndexes, loanLockKey } from '../../shared/loans/ledger.ts';
import { mongoUrl, openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';

const fixture = fileURLToPath(new URL('../fixtures/fault-lease-holder.ts', import.meta.url));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe(`a lease holder frozen past its lease, on ${target().kind}`, () => {
  let tdb: TestDatabase;

  beforeAll(async () => {
    tdb = await openTestDatabase(import.meta.filename);
    await ensureIndexes(tdb.db, [ledgerIndexes]);
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

    const child = spawn(process.execPath, [fixture, mongoUrl(), tdb.name, loanId, String(ttlMs)], { stdio: 'pipe' });
    const events: Record<string, unknown>[] = [];
    let stderr = '';
    let buffered = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) events.push(JSON.parse(line));
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const eventually = async (name: string) => {
      const until = performance.now() + 20_000;
      while (performance.now() < until) {
        const event = events.find((e) => e.event === name);
        if (event) return event;
        if (child.exitCode !== null) break;
        await sleep(10);
      }
      throw new Error(`child never reported "${name}"; events ${JSON.stringify(events)}; stderr:\n${stderr}`);
    };

    try {
      const oldToken = (await eventually('acquired')).token as number;
      child.kill('SIGSTOP');
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

      child.stdin.write('go\n');
      child.kill('SIGCONT');
      expect(await exited).toBe(0);
      const outcome = (name: string) => events.find((e) => e.event === name)?.outcome;
      expect(outcome('fencedUpdate')).toBe('stale_token');
      expect(outcome('claimFence')).toBe('stale_token');
      expect(outcome('ledgerAppend')).toBe('stale_token');
      expect(outcome('renew')).toBe('refused');

      // Nothing the old holder tried is there.
      expect(await loans.findOne({ _id: loanId })).toMatchObject({ status: `paid by ${lease!.token}` });
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
      if (child.exitCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
      }
    }
  }, 60_000);
});
