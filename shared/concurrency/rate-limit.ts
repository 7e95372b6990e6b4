// Fixed-window rate limits whose counts live in MongoDB, so they hold across instances.
//
// Two modes. `exact` (logins): one atomic $inc per hit, the answer is the global count.
// `shared` (every API request): each instance counts locally and flushes its increments in one
// bulk write every `flushMs`, reading back the global totals in one query; a request pays no
// database round trip. The global limit can be overshot by what the instances admit within one
// flush interval, which is the price of zero per-request cost; the README states the bound. Where the
// services live one request (workerd with a client per request) the request budget uses `exact`.
//
// LoginDelays: growing waits between failed logins of one (account, address), kept in MongoDB.
import type { AnyBulkWriteOperation, Collection, Db } from 'mongodb';
import { backoffDelay, type Clock } from '../core/clock.ts';
import { type IndexPlan, isDuplicateKeyError } from '../core/db.ts';

export interface RateDoc {
  _id: string;
  count: number;
  expiresAt: Date;
}

export const rateLimitIndexes: IndexPlan = {
  collection: 'rate_limits',
  indexes: [{ key: { expiresAt: 1 }, name: 'expiresAt_ttl', expireAfterSeconds: 0 }],
};

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until the window resets. */
  resetS: number;
}

export interface RateLimitOptions {
  limit: number;
  windowMs: number;
  clock: Clock;
  /** Prefix of the counter ids, e.g. 'api' or 'login-account'. */
  name: string;
}

/** The fixed window `now` falls in. */
export function windowOf(now: number, windowMs: number) {
  const start = Math.floor(now / windowMs) * windowMs;
  return { start, end: start + windowMs };
}

/** The answer to the `count`th hit of a window ending at `end`. */
export function decide(count: number, limit: number, now: number, end: number): RateDecision {
  return {
    allowed: count <= limit,
    limit,
    remaining: Math.max(0, limit - count),
    resetS: Math.max(1, Math.ceil((end - now) / 1000)),
  };
}

/** What the per-admin request budget needs: a SharedRateLimiter, or an ExactRateLimiter where a process lives one request. */
export interface RequestLimiter {
  hit(key: string): RateDecision | Promise<RateDecision>;
  flushIfDue(): Promise<void> | null;
  flush(): Promise<void>;
  start(): void;
  stop(): Promise<void>;
}

/**
 * One atomic increment per hit: exact across instances. For rare, sensitive actions (login), and for
 * the request budget where each request builds its own limiter (workerd with a client per request).
 */
export class ExactRateLimiter implements RequestLimiter {
  private readonly collection: Collection<RateDoc>;
  private readonly options: RateLimitOptions;

  constructor(db: Db, options: RateLimitOptions) {
    this.collection = db.collection<RateDoc>('rate_limits');
    this.options = options;
  }

  /** Counts a hit for `key` and says whether it is within the limit. */
  async hit(key: string): Promise<RateDecision> {
    const now = this.options.clock.now();
    const { start, end } = windowOf(now, this.options.windowMs);
    const doc = await this.collection.findOneAndUpdate(
      { _id: `${this.options.name}:${key}:${start}` },
      { $inc: { count: 1 }, $setOnInsert: { expiresAt: new Date(end + 60_000) } },
      { upsert: true, returnDocument: 'after' },
    );
    return decide(doc?.count ?? 1, this.options.limit, now, end);
  }

  /** Takes back one hit of this window (e.g. a login that succeeded). */
  async undo(key: string): Promise<void> {
    const { start } = windowOf(this.options.clock.now(), this.options.windowMs);
    await this.collection.updateOne(
      { _id: `${this.options.name}:${key}:${start}`, count: { $gt: 0 } },
      { $inc: { count: -1 } },
    );
  }

  async reset(key: string): Promise<void> {
    const { start } = windowOf(this.options.clock.now(), this.options.windowMs);
    await this.collection.deleteOne({ _id: `${this.options.name}:${key}:${start}` });
  }

