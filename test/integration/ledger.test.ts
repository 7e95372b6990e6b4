// The keyed hash chain against the MongoDB target: the documented HMAC, contiguous seq under concurrent
// appenders, idempotent appends, fencing, a head left behind by a crash, verify naming the first broken
// entry after tampering or deletion (with and without the key), key rotation, and re-keying plain SHA-256
// entries written before keying without opening a downgrade.
import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LockManager } from '../../shared/concurrency/leases.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { ConflictError, StaleTokenError, ValidationError } from '../../shared/core/errors.ts';
import {
  entryHash,
  GENESIS_HASH,
  LEDGER_HEADS_COLLECTION,
  Ledger,
  type LedgerDoc,
  type LedgerHeadDoc,
  LedgerKeys,
  ledgerIndexes,
  loanLockKey,
} from '../../shared/loans/ledger.ts';
import { plainLedgerHash } from '../support/ledger.ts';
import { openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';
import { sleep } from '../support/wait.ts';

let tdb: TestDatabase;

const secret = (fill: number) => Buffer.alloc(32, fill).toString('base64');
const keys = LedgerKeys.parse(`k1:${secret(1)}`);

/** Each test gets its own chain (collection + head), with the ledger's indexes. */
async function freshLedger(name: string, withKeys = keys): Promise<Ledger> {
  await ensureIndexes(tdb.db, [{ ...ledgerIndexes, collection: name }]);
  return new Ledger(tdb.db, { collection: name, keys: withKeys });
}

/** What a database writer without the key can do: rewrite entries from `from` on with plain SHA-256, relinked, head moved. */
async function rehashPlain(name: string, from: number, options: { keepKid: boolean; edit?: (doc: LedgerDoc) => void }) {
  const docs = await tdb.db.collection<LedgerDoc>(name).find({}).sort({ _id: 1 }).toArray();
  let prevHash = docs.find((d) => d._id === from - 1)?.hash ?? GENESIS_HASH;
  for (const doc of docs.filter((d) => d._id >= from)) {
    if (doc._id === from) options.edit?.(doc);
    if (!options.keepKid) delete doc.kid;
    doc.prevHash = prevHash;
    doc.hash = plainLedgerHash(doc);
    prevHash = doc.hash;
    await tdb.db.collection<LedgerDoc>(name).replaceOne({ _id: doc._id }, doc);
  }
  await tdb.db
    .collection<LedgerHeadDoc>(LEDGER_HEADS_COLLECTION)
    .updateOne({ _id: name }, { $set: { seq: docs.at(-1)!._id, hash: prevHash } });
}

describe(`ledger on ${target().kind}`, () => {
  beforeAll(async () => {
    tdb = await openTestDatabase(import.meta.filename);
  });
  afterAll(async () => {
    await tdb.close();
  });

  it('chains entries: seq 1..n, prevHash links, and the hash is the HMAC-SHA-256 of the documented encoding', async () => {
    const ledger = await freshLedger('chain');
    const a = await ledger.append({ loanId: 'APP-a', type: 'disbursement', amount: 1200, idempotencyKey: 'k-a' });
    const b = await ledger.append({ loanId: 'APP-b', type: 'disbursement', amount: 35_000 });
    expect(a.created).toBe(true);
    expect(a.entry.seq).toBe(1);
    expect(a.entry.prevHash).toBe(GENESIS_HASH);
    expect(b.entry.seq).toBe(2);
    expect(b.entry.prevHash).toBe(a.entry.hash);
    // Recomputed here with node:crypto from the encoding the module header documents.
    expect(a.entry.kid).toBe('k1');
    const expected = createHmac('sha256', Buffer.alloc(32, 1))
      .update(
        JSON.stringify([
          'loan-ledger/v2',
          'k1',
          1,
          'APP-a',
          'disbursement',
          1200,
          a.entry.at.toISOString(),
          'k-a',
          null,
          GENESIS_HASH,
          null,
        ]),
        'utf8',
      )
      .digest('hex');
    expect(a.entry.hash).toBe(expected);
    const stored = await ledger.entries.findOne({ _id: 2 });
    expect(stored?.hash).toBe(b.entry.hash);
    expect(await ledger.head()).toEqual({ seq: 2, hash: b.entry.hash });
    expect(await ledger.verify()).toEqual({ ok: true, entries: 2, head: { seq: 2, hash: b.entry.hash } });
    expect((await ledger.entriesForLoan('APP-b')).map((e) => e.seq)).toEqual([2]);
  });

  it('refuses malformed input before writing anything', async () => {
    const ledger = await freshLedger('malformed');
    await expect(ledger.append({ loanId: 'APP-x', type: 'disbursement', amount: 10.5 })).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(ledger.append({ loanId: 'APP-x', type: 'disbursement', amount: -5 })).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(ledger.append({ loanId: '', type: 'disbursement', amount: 5 })).rejects.toBeInstanceOf(
      ValidationError,
    );
    expect(await ledger.entries.countDocuments({})).toBe(0);
  });

  it('10 writers x 20 loans appending at once: 200 entries, contiguous seq, the chain verifies', async () => {
    const ledger = await freshLedger('concurrent');
    const writers = Array.from({ length: 10 }, () => new Ledger(tdb.db, { collection: 'concurrent', keys }));
    await Promise.all(
      writers.map(async (writer, w) => {
        for (let loan = 0; loan < 20; loan++) {
          await writer.append({
            loanId: `APP-loan-${loan}`,
            type: 'disbursement',
            amount: 100 + w,
            idempotencyKey: `w${w}:l${loan}`,
          });
        }
      }),
    );
    const seqs = (
      await ledger.entries
        .find({}, { projection: { _id: 1 } })
        .sort({ _id: 1 })
        .toArray()
    ).map((d) => d._id);
    expect(seqs).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    const verified = await ledger.verify({ batchSize: 37 });
    expect(verified).toMatchObject({ ok: true, entries: 200, head: { seq: 200 } });
    expect(writers.reduce((sum, w) => sum + w.stats.appended, 0)).toBe(200);
    expect(await ledger.entriesForLoan('APP-loan-7')).toHaveLength(10);
    // Ten writers on one tail must have lost races; each loss was retried, not dropped.
    const collisions = writers.reduce((sum, w) => sum + w.stats.seqCollisions, 0);
    console.log(`10 x 20 appends: ${collisions} lost seq races retried`);
  });

  it('the same idempotency key, sequential and 20 racers at once: one entry, every caller gets it', async () => {
    const ledger = await freshLedger('idempotent');
    const input = { loanId: 'APP-idem', type: 'disbursement' as const, amount: 5000, idempotencyKey: 'disb:APP-idem' };
    const first = await ledger.append(input);
    const again = await ledger.append(input);
    expect(again.created).toBe(false);
    expect(again.entry).toEqual(first.entry);

    const racers = Array.from({ length: 20 }, () => new Ledger(tdb.db, { collection: 'idempotent', keys }));
    const input2 = { ...input, loanId: 'APP-idem-2', idempotencyKey: 'disb:APP-idem-2' };
    const results = await Promise.all(racers.map((racer) => racer.append(input2)));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(new Set(results.map((r) => r.entry.seq))).toEqual(new Set([2]));
    expect(await ledger.entries.countDocuments({})).toBe(2);
    expect((await ledger.verify()).ok).toBe(true);

    // The key is an identity: reusing it for another movement is a conflict, not a silent second entry.
    await expect(ledger.append({ ...input, amount: 6000 })).rejects.toBeInstanceOf(ConflictError);
    expect(await ledger.entries.countDocuments({})).toBe(2);
  });

  it('a stale fencing token is refused (StaleTokenError) and writes nothing', async () => {
    const ledger = await freshLedger('fenced');
    const locks = new LockManager(tdb.db);
    const key = loanLockKey('APP-fenced');
    const old = await locks.acquire(key, { ttlMs: 300 });
    expect(old).not.toBeNull();
    await sleep(600); // the old holder is paused past its lease...
    const current = await locks.acquire(key, { ttlMs: 10_000 });
    expect(current!.token).toBeGreaterThan(old!.token);
    const written = await ledger.append(
      { loanId: 'APP-fenced', type: 'disbursement', amount: 700, idempotencyKey: 'f-1' },
      { lease: current! },
    );
    expect(written.entry.fence).toEqual({ key, token: current!.token });
    const headBefore = await ledger.head();
    // ...and wakes up to append under its old token.
    await expect(
      ledger.append(
        { loanId: 'APP-fenced', type: 'disbursement', amount: 700, idempotencyKey: 'f-2' },
        { lease: old! },
      ),
    ).rejects.toBeInstanceOf(StaleTokenError);
    expect(await ledger.entries.countDocuments({})).toBe(1);
    expect(await ledger.head()).toEqual(headBefore);
    await locks.release(current!);
    expect((await ledger.verify()).ok).toBe(true);
  });

  it('a head left behind (crash between insert and head move) is moved on by the next append', async () => {
    const ledger = await freshLedger('lagging');
    await ledger.append({ loanId: 'APP-l', type: 'disbursement', amount: 1 });
    const second = await ledger.append({ loanId: 'APP-l', type: 'disbursement', amount: 2 });
    const first = await ledger.entryBySeq(1);
    // The state a crash after inserting seq 2 but before moving the head leaves behind.
    await tdb.db
      .collection<LedgerHeadDoc>(LEDGER_HEADS_COLLECTION)
      .updateOne({ _id: 'lagging' }, { $set: { seq: 1, hash: first!.hash } });
    expect((await ledger.verify()).ok).toBe(true);
    const third = await ledger.append({ loanId: 'APP-l', type: 'disbursement', amount: 3 });
    expect(third.entry.seq).toBe(3);
    expect(third.entry.prevHash).toBe(second.entry.hash);
    expect(ledger.stats.seqCollisions).toBe(1);
    expect(await ledger.verify()).toMatchObject({ ok: true, entries: 3, head: { seq: 3 } });
  });

  describe('verify names the first broken entry', () => {
    const seed = async (name: string, n: number) => {
      const ledger = await freshLedger(name);
      for (let i = 1; i <= n; i++)
        await ledger.append({ loanId: `APP-${i % 3}`, type: 'disbursement', amount: i * 100 });
      expect(await ledger.verify()).toMatchObject({ ok: true, entries: n });
      return ledger;
    };
    const raw = (name: string) => tdb.db.collection<LedgerDoc>(name);

    it('an amount changed in the database: reason hash at that seq', async () => {
      const ledger = await seed('tamper-amount', 6);
      await raw('tamper-amount').updateOne({ _id: 4 }, { $set: { amount: 999_999 } });
      expect(await ledger.verify()).toMatchObject({ ok: false, entries: 3, firstBroken: { seq: 4, reason: 'hash' } });
    });

    it('an entry edited and re-hashed with the key: the next entry no longer links (reason link)', async () => {
      const ledger = await seed('tamper-rehash', 6);
      const doc = (await raw('tamper-rehash').findOne({ _id: 3 }))!;
      const { _id, hash: _old, ...rest } = doc;
      const forged = { ...rest, amount: 1 };
      await raw('tamper-rehash').updateOne(
        { _id: 3 },
        { $set: { amount: 1, hash: await entryHash({ seq: _id, ...forged }, keys) } },
      );
      expect(await ledger.verify()).toMatchObject({ ok: false, firstBroken: { seq: 4, reason: 'link' } });
    });

    it('the last entry edited and re-hashed with the key: the head no longer matches it (reason link)', async () => {
      const ledger = await seed('tamper-last', 4);
      const doc = (await raw('tamper-last').findOne({ _id: 4 }))!;
      const { _id, hash: _old, ...rest } = doc;
      await raw('tamper-last').updateOne(
        { _id: 4 },
        { $set: { amount: 1, hash: await entryHash({ seq: _id, ...rest, amount: 1 }, keys) } },
      );
      expect(await ledger.verify()).toMatchObject({ ok: false, firstBroken: { seq: 4, reason: 'link' } });
    });

    it('an entry deleted from the middle: reason gap at its seq', async () => {
      const ledger = await seed('delete-middle', 6);
      await raw('delete-middle').deleteOne({ _id: 2 });
      expect(await ledger.verify()).toMatchObject({ ok: false, entries: 1, firstBroken: { seq: 2, reason: 'gap' } });
    });

    it('the last entry deleted: the head still names it (reason gap)', async () => {
      const ledger = await seed('delete-last', 5);
      await raw('delete-last').deleteOne({ _id: 5 });
      expect(await ledger.verify()).toMatchObject({ ok: false, entries: 4, firstBroken: { seq: 5, reason: 'gap' } });
    });

    it('a suffix edited and rehashed with plain SHA-256 (no key), head moved along: reason hash at the edit', async () => {
      const ledger = await seed('rehash-plain', 6);
      await rehashPlain('rehash-plain', 3, { keepKid: true, edit: (doc) => (doc.amount = 1) });
      expect(await ledger.verify()).toMatchObject({ ok: false, entries: 2, firstBroken: { seq: 3, reason: 'hash' } });
    });

    it('the whole chain rewritten as plain SHA-256 entries (a downgrade): reason legacy at seq 1', async () => {
      const ledger = await seed('downgrade', 4);
      await rehashPlain('downgrade', 1, { keepKid: false, edit: (doc) => (doc.amount = 1) });
      expect(await ledger.verify()).toMatchObject({ ok: false, entries: 0, firstBroken: { seq: 1, reason: 'legacy' } });
    });

    it('a field of the wrong type: reason hash', async () => {
      const ledger = await seed('tamper-type', 3);
      await raw('tamper-type').updateOne({ _id: 2 }, { $set: { amount: '200' as unknown as number } });
      expect(await ledger.verify()).toMatchObject({ ok: false, firstBroken: { seq: 2, reason: 'hash' } });
    });
  });
  describe('keys: rotation and re-keying', () => {
    const k1 = `k1:${secret(1)}`;
    const k2 = `k2:${secret(2)}`;

    it('a new signing key: older entries verify with their own kid; a chain whose key was removed names it (reason key)', async () => {
      const before = await freshLedger('rotate', LedgerKeys.parse(k1));
      await before.append({ loanId: 'APP-r', type: 'disbursement', amount: 1 });
      const after = new Ledger(tdb.db, { collection: 'rotate', keys: LedgerKeys.parse(`${k2},${k1}`) });
      await expect(after.append({ loanId: 'APP-r', type: 'disbursement', amount: 2 })).resolves.toMatchObject({
        entry: { seq: 2, kid: 'k2' },
      });
      await after.append({ loanId: 'APP-r', type: 'disbursement', amount: 3 });
      expect(await after.verify()).toMatchObject({ ok: true, entries: 3 });
      const withoutK1 = new Ledger(tdb.db, { collection: 'rotate', keys: LedgerKeys.parse(k2) });
      expect(await withoutK1.verify()).toMatchObject({ ok: false, entries: 0, firstBroken: { seq: 1, reason: 'key' } });
    });

    it('rekey: plain SHA-256 entries written before keying, then keyed ones; a run stopped halfway resumes only with legacyThrough', async () => {
      const ledger = await freshLedger('legacy', LedgerKeys.parse(k1));
      for (let i = 1; i <= 3; i++) await ledger.append({ loanId: `APP-${i}`, type: 'disbursement', amount: i });
      await rehashPlain('legacy', 1, { keepKid: false }); // as the code before keying wrote them
      const keyed = await ledger.append({ loanId: 'APP-4', type: 'disbursement', amount: 4 });
      expect(keyed.entry.prevHash).toBe((await ledger.entryBySeq(3))!.hash);
      expect(await ledger.verify()).toMatchObject({ ok: false, firstBroken: { seq: 1, reason: 'legacy' } });

      // A crash after two rewrites: keyed entries before a plain one, which a plain rerun must refuse (it
      // looks like a suffix rewritten without the key); the operator's legacyThrough lets it continue.
      await expect(
        ledger.rekey({
          onProgress: (seq) => {
            if (seq === 2) throw new Error('crash');
          },
        }),
      ).rejects.toThrow('crash');
      expect(await ledger.verify()).toMatchObject({ ok: false, firstBroken: { seq: 3, reason: 'legacy' } });
      await expect(ledger.rekey()).rejects.toThrow(/ledger entry 3: plain SHA-256 after keyed entries/);
      expect(await ledger.rekey({ legacyThrough: 3 })).toMatchObject({
        entries: 4,
        rekeyed: 2,
        legacy: 1,
        lastLegacySeq: 3,
        head: { seq: 4 },
      });
      expect(await ledger.verify()).toMatchObject({ ok: true, entries: 4, head: { seq: 4 } });
      const docs = await tdb.db.collection<LedgerDoc>('legacy').find({}).sort({ _id: 1 }).toArray();
      expect(docs.map((d) => d.kid)).toEqual(['k1', 'k1', 'k1', 'k1']);
      expect(docs.every((d) => d.rekeyedFrom !== undefined)).toBe(true);
      expect(await ledger.rekey()).toMatchObject({ entries: 4, rekeyed: 0 });
    });

    it('rekey refuses plain SHA-256 entries after a keyed one (a suffix rewritten without the key) and rewrites nothing', async () => {
      const ledger = await freshLedger('no-launder', LedgerKeys.parse(k1));
      for (let i = 1; i <= 4; i++) await ledger.append({ loanId: `APP-${i}`, type: 'disbursement', amount: i });
      await rehashPlain('no-launder', 3, { keepKid: false, edit: (doc) => (doc.amount = 999) });
      const before = await tdb.db.collection<LedgerDoc>('no-launder').find({}).sort({ _id: 1 }).toArray();
      await expect(ledger.rekey()).rejects.toThrow(/ledger entry 3: plain SHA-256 after keyed entries/);
      expect(await tdb.db.collection<LedgerDoc>('no-launder').find({}).sort({ _id: 1 }).toArray()).toEqual(before);
      expect(await ledger.verify()).toMatchObject({ ok: false, firstBroken: { seq: 3, reason: 'legacy' } });
    });

    it('rekey refuses plain SHA-256 entries forged over re-keyed history (its former hashes are public)', async () => {
      const ledger = await freshLedger('no-launder-history', LedgerKeys.parse(k1));
      for (let i = 1; i <= 3; i++) await ledger.append({ loanId: `APP-${i}`, type: 'disbursement', amount: i });
      await rehashPlain('no-launder-history', 1, { keepKid: false });
      expect(await ledger.rekey()).toMatchObject({ rekeyed: 3, legacy: 3 });
      await rehashPlain('no-launder-history', 2, { keepKid: false, edit: (doc) => (doc.amount = 999) });
      await expect(ledger.rekey()).rejects.toThrow(/ledger entry 2: plain SHA-256 after keyed entries/);
      expect(await ledger.verify()).toMatchObject({ ok: false, firstBroken: { seq: 2, reason: 'legacy' } });
    });

    it('rekey retires a key: every entry moves to the signing kid, and the chain verifies without the old key', async () => {
      const ledger = await freshLedger('retire', LedgerKeys.parse(k1));
      for (let i = 1; i <= 3; i++) await ledger.append({ loanId: `APP-${i}`, type: 'disbursement', amount: i });
      const both = new Ledger(tdb.db, { collection: 'retire', keys: LedgerKeys.parse(`${k2},${k1}`) });
      expect(await both.rekey()).toMatchObject({ entries: 3, rekeyed: 3, legacy: 0 });
      const onlyK2 = new Ledger(tdb.db, { collection: 'retire', keys: LedgerKeys.parse(k2) });
      expect(await onlyK2.verify()).toMatchObject({ ok: true, entries: 3 });
    });

    it('bad LEDGER_KEYS are refused with a message naming the problem', () => {
      expect(() => LedgerKeys.parse(`k1:${Buffer.alloc(16).toString('base64')}`)).toThrow(/at least 32 bytes/);
      expect(() => LedgerKeys.parse(`${k1},${k1}`)).toThrow(/given twice/);
      expect(() => LedgerKeys.parse(k1, 'k9')).toThrow(/LEDGER_SIGNING_KID k9/);
      expect(() => LedgerKeys.parse('')).toThrow(/no ledger keys/);
    });
  });
});
