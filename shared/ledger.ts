// The append-only, hash-chained ledger of money movements. Each entry's _id is its seq, so two appenders
// that read the same tail race on one _id and exactly one insert wins: the chain cannot fork; the loser
// reads the entry that beat it and tries the next seq. A second unique key (idempotencyKey, sparse) makes
// an append with the same identity land once, however many racers or retries send it. No transactions: a
// head document names the last entry and is moved forward after each insert (never backward); a crash in
// between leaves it behind, and the next successful append moves it past the gap in the same write.
//
// Canonical encoding (what `hash` covers), format "loan-ledger/v1": the lowercase hex SHA-256 of the UTF-8
// bytes of JSON.stringify of this array, in this order, with these types:
//   ["loan-ledger/v1", seq (integer >= 1), loanId (string), type (string), amount (integer),
//    at (ISO-8601 UTC with milliseconds, Date.prototype.toISOString), idempotencyKey (string | null),
//    fence ([lockKey string, token integer] | null), prevHash (64 lowercase hex; 64 zeros before seq 1)]
// JSON.stringify of an array of strings, integers and nulls is fully specified by ECMAScript, so any
// runtime (or another language following the same rules) recomputes the same bytes.
import type { Collection, Db, Filter, UpdateFilter } from 'mongodb';
import type { Clock } from './clock.ts';
import { systemClock } from './clock.ts';
import type { IndexPlan } from './db.ts';
import { ConflictError, ValidationError } from './errors.ts';
import { claimFence, type Lease } from './lock.ts';

export const LEDGER_COLLECTION = 'ledger';
export const LEDGER_HEADS_COLLECTION = 'ledger_heads';
export const LEDGER_HASH_FORMAT = 'loan-ledger/v1';
/** The prevHash of the first entry. */
export const GENESIS_HASH = '0'.repeat(64);

/** Money movements the ledger records. Amounts are whole currency units, like an application's loanAmount. */
export const ledgerEntryTypes = ['disbursement'] as const;
export type LedgerEntryType = (typeof ledgerEntryTypes)[number];

/** The lease a loan's ledger appends run under, and the fence resource they claim with its token. */
export const loanLockKey = (loanId: string) => `loan:${loanId}`;
export const ledgerFenceResource = (loanId: string) => `ledger:loan:${loanId}`;

export interface Fence {
  /** The lock key whose lease wrote the entry. */
  key: string;
  token: number;
}

export interface LedgerEntry {
  seq: number;
  loanId: string;
  type: LedgerEntryType;
  amount: number;
  at: Date;
  prevHash: string;
  hash: string;
  fence?: Fence;
  idempotencyKey?: string;
}

/** Stored with _id = seq: the unique _id is what keeps the chain from forking. */
export interface LedgerDoc extends Omit<LedgerEntry, 'seq'> {
  _id: number;
}

/** One document per ledger: an entry known to be in the chain, the last one unless a crash left it behind. */
export interface LedgerHeadDoc {
  _id: string;
  seq: number;
  hash: string;
}

export interface Tail {
  seq: number;
  hash: string;
}

export interface AppendInput {
  loanId: string;
  type: LedgerEntryType;
  amount: number;
  /** The entry's identity: an append whose key is already in the ledger returns that entry instead. */
  idempotencyKey?: string;
}

export interface AppendOptions {
  /** The lease of loanLockKey(loanId): its token is claimed on the loan's fence before every insert. */
  lease?: Pick<Lease, 'key' | 'token'>;
  /** Checked before every attempt (e.g. the lease's signal). */
  signal?: AbortSignal;
}

export interface AppendResult {
  entry: LedgerEntry;
  /** False when the idempotency key was already in the ledger (this append wrote nothing). */
  created: boolean;
}

export type BrokenReason = 'hash' | 'link' | 'gap';

export interface VerifyResult {
  ok: boolean;
  /** Entries checked (up to the first broken one). */
  entries: number;
  /** The head document as verify read it before walking (null for an empty ledger). */
  head: Tail | null;
  /**
   * The first place the chain breaks: 'hash' = the entry's fields do not hash to its stored hash (edited);
   * 'link' = its prevHash is not the previous entry's hash, or the head's hash is not this entry's;
   * 'gap' = this seq is missing (deleted), including entries missing after the last one the head names.
   */
  firstBroken?: { seq: number; reason: BrokenReason };
}

// ---- Indexes, filters and updates -------------------------------------------------------------------

