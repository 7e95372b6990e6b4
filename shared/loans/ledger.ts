// The append-only, keyed hash chain of money movements. Each entry's _id is its seq, so two appenders
// that read the same tail race on one _id and exactly one insert wins: the chain cannot fork; the loser
// reads the entry that beat it and tries the next seq. A second unique key (idempotencyKey, sparse) makes
// an append with the same identity land once, however many racers or retries send it. No transactions: a
// head document names the last entry and is moved forward after each insert (never backward); a crash in
// between leaves it behind, and the next successful append moves it past the gap in the same write.
//
// Keyed, not plain: `hash` is an HMAC-SHA-256 under a ledger key held outside the database (LEDGER_KEYS),
// so someone who can write to the database but lacks the key cannot rehash an edited suffix. Each entry is
// keyed (not only periodic checkpoints), so there is no unsigned window after the last checkpoint, and
// verify names the exact entry. The entry carries the kid of its key: keys rotate, older entries verify
// with their own kid. Canonical encoding, format "loan-ledger/v2": the lowercase hex HMAC-SHA-256, under
// the key named by kid, of the UTF-8 bytes of JSON.stringify of this array, in this order, with these types:
//   ["loan-ledger/v2", kid (string), seq (integer >= 1), loanId (string), type (string), amount (integer),
//    at (ISO-8601 UTC with milliseconds, Date.prototype.toISOString), idempotencyKey (string | null),
//    fence ([lockKey string, token integer] | null), prevHash (64 lowercase hex; 64 zeros before seq 1),
//    rekeyedFrom (64 lowercase hex | null: the hash this entry had before Ledger.rekey rewrote it)]
// JSON.stringify of an array of strings, integers and nulls is fully specified by ECMAScript, so any
// runtime (or another language following the same rules) recomputes the same bytes.
//
// Entries written before keying ("loan-ledger/v1": plain SHA-256 of the same array without kid and
// rekeyedFrom, no kid stored) never verify: verify names the first one (reason 'legacy'), and Ledger.rekey
// (scripts/ledger-rekey.ts, run once with the API stopped) checks their SHA-256 chain and re-keys them.
import type { Collection, Db, Filter, UpdateFilter } from 'mongodb';
import { claimFence, type Lease } from '../concurrency/leases.ts';
import { type Clock, sleep, systemClock } from '../core/clock.ts';
import { type IndexPlan, isDuplicateKeyError } from '../core/db.ts';
import { ConflictError, ValidationError } from '../core/errors.ts';
import { kidPattern, parseKeyList } from '../core/keys.ts';

export const LEDGER_COLLECTION = 'ledger';
export const LEDGER_HEADS_COLLECTION = 'ledger_heads';
export const LEDGER_HASH_FORMAT = 'loan-ledger/v2';
/** The plain SHA-256 format of entries written before keying; only Ledger.rekey reads it. */
export const LEGACY_HASH_FORMAT = 'loan-ledger/v1';
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
  /** The ledger key that keyed `hash`; absent on entries written before keying. */
  kid?: string;
  fence?: Fence;
  idempotencyKey?: string;
  /** Set by Ledger.rekey: the hash the entry had before it was re-keyed (covered by the new hash). */
  rekeyedFrom?: string;
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

export interface RekeyResult {
  /** Entries walked. */
  entries: number;
  /** Entries rewritten (keyed with the signing kid, relinked). */
  rekeyed: number;
  /** Of the entries walked, those that were plain SHA-256. */
  legacy: number;
  /** The last plain SHA-256 entry's seq (what `legacyThrough` takes if a run must be resumed). */
  lastLegacySeq?: number;
  head: Tail | null;
}

export type BrokenReason = 'hash' | 'link' | 'gap' | 'key' | 'legacy';

export interface VerifyResult {
  ok: boolean;
  /** Entries checked (up to the first broken one). */
  entries: number;
  /** The head document as verify read it before walking (null for an empty ledger). */
  head: Tail | null;
  /**
   * The first place the chain breaks: 'hash' = the entry's fields do not hash to its stored hash under its
   * key (edited, or rehashed without the key); 'link' = its prevHash is not the previous entry's hash, or
   * the head's hash is not this entry's; 'gap' = this seq is missing (deleted), including entries missing
   * after the last one the head names; 'key' = its kid names no key in LEDGER_KEYS; 'legacy' = it has no
   * kid (plain SHA-256: written before keying, or rewritten by someone without the key).
   */
  firstBroken?: { seq: number; reason: BrokenReason; message: string };
}