  // Every hit is already in MongoDB: nothing to flush.
  flushIfDue(): null {
    return null;
  }
  async flush(): Promise<void> {}
  start(): void {}
  async stop(): Promise<void> {}
}

export interface LoginDelayOptions {
  /** Failures answered at once; after that each failure doubles the wait before the next attempt. */
  freeFailures: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** Failures are forgotten this long after the last one. */
  memoryMs: number;
  /** A successful login keeps its key known (see LoginDecision.known) this long. */
  knownMs: number;
  clock: Clock;
  /** Prefix of the document ids, e.g. 'login-pair'. */
  name: string;
}

export interface LoginDecision {
  allowed: boolean;
  /** Seconds until an attempt is allowed again (0 when allowed). */
  retryAfterS: number;
  /** A login succeeded with this key within knownMs. */
  known: boolean;
}

interface DelayDoc {
  _id: string;
  /** Changes with every write: the compare-and-swap that keeps concurrent attempts from sharing a turn. */
  version: number;
  failures: number;
  /** No attempt before this (ms since the epoch). */
  nextAt: number;
  knownUntil: number;
  expiresAt: Date;
}

/** How many times an attempt retries after losing a compare-and-swap to a concurrent one. */
const DELAY_CAS_ROUNDS = 4;

/**
 * Growing delays between failed attempts for one key (a login's account and address): the first
 * freeFailures pass at once, then baseDelayMs, doubling, up to maxDelayMs. An attempt counts as a
 * failure before it is checked (succeeded() takes it back), so concurrent guesses cannot share a turn.
 */
export class LoginDelays {
  private readonly collection: Collection<DelayDoc>;
  private readonly options: LoginDelayOptions;

  constructor(db: Db, options: LoginDelayOptions) {
    this.collection = db.collection<DelayDoc>('rate_limits');
    this.options = options;
  }

  /** The wait after `failures` failures in a row. */
  delayAfter(failures: number): number {
    const { freeFailures, baseDelayMs, maxDelayMs } = this.options;
    if (failures < freeFailures) return 0;
    return backoffDelay(failures - freeFailures + 1, { base: baseDelayMs, cap: maxDelayMs, jitter: 0 });
  }

  /** Counts an attempt for `key` as a failure if its turn has come; refuses it otherwise. */
  async attempt(key: string): Promise<LoginDecision> {
    const _id = `${this.options.name}:${key}`;
    let known = false;
    for (let round = 0; round < DELAY_CAS_ROUNDS; round++) {
      const now = this.options.clock.now();
      const doc = await this.collection.findOne({ _id });
      known = (doc?.knownUntil ?? 0) > now;
      // Checked here too: the TTL monitor deletes late, and some servers have none.
      const live = doc !== null && doc.expiresAt.getTime() > now;
      const failures = live ? doc.failures : 0;
      const nextAt = live ? doc.nextAt : 0;
      if (now < nextAt) return { allowed: false, retryAfterS: Math.ceil((nextAt - now) / 1000), known };
      const fields = {
        failures: failures + 1,
        nextAt: now + this.delayAfter(failures + 1),
        expiresAt: new Date(Math.max(now + this.options.memoryMs, doc?.knownUntil ?? 0)),
      };
      if (doc === null) {
        try {
          await this.collection.insertOne({ _id, version: 1, knownUntil: 0, ...fields });
          return { allowed: true, retryAfterS: 0, known };
        } catch (error) {
          if (!isDuplicateKeyError(error)) throw error;
          continue;
        }
      }
      const swapped = await this.collection.updateOne(
        { _id, version: doc.version },
        { $set: fields, $inc: { version: 1 } },
      );
      if (swapped.modifiedCount === 1) return { allowed: true, retryAfterS: 0, known };
    }
    // Other attempts with this key kept winning the race: this one is one too many.
    return { allowed: false, retryAfterS: Math.ceil(Math.max(this.options.baseDelayMs, 1000) / 1000), known };
  }