/**
 * _id (seq) is the chain's order and its fork guard. The idempotency key is unique where present (sparse:
 * entries without one are not indexed). A loan's entries are read in seq order.
 */
export const ledgerIndexes: IndexPlan = {
  collection: LEDGER_COLLECTION,
  indexes: [
    { key: { idempotencyKey: 1 }, name: 'idempotencyKey_unique', unique: true, sparse: true },
    { key: { loanId: 1, _id: 1 }, name: 'by_loan' },
  ],
};

export const ledgerQueries = {
  bySeq: (seq: number): Filter<LedgerDoc> => ({ _id: seq }),
  byIdempotencyKey: (key: string): Filter<LedgerDoc> => ({ idempotencyKey: key }),
  ofLoan: (loanId: string): Filter<LedgerDoc> => ({ loanId }),
  chainOrder: { _id: 1 } as const,
  head: (name: string): Filter<LedgerHeadDoc> => ({ _id: name }),
  /** Only a head behind the entry just written moves (to it): the head never goes back, whatever the order. */
  headBehind: (name: string, seq: number): Filter<LedgerHeadDoc> => ({ _id: name, seq: { $lt: seq } }),
  advanceHead: (to: Tail): UpdateFilter<LedgerHeadDoc> => ({ $set: { seq: to.seq, hash: to.hash } }),
};

// ---- Hashing ------------------------------------------------------------------------------------------

const hexPattern = /^[0-9a-f]{64}$/;

function fail(field: string, message: string): never {
  throw new ValidationError(`ledger entry ${field} ${message}`, [{ path: field, message }]);
}

/** The exact string `hash` is computed over (see the module header). Throws ValidationError on a wrong type. */
export function canonicalEncoding(entry: Omit<LedgerEntry, 'hash'>): string {
  if (!Number.isSafeInteger(entry.seq) || entry.seq < 1) fail('seq', 'must be an integer >= 1');
  if (typeof entry.loanId !== 'string' || entry.loanId.length === 0) fail('loanId', 'must be a non-empty string');
  if (typeof entry.type !== 'string' || entry.type.length === 0) fail('type', 'must be a non-empty string');
  if (!Number.isSafeInteger(entry.amount)) fail('amount', 'must be an integer');
  if (!(entry.at instanceof Date) || Number.isNaN(entry.at.getTime())) fail('at', 'must be a valid date');
  if (entry.idempotencyKey !== undefined && typeof entry.idempotencyKey !== 'string') {
    fail('idempotencyKey', 'must be a string when present');
  }
  if (entry.fence !== undefined) {
    if (typeof entry.fence?.key !== 'string' || !Number.isSafeInteger(entry.fence.token)) {
      fail('fence', 'must be {key: string, token: integer} when present');
    }
  }
  if (typeof entry.prevHash !== 'string' || !hexPattern.test(entry.prevHash)) fail('prevHash', 'must be 64 hex digits');
  return JSON.stringify([
    LEDGER_HASH_FORMAT,
    entry.seq,
    entry.loanId,
    entry.type,
    entry.amount,
    entry.at.toISOString(),
    entry.idempotencyKey ?? null,
    entry.fence ? [entry.fence.key, entry.fence.token] : null,
    entry.prevHash,
  ]);
}

/** SHA-256 through WebCrypto (Node, workerd and Deno alike), lowercase hex. */
export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, '0')).join('');
}

export async function entryHash(entry: Omit<LedgerEntry, 'hash'>): Promise<string> {
  return sha256Hex(canonicalEncoding(entry));
}

// ---- The ledger ---------------------------------------------------------------------------------------

export interface LedgerOptions {
  /** Where `at` comes from; the API passes its ServerClock. */
  clock?: Clock;
  collection?: string;
  /** Inserts to try before giving up under contention (each lost race means another append succeeded). */
  maxAttempts?: number;
}

/** Counters for benchmarks and logs. */
export interface LedgerStats {
  appended: number;
  /** Inserts that lost the race for a seq (E11000 on _id) and retried. */
  seqCollisions: number;
  /** Appends answered by the entry already holding their idempotency key. */
  idempotentHits: number;
}