const brokenMessages: Record<BrokenReason, string> = {
  hash: 'the entry does not match its keyed hash: edited, or rehashed without the ledger key',
  link: "the entry's prevHash is not the previous entry's hash, or the head names another hash for it",
  gap: 'this entry is missing (deleted)',
  key: 'the entry names a ledger key that LEDGER_KEYS does not hold',
  legacy: 'the entry has no ledger key (plain SHA-256): written before keying or rewritten without the key',
};

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

// ---- Keys and hashing ---------------------------------------------------------------------------------

const hexPattern = /^[0-9a-f]{64}$/;
const encoder = new TextEncoder();

function fail(field: string, message: string): never {
  throw new ValidationError(`ledger entry ${field} ${message}`, [{ path: field, message }]);
}

const toHex = (bytes: ArrayBuffer) =>
  Array.from(new Uint8Array(bytes), (byte) => byte.toString(16).padStart(2, '0')).join('');

function fromHex(hex: string): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return bytes;
}

/**
 * The ledger's HMAC keys (LEDGER_KEYS: `kid:base64secret,...`, secrets >= 32 bytes) and the kid that keys
 * new entries (LEDGER_SIGNING_KID, default the first). Kept outside the database, like the JWT keys.
 */
export class LedgerKeys {
  readonly signingKid: string;
  private readonly secrets: Map<string, Uint8Array<ArrayBuffer>>;
  private readonly imported = new Map<string, Promise<CryptoKey>>();

  constructor(secrets: Map<string, Uint8Array<ArrayBuffer>>, signingKid?: string) {
    if (secrets.size === 0) throw new Error('no ledger keys given');
    const kid = signingKid ?? [...secrets.keys()][0]!;
    if (!secrets.has(kid)) throw new Error(`LEDGER_SIGNING_KID ${kid} is not one of the LEDGER_KEYS kids`);
    this.secrets = secrets;
    this.signingKid = kid;
  }

  /** Parses `kid:base64secret,...`; throws an Error naming the bad part. */
  static parse(spec: string, signingKid?: string): LedgerKeys {
    return new LedgerKeys(parseKeyList(spec, 'ledger key'), signingKid);
  }

  has(kid: string): boolean {
    return this.secrets.has(kid);
  }

  private key(kid: string): Promise<CryptoKey> {
    const secret = this.secrets.get(kid);
    if (!secret) throw new Error(`unknown ledger key ${kid}`);
    let key = this.imported.get(kid);
    if (!key) {
      key = crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
      this.imported.set(kid, key);
    }
    return key;
  }

  /** HMAC-SHA-256 of the text under kid, lowercase hex. */
  async mac(kid: string, text: string): Promise<string> {
    return toHex(await crypto.subtle.sign('HMAC', await this.key(kid), encoder.encode(text)));
  }

  /** Whether `hex` is the HMAC of the text under kid (compared by WebCrypto in constant time). */
  async check(kid: string, text: string, hex: string): Promise<boolean> {
    if (!hexPattern.test(hex)) return false;
    return crypto.subtle.verify('HMAC', await this.key(kid), fromHex(hex), encoder.encode(text));
  }
}

function checkFields(entry: Omit<LedgerEntry, 'hash'>): void {
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
}

/** The exact string `hash` is the HMAC of (see the module header). Throws ValidationError on a wrong type. */
export function canonicalEncoding(entry: Omit<LedgerEntry, 'hash'>): string {
  checkFields(entry);
  if (typeof entry.kid !== 'string' || !kidPattern.test(entry.kid)) fail('kid', 'must be a key id');
  if (entry.rekeyedFrom !== undefined && !hexPattern.test(entry.rekeyedFrom)) {
    fail('rekeyedFrom', 'must be 64 hex digits when present');
  }
  return JSON.stringify([LEDGER_HASH_FORMAT, entry.kid, ...movementFields(entry), entry.rekeyedFrom ?? null]);
}

/** What both encodings cover of an entry: the money movement and its link. */
function movementFields(entry: Omit<LedgerEntry, 'hash'>): unknown[] {
  return [
    entry.seq,
    entry.loanId,
    entry.type,
    entry.amount,
    entry.at.toISOString(),
    entry.idempotencyKey ?? null,
    entry.fence ? [entry.fence.key, entry.fence.token] : null,
    entry.prevHash,
  ];
}