  /** Forgets the failures of `key` and marks it known. */
  async succeeded(key: string): Promise<void> {
    const now = this.options.clock.now();
    const knownUntil = now + this.options.knownMs;
    await this.collection.updateOne(
      { _id: `${this.options.name}:${key}` },
      {
        $set: {
          failures: 0,
          nextAt: 0,
          knownUntil,
          expiresAt: new Date(Math.max(knownUntil, now + this.options.memoryMs)),
        },
        $inc: { version: 1 },
      },
      { upsert: true },
    );
  }
}

/** Local counting with periodic global sync: no database round trip per request. */
export class SharedRateLimiter implements RequestLimiter {
  private readonly collection: Collection<RateDoc>;
  private readonly options: RateLimitOptions & { flushMs: number };
  /** Per counter id: the global count last read, and the hits not yet flushed. */
  private readonly counters = new Map<string, { global: number; pending: number; end: number }>();
  private flushing: Promise<void> | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private lastFlushAt = Number.NEGATIVE_INFINITY;
  /** Flushes sent (each: one bulk write and one find). */
  flushes = 0;

  constructor(db: Db, options: RateLimitOptions & { flushMs?: number }) {
    this.collection = db.collection<RateDoc>('rate_limits');
    this.options = { ...options, flushMs: options.flushMs ?? 250 };
  }

  hit(key: string): RateDecision {
    const now = this.options.clock.now();
    const { start, end } = windowOf(now, this.options.windowMs);
    const id = `${this.options.name}:${key}:${start}`;
    let counter = this.counters.get(id);
    if (!counter) {
      counter = { global: 0, pending: 0, end };
      this.counters.set(id, counter);
    }
    const decision = decide(counter.global + counter.pending + 1, this.options.limit, now, end);
    // Refused hits are not counted, so a client that backs off is not punished twice.
    if (decision.allowed) counter.pending++;
    return decision;
  }

  /** Sends pending increments and reads back the global totals. Concurrent callers share one flush. */
  flush(): Promise<void> {
    if (!this.flushing) {
      this.lastFlushAt = this.options.clock.now();
      this.flushing = this.send().finally(() => {
        this.flushing = null;
      });
    }
    return this.flushing;
  }

  private async send(): Promise<void> {
    const now = this.options.clock.now();
    for (const [id, counter] of this.counters) if (counter.end < now) this.counters.delete(id);
    if (this.counters.size === 0) return;
    const batch = [...this.counters.entries()].map(([id, counter]) => ({ id, counter, sent: counter.pending }));
    const operations: AnyBulkWriteOperation<RateDoc>[] = batch
      .filter((entry) => entry.sent > 0)
      .map(({ id, counter, sent }) => ({
        updateOne: {
          filter: { _id: id },
          update: { $inc: { count: sent }, $setOnInsert: { expiresAt: new Date(counter.end + 60_000) } },
          upsert: true,
        },
      }));
    this.flushes++;
    if (operations.length > 0) await this.collection.bulkWrite(operations, { ordered: false });
    // The sent hits move from pending to global at once: until the read-back below lands, the
    // local view must still count them (else this instance admits them a second time meanwhile).
    for (const entry of batch) {
      entry.counter.pending -= entry.sent;
      entry.counter.global += entry.sent;
    }
    const totals = await this.collection.find({ _id: { $in: batch.map((entry) => entry.id) } }).toArray();
    for (const doc of totals) {
      const counter = this.counters.get(doc._id);
      if (counter) counter.global = doc.count;
    }
  }

  /**
   * For runtimes without background timers (workerd): starts a flush when the last one began at
   * least flushMs ago and returns it (hand it to waitUntil); null when none is due or start() runs.
   */
  flushIfDue(): Promise<void> | null {
    if (this.timer || this.flushing) return null;
    if (this.options.clock.now() - this.lastFlushAt < this.options.flushMs) return null;
    return this.flush().catch(() => {});
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.flush().catch(() => {}), this.options.flushMs);
    (this.timer as { unref?: () => void }).unref?.();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.flush().catch(() => {});
  }
}