function duplicateKeyIndex(error: unknown): 'seq' | 'other' | null {
  const e = error as { code?: unknown; keyPattern?: Record<string, unknown>; errmsg?: unknown; message?: unknown };
  if (e?.code !== 11000) return null;
  if (e.keyPattern) return '_id' in e.keyPattern ? 'seq' : 'other';
  // Servers that omit keyPattern name the index in the message ("... index: _id_ dup key: ...").
  const message = String(e.errmsg ?? e.message ?? '');
  return /index: _id_ /.test(message) ? 'seq' : 'other';
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function toEntry(doc: LedgerDoc): LedgerEntry {
  const { _id, ...rest } = doc;
  return { seq: _id, ...rest };
}

function validateInput(input: AppendInput): void {
  if (typeof input.loanId !== 'string' || input.loanId.length === 0 || input.loanId.length > 200) {
    fail('loanId', 'must be a string of 1 to 200 characters');
  }
  if (!ledgerEntryTypes.includes(input.type)) fail('type', `must be one of ${ledgerEntryTypes.join(', ')}`);
  if (!Number.isSafeInteger(input.amount) || input.amount <= 0) fail('amount', 'must be a positive integer');
  if (input.idempotencyKey !== undefined) {
    if (typeof input.idempotencyKey !== 'string' || input.idempotencyKey.length === 0) {
      fail('idempotencyKey', 'must be a non-empty string');
    }
    if (input.idempotencyKey.length > 300) fail('idempotencyKey', 'must be at most 300 characters');
  }
}

export class Ledger {
  readonly entries: Collection<LedgerDoc>;
  readonly stats: LedgerStats = { appended: 0, seqCollisions: 0, idempotentHits: 0 };
  private readonly heads: Collection<LedgerHeadDoc>;
  private readonly db: Db;
  private readonly name: string;
  private readonly clock: Clock;
  private readonly maxAttempts: number;
  private pending: Promise<unknown> = Promise.resolve();

  constructor(db: Db, options: LedgerOptions = {}) {
    this.db = db;
    this.name = options.collection ?? LEDGER_COLLECTION;
    this.entries = db.collection<LedgerDoc>(this.name);
    this.heads = db.collection<LedgerHeadDoc>(LEDGER_HEADS_COLLECTION);
    this.clock = options.clock ?? systemClock;
    this.maxAttempts = options.maxAttempts ?? 1000;
  }

  /** The last entry the head names ({seq: 0, hash: GENESIS_HASH} for an empty ledger). */
  async head(): Promise<Tail> {
    const head = await this.heads.findOne(ledgerQueries.head(this.name));
    return head ? { seq: head.seq, hash: head.hash } : { seq: 0, hash: GENESIS_HASH };
  }

  /**
   * Appends one entry after the current tail and returns it; with an idempotencyKey already in the ledger,
   * returns that entry instead (ConflictError if it records something else). With a lease, claims the
   * loan's fence with its token before each insert: StaleTokenError once a newer holder has claimed it.
   * Appends through one instance run one at a time, in call order; instances (processes) race on the tail.
   */
  async append(input: AppendInput, options: AppendOptions = {}): Promise<AppendResult> {
    validateInput(input);
    // One at a time per instance (FIFO): appenders in one process would only race each other for the tail.
    const run = this.pending.then(() => this.appendNow(input, options));
    this.pending = run.catch(() => {});
    return run;
  }

  private async appendNow(input: AppendInput, options: AppendOptions): Promise<AppendResult> {
    const { lease, signal } = options;
    const fence = lease ? { key: lease.key, token: lease.token } : undefined;
    let tail = await this.head();
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      if (lease) await claimFence(this.db, ledgerFenceResource(input.loanId), lease);
      const unhashed: Omit<LedgerEntry, 'hash'> = {
        seq: tail.seq + 1,
        loanId: input.loanId,
        type: input.type,
        amount: input.amount,
        at: new Date(this.clock.now()),
        prevHash: tail.hash,
        ...(fence ? { fence } : {}),
        ...(input.idempotencyKey === undefined ? {} : { idempotencyKey: input.idempotencyKey }),
      };
      const entry: LedgerEntry = { ...unhashed, hash: await entryHash(unhashed) };
      const { seq, ...rest } = entry;
      try {
        await this.entries.insertOne({ _id: seq, ...rest });
      } catch (error) {
        const index = duplicateKeyIndex(error);
        if (index === null) throw error;
        if (index === 'other' && input.idempotencyKey !== undefined) {
          const existing = await this.entries.findOne(ledgerQueries.byIdempotencyKey(input.idempotencyKey));
          if (existing) return { entry: this.idempotentHit(input, toEntry(existing)), created: false };
        }
        // Someone appended this seq first: build on their entry.
        this.stats.seqCollisions++;
        if (attempt >= this.maxAttempts) {
          throw new ConflictError(`ledger append gave up after ${attempt} lost races`, { tail });
        }
        tail = await this.nextTail(tail, attempt);
        // Losers retry at once (a loser that sleeps while others race would starve); only a pathological
        // streak yields a little.
        if (attempt >= 16) await sleep(Math.random() * 5);
        continue;
      }
      // The entry is in: a failure to move the head only leaves it behind, and the next append moves it.
      await this.advanceHead({ seq: entry.seq, hash: entry.hash }).catch(() => {});
      this.stats.appended++;
      return { entry, created: true };
    }
  }

  /** All entries of one loan, in chain order. */
  async entriesForLoan(loanId: string): Promise<LedgerEntry[]> {
    const docs = await this.entries.find(ledgerQueries.ofLoan(loanId)).sort(ledgerQueries.chainOrder).toArray();
    return docs.map(toEntry);
  }

  async entryBySeq(seq: number): Promise<LedgerEntry | null> {
    const doc = await this.entries.findOne(ledgerQueries.bySeq(seq));
    return doc ? toEntry(doc) : null;
  }

  /**
   * Walks the whole chain in seq order on one cursor (the server streams it in batches), recomputing every
   * hash and link; stops at the first broken place. Entries appended while it walks are checked if the
   * cursor reaches them; the head read before the walk must name an entry the walk saw, with its hash.
   */
  async verify(options: { batchSize?: number } = {}): Promise<VerifyResult> {
    const headDoc = await this.heads.findOne(ledgerQueries.head(this.name));
    const head = headDoc ? { seq: headDoc.seq, hash: headDoc.hash } : null;
    const cursor = this.entries
      .find({})
      .sort(ledgerQueries.chainOrder)
      .batchSize(options.batchSize ?? 1000);
    let previous: Tail = { seq: 0, hash: GENESIS_HASH };
    let count = 0;
    const broken = (seq: number, reason: BrokenReason): VerifyResult => ({
      ok: false,
      entries: count,
      head,
      firstBroken: { seq, reason },
    });
    try {
      for await (const doc of cursor) {
        const entry = toEntry(doc);
        if (entry.seq !== previous.seq + 1) return broken(previous.seq + 1, 'gap');
        if (entry.prevHash !== previous.hash) return broken(entry.seq, 'link');
        let recomputed: string;
        try {
          recomputed = await entryHash(entry);
        } catch {
          return broken(entry.seq, 'hash');
        }
        if (recomputed !== entry.hash) return broken(entry.seq, 'hash');
        if (head && head.seq === entry.seq && head.hash !== entry.hash) return broken(entry.seq, 'link');
        previous = { seq: entry.seq, hash: entry.hash };
        count++;
      }
    } finally {
      await cursor.close();
    }
    // Entries the head vouches for but the walk never met were deleted from the end.
    if (head && head.seq > previous.seq) return broken(previous.seq + 1, 'gap');
    return { ok: true, entries: count, head };
  }

  private idempotentHit(input: AppendInput, existing: LedgerEntry): LedgerEntry {
    if (existing.loanId !== input.loanId || existing.type !== input.type || existing.amount !== input.amount) {
      throw new ConflictError(
        `idempotency key ${input.idempotencyKey} already records another entry (seq ${existing.seq})`,
        existing,
      );
    }
    this.stats.idempotentHits++;
    return existing;
  }

  /**
   * After losing the race for tail.seq + 1: the entry that won, read by _id (one round trip, so a loser is
   * back in the race as fast as the winner). After a streak of losses, the head too, in case we are far behind.
   */
  private async nextTail(tail: Tail, losses: number): Promise<Tail> {
    const winner = await this.entries.findOne(ledgerQueries.bySeq(tail.seq + 1), { projection: { hash: 1 } });
    const next = winner ? { seq: winner._id, hash: winner.hash } : tail;
    if (winner && losses % 4 !== 0) return next;
    const head = await this.head();
    return head.seq > next.seq ? head : next;
  }

  /** Moves the head forward to `to` if it is behind; creates it with the first entry. */
  private async advanceHead(to: Tail): Promise<void> {
    try {
      await this.heads.updateOne(ledgerQueries.headBehind(this.name, to.seq), ledgerQueries.advanceHead(to), {
        upsert: true,
      });
    } catch (error) {
      // The head is already at or past `to`: the upsert's insert met the existing document.
      if (duplicateKeyIndex(error) === null) throw error;
    }
  }
}