/** The keyed hash of an entry under its kid. */
export async function entryHash(entry: Omit<LedgerEntry, 'hash'>, keys: LedgerKeys): Promise<string> {
  const encoding = canonicalEncoding(entry);
  return keys.mac(entry.kid!, encoding);
}

/** The "loan-ledger/v1" encoding of entries written before keying (no kid): Ledger.rekey checks them with it. */
export function legacyEncoding(entry: Omit<LedgerEntry, 'hash'>): string {
  checkFields(entry);
  return JSON.stringify([LEGACY_HASH_FORMAT, ...movementFields(entry)]);
}

/** SHA-256 through WebCrypto (Node, workerd and Deno alike), lowercase hex. */
export async function sha256Hex(text: string): Promise<string> {
  return toHex(await crypto.subtle.digest('SHA-256', encoder.encode(text)));
}

/** Why an entry does not hold under its own key (null when it does). Never throws. */
async function entryFault(entry: LedgerEntry, keys: LedgerKeys): Promise<BrokenReason | null> {
  if (entry.kid === undefined) return 'legacy';
  if (typeof entry.kid !== 'string' || !keys.has(entry.kid)) return 'key';
  try {
    return (await keys.check(entry.kid, canonicalEncoding(entry), entry.hash)) ? null : 'hash';
  } catch {
    return 'hash';
  }
}

// ---- The ledger ---------------------------------------------------------------------------------------

export interface LedgerOptions {
  /** The HMAC keys (LEDGER_KEYS): new entries are keyed with the signing kid, each entry verifies with its own. */
  keys: LedgerKeys;
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
  if (!isDuplicateKeyError(error)) return null;
  const e = error as { keyPattern?: Record<string, unknown>; errmsg?: unknown; message?: unknown };
  if (e.keyPattern) return '_id' in e.keyPattern ? 'seq' : 'other';
  // Servers that omit keyPattern name the index in the message ("... index: _id_ dup key: ...").
  const message = String(e.errmsg ?? e.message ?? '');
  return /index: _id_ /.test(message) ? 'seq' : 'other';
}

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
  private readonly keys: LedgerKeys;
  private pending: Promise<unknown> = Promise.resolve();

  constructor(db: Db, options: LedgerOptions) {
    this.keys = options.keys;
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
    const appended = this.pending.then(() => this.appendNow(input, options));
    this.pending = appended.catch(() => {});
    return appended;
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
        kid: this.keys.signingKid,
        ...(fence ? { fence } : {}),
        ...(input.idempotencyKey === undefined ? {} : { idempotencyKey: input.idempotencyKey }),
      };
      const entry: LedgerEntry = { ...unhashed, hash: await entryHash(unhashed, this.keys) };
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
   * Walks the whole chain in seq order on one cursor (the server streams it in batches), checking every
   * entry's keyed hash under its own kid and every link; names the first broken place. Entries appended
   * while it walks are checked if the cursor reaches them; the head read before the walk must name an entry
   * the walk saw, with its hash. With `onEntry`, the walk goes on to the end after a break and hands every
   * entry read to it (the cross-check against disbursements needs them all).
   */
  async verify(options: { batchSize?: number; onEntry?: (entry: LedgerEntry) => void } = {}): Promise<VerifyResult> {
    const headDoc = await this.heads.findOne(ledgerQueries.head(this.name));
    const head = headDoc ? { seq: headDoc.seq, hash: headDoc.hash } : null;
    const cursor = this.entries
      .find({})
      .sort(ledgerQueries.chainOrder)
      .batchSize(options.batchSize ?? 1000);
    let previous: Tail = { seq: 0, hash: GENESIS_HASH };
    let count = 0;
    let firstBroken: VerifyResult['firstBroken'];
    const broken = (seq: number, reason: BrokenReason) => {
      firstBroken = { seq, reason, message: brokenMessages[reason] };
    };
    try {
      for await (const doc of cursor) {
        const entry = toEntry(doc);
        options.onEntry?.(entry);
        if (firstBroken) continue;
        if (entry.seq !== previous.seq + 1) broken(previous.seq + 1, 'gap');
        else {
          const fault = await entryFault(entry, this.keys);
          if (fault) broken(entry.seq, fault);
          else if (entry.prevHash !== previous.hash) broken(entry.seq, 'link');
          else if (head && head.seq === entry.seq && head.hash !== entry.hash) broken(entry.seq, 'link');
        }
        if (firstBroken) {
          if (!options.onEntry) break;
          continue;
        }
        previous = { seq: entry.seq, hash: entry.hash };
        count++;
      }
    } finally {
      await cursor.close();
    }
    // Entries the head vouches for but the walk never met were deleted from the end.
    if (!firstBroken && head && head.seq > previous.seq) broken(previous.seq + 1, 'gap');
    return firstBroken ? { ok: false, entries: count, head, firstBroken } : { ok: true, entries: count, head };
  }

  /**
   * Re-keys the chain with the signing kid, in seq order: every entry keyed otherwise (plain SHA-256 entries
   * written before keying, or those of a key being retired) and every entry after one it rewrote (its
   * prevHash changes), each checked first under its own scheme. Run it with no appender (the API stopped).
   * Plain SHA-256 entries are accepted only before the first keyed entry: a suffix rewritten without the
   * key after keyed entries is refused, never laundered (re-keyed history included: its former hashes are
   * public). A run that stopped halfway leaves keyed entries before plain ones; the database cannot tell
   * that from an attack, so the operator says so from outside it: `legacyThrough` (the last plain seq the
   * first run reported) accepts plain entries up to there, linked to their predecessor's rekeyedFrom.
   * ConflictError names the entry that stops it.
   */
  async rekey(options: { legacyThrough?: number; onProgress?: (seq: number) => void } = {}): Promise<RekeyResult> {
    const stop = (seq: number, message: string): never => {
      throw new ConflictError(`ledger entry ${seq}: ${message}; nothing after it was re-keyed`, { seq });
    };
    let previous: Tail & { formerHash?: string } = { seq: 0, hash: GENESIS_HASH };
    let keyedSeen = false;
    const result: RekeyResult = { entries: 0, rekeyed: 0, legacy: 0, head: null };
    const cursor = this.entries.find({}).sort(ledgerQueries.chainOrder).batchSize(1000);
    try {
      for await (const doc of cursor) {
        const entry = toEntry(doc);
        if (entry.seq !== previous.seq + 1) stop(previous.seq + 1, 'missing');
        if (entry.kid === undefined) {
          if (keyedSeen && !(options.legacyThrough !== undefined && entry.seq <= options.legacyThrough)) {
            stop(entry.seq, 'plain SHA-256 after keyed entries (rewritten without the key?)');
          }
          let plain: string | null = null;
          try {
            plain = await sha256Hex(legacyEncoding(entry));
          } catch {}
          if (plain !== entry.hash) stop(entry.seq, 'does not match its plain SHA-256');
          result.legacy++;
          result.lastLegacySeq = entry.seq;
        } else {
          const fault = await entryFault(entry, this.keys);
          if (fault) stop(entry.seq, brokenMessages[fault]);
          keyedSeen = true;
        }
        if (entry.prevHash !== previous.hash && entry.prevHash !== previous.formerHash) {
          stop(entry.seq, brokenMessages.link);
        }
        result.entries++;
        if (entry.kid === this.keys.signingKid && entry.prevHash === previous.hash) {
          // Rewritten by an earlier run that stopped: its successor may still link to its former hash.
          previous = { seq: entry.seq, hash: entry.hash, formerHash: entry.rekeyedFrom };
          continue;
        }
        const { hash: former, ...unhashed } = entry;
        const rewritten = { ...unhashed, kid: this.keys.signingKid, prevHash: previous.hash, rekeyedFrom: former };
        const hash = await entryHash(rewritten, this.keys);
        const written = await this.entries.updateOne(
          { _id: entry.seq, hash: former },
          { $set: { kid: rewritten.kid, prevHash: rewritten.prevHash, rekeyedFrom: former, hash } },
        );
        if (written.matchedCount !== 1) stop(entry.seq, 'changed while being re-keyed');
        result.rekeyed++;
        previous = { seq: entry.seq, hash, formerHash: former };
        options.onProgress?.(entry.seq);
      }
    } finally {
      await cursor.close();
    }
    if (result.entries > 0) {
      result.head = { seq: previous.seq, hash: previous.hash };
      await this.heads.updateOne(ledgerQueries.head(this.name), { $set: result.head }, { upsert: true });
    }
    return result;
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
