// Leases with fencing tokens on MongoDB. Expiry is decided by the database server's clock ($$NOW in the
// filter), never by an instance's clock; the holder keeps a conservative local deadline on a monotonic
// clock (measured from when it SENT the request) and is told through lease.signal when it passes.
// A lease is only as safe as the writes it protects: they carry lease.token through fencedUpdate or
// claimFence, so a holder that was paused past its TTL is refused after a newer holder wrote.
import type { Collection, Db, Document, Filter, UpdateFilter, UpdateResult } from 'mongodb';
import { backoffDelay, type Clock, sleep } from '../core/clock.ts';
import { type IndexPlan, isDuplicateKeyError } from '../core/db.ts';
import { LockLostError, LockTimeoutError, StaleTokenError, ValidationError } from '../core/errors.ts';

export const LOCKS_COLLECTION = 'locks';
export const FENCES_COLLECTION = 'fences';

/**
 * No index: every lease filter starts with `_id`. And deliberately no TTL index: a lock document is
 * never deleted (a release only marks it free), because its `token` counter must survive it.
 */
export const lockIndexPlans: IndexPlan[] = [];

/** One document per lock key, kept forever so that `token` only ever grows. */
export interface LockDoc {
  _id: string;
  owner: string;
  /** Fencing token: `$inc`-ed by every acquisition of this key, by any process. */
  token: number;
  ttlMs: number;
  /** Set by the server ($currentDate) on acquire and renew; the lease ends at stampedAt + ttlMs. */
  stampedAt: Date;
}

/** The shared fence of a resource that is not one document (see claimFence). */
export interface FenceDoc {
  _id: string;
  key: string;
  token: number;
}

export interface Lease {
  readonly key: string;
  readonly owner: string;
  readonly token: number;
  /** The server's end of the lease: its stampedAt + ttlMs. Informational; the holder obeys `signal`. */
  readonly expiresAt: Date;
  /** Aborted (with a LockLostError) when the lease is lost or its local deadline passes unrenewed. */
  readonly signal: AbortSignal;
}

export interface AcquireOptions {
  /** Lease length; defaults to the manager's ttlMs. */
  ttlMs?: number;
  /** Defaults to the manager's owner id (one random id per manager). */
  owner?: string;
  /** How long to keep retrying while the lease is held by someone else; 0 = one attempt. */
  waitMs?: number;
}

export interface LockManagerOptions {
  /** Default lease length (ms); config LEASE_TTL_MS. */
  ttlMs?: number;
  owner?: string;
  /** A monotonic local clock for the holder's own deadline; never used to decide expiry. */
  clock?: Clock;
  /** Full-jitter exponential backoff between attempts while waiting. */
  retryMinMs?: number;
  retryMaxMs?: number;
  collection?: string;
}

const monotonicClock: Clock = { now: () => performance.now() };

// ---- MongoDB filters and updates of the locks collection -------------------------------------------

const leaseEnd = { $add: ['$stampedAt', '$ttlMs'] };

/** Matches a free or expired lease by the server's clock. A missing/held one makes the upsert hit E11000. */
function acquireFilter(key: string): Filter<LockDoc> {
  return { _id: key, $expr: { $lte: [leaseEnd, '$$NOW'] } };
}

function acquireUpdate(owner: string, ttlMs: number): UpdateFilter<LockDoc> {
  return { $set: { owner, ttlMs }, $currentDate: { stampedAt: true }, $inc: { token: 1 } };
}

/** Only the holder, with its token, and only while the server still considers the lease live. */
function renewFilter(lease: Lease): Filter<LockDoc> {
  return { _id: lease.key, owner: lease.owner, token: lease.token, $expr: { $gt: [leaseEnd, '$$NOW'] } };
}

const renewUpdate: UpdateFilter<LockDoc> = { $currentDate: { stampedAt: true } };

function holderFilter(lease: Lease): Filter<LockDoc> {
  return { _id: lease.key, owner: lease.owner, token: lease.token };
}

/** Marks the lease free; the document (and its token) stays. */
const releaseUpdate: UpdateFilter<LockDoc> = { $set: { ttlMs: 0 } };

function unrefTimer(timer: ReturnType<typeof setTimeout>): void {
  // Node only: a lease's timers alone should not keep a process alive. Other runtimes lack unref.
  (timer as { unref?: () => void }).unref?.();
}

function positiveInt(name: string, value: number, allowZero = false): number {
  if (!Number.isInteger(value) || value < (allowZero ? 0 : 1)) {
    throw new ValidationError(`${name} must be an integer >= ${allowZero ? 0 : 1}, got ${value}`);
  }
  return value;
}

/**
 * When the holder must consider its lease over: ttl after it sent the request, less a margin because the
 * server stamps whole milliseconds and the two clocks may run at slightly different rates (0.1%).
 */
function localDeadline(sentAt: number, ttlMs: number): number {
  return sentAt + ttlMs - 2 - ttlMs / 1000;
}

// ---- Leases -----------------------------------------------------------------------------------------

class HeldLease implements Lease {
  readonly key: string;
  readonly owner: string;
  readonly token: number;
  readonly ttlMs: number;
  expiresAt: Date;
  private readonly controller = new AbortController();
  private readonly clock: Clock;
  private deadline: number;
  private deadlineTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(doc: LockDoc, sentAt: number, clock: Clock) {
    this.key = doc._id;
    this.owner = doc.owner;
    this.token = doc.token;
    this.ttlMs = doc.ttlMs;
    this.expiresAt = new Date(doc.stampedAt.getTime() + doc.ttlMs);
    this.clock = clock;
    this.deadline = localDeadline(sentAt, doc.ttlMs);
    this.armDeadline();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** A renewal sent at `sentAt` succeeded: the lease lasts at least ttlMs from then. */
  extend(sentAt: number, doc: LockDoc): void {
    if (this.signal.aborted) return;
    this.expiresAt = new Date(doc.stampedAt.getTime() + doc.ttlMs);
    this.deadline = Math.max(this.deadline, localDeadline(sentAt, this.ttlMs));
    this.armDeadline();
  }

  lose(reason: string): void {
    this.disarm();
    if (this.signal.aborted) return;
    this.controller.abort(
      new LockLostError(`lease "${this.key}" (token ${this.token}) lost: ${reason}`, {
        key: this.key,
        owner: this.owner,
        token: this.token,
      }),
    );
  }

  disarm(): void {
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
  }

  private armDeadline(): void {
    this.disarm();
    this.deadlineTimer = setTimeout(
      () => this.lose('not renewed before its local deadline'),
      Math.max(0, this.deadline - this.clock.now()),
    );
    unrefTimer(this.deadlineTimer);
  }
}

export class LockManager {
  readonly owner: string;
  private readonly locks: Collection<LockDoc>;
  private readonly ttlMs: number;
  private readonly clock: Clock;
  private readonly retryMinMs: number;
  private readonly retryMaxMs: number;

  constructor(db: Db, options: LockManagerOptions = {}) {
    this.locks = db.collection<LockDoc>(options.collection ?? LOCKS_COLLECTION);
    this.ttlMs = positiveInt('ttlMs', options.ttlMs ?? 15_000);
    this.owner = options.owner ?? crypto.randomUUID();
    this.clock = options.clock ?? monotonicClock;
    this.retryMinMs = options.retryMinMs ?? 2;
    this.retryMaxMs = options.retryMaxMs ?? 50;
  }

  /** One attempt: the lease document if we got it, null if someone else holds it. */
  private async tryAcquire(key: string, owner: string, ttlMs: number): Promise<LockDoc | null> {
    try {
      return await this.locks.findOneAndUpdate(acquireFilter(key), acquireUpdate(owner, ttlMs), {
        upsert: true,
        returnDocument: 'after',
      });
    } catch (error) {
      // The filter missed (held), so the upsert tried to insert an existing _id.
      if (isDuplicateKeyError(error)) return null;
      throw error;
    }
  }

  /** Acquires `key`, retrying with jittered backoff for up to waitMs; null if it stayed held. */
  async acquire(key: string, options: AcquireOptions = {}): Promise<Lease | null> {
    const ttlMs = positiveInt('ttlMs', options.ttlMs ?? this.ttlMs);
    const waitMs = positiveInt('waitMs', options.waitMs ?? 0, true);
    const owner = options.owner ?? this.owner;
    const giveUpAt = this.clock.now() + waitMs;
    for (let attempt = 0; ; attempt++) {
      const sentAt = this.clock.now();
      const doc = await this.tryAcquire(key, owner, ttlMs);
      if (doc) return new HeldLease(doc, sentAt, this.clock);
      const remaining = giveUpAt - this.clock.now();
      if (remaining <= 0) return null;
      await sleep(Math.min(remaining, backoffDelay(attempt + 1, { base: this.retryMinMs, cap: this.retryMaxMs })));
    }
  }

  /**
   * Extends the lease by its ttl from now (server time). False, and lease.signal aborted, when the lease
   * is gone: expired by the server's clock, taken over, or released. Throws if the server is unreachable
   * (the lease's local deadline then aborts its signal).
   */
  async renew(lease: Lease): Promise<boolean> {
    const held = asHeld(lease);
    if (held.signal.aborted) return false;
    const sentAt = this.clock.now();
    const doc = await this.locks.findOneAndUpdate(renewFilter(held), renewUpdate, { returnDocument: 'after' });
    if (!doc) {
      held.lose('expired, taken over or released before renewal');
      return false;
    }
    held.extend(sentAt, doc);
    return true;
  }

  /** Frees the lease if we still hold it (same owner AND token): a stale holder's release changes nothing. */
  async release(lease: Lease): Promise<boolean> {
    asHeld(lease).disarm();
    const result = await this.locks.updateOne(holderFilter(lease), releaseUpdate);
    return result.matchedCount === 1;
  }

  /**
   * Runs fn under the lease, renewing it every ttl/3, and always releases. Throws LockTimeoutError when
   * the lease could not be had within waitMs, and LockLostError when it was lost while fn ran: fn is
   * told through lease.signal and withLock waits for fn to settle, then throws even if fn succeeded.
   */
  async withLock<T>(key: string, fn: (lease: Lease) => Promise<T> | T, options: AcquireOptions = {}): Promise<T> {
    const lease = await this.acquire(key, options);
    if (!lease) {
      throw new LockTimeoutError(`lock "${key}" is held; gave up after ${options.waitMs ?? 0} ms`, {
        key,
        waitMs: options.waitMs ?? 0,
      });
    }
    const held = asHeld(lease);
    const stopRenewing = this.renewEvery(held, Math.max(1, Math.floor(held.ttlMs / 3)));
    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, value: await fn(lease) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    await stopRenewing();
    if (held.signal.aborted) {
      // Best effort and not awaited: the server may be the reason we lost it.
      this.release(held).catch(() => {});
      throw withCause(held.signal.reason, outcome);
    }
    let released = true;
    try {
      released = await this.release(held);
    } catch {
      // fn ran while the lease was ours; the unreleased lease just expires on its own.
    }
    if (!released) {
      // Someone else holds it now, so fn's work may not have been exclusive: say so.
      held.lose('taken over before release');
      throw withCause(held.signal.reason, outcome);
    }
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  /** Renews every intervalMs; the returned stop() also waits out a renewal in flight (or the lease's loss). */
  private renewEvery(lease: HeldLease, intervalMs: number): () => Promise<void> {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let inFlight: Promise<unknown> = Promise.resolve();
    const beat = () => {
      inFlight = this.renew(lease).then(
        () => {
          if (!stopped && !lease.signal.aborted) schedule();
        },
        // Unreachable server: retry on the next beat; the local deadline decides when it is lost.
        () => {
          if (!stopped && !lease.signal.aborted) schedule();
        },
      );
    };
    const schedule = () => {
      timer = setTimeout(beat, intervalMs);
      unrefTimer(timer);
    };
    schedule();
    const lost = new Promise<void>((resolve) =>
      lease.signal.addEventListener('abort', () => resolve(), { once: true }),
    );
    return async () => {
      stopped = true;
      clearTimeout(timer);
      // A renewal that lands after the release would find the lease free and report a false loss.
      if (!lease.signal.aborted) await Promise.race([inFlight, lost]);
    };
  }
}

function asHeld(lease: Lease): HeldLease {
  if (!(lease instanceof HeldLease)) throw new ValidationError('not a lease returned by LockManager.acquire');
  return lease;
}

function withCause(reason: unknown, outcome: { ok: true } | { ok: false; error: unknown }): unknown {
  // Keep fn's own error (often an AbortError from the signal) as the cause.
  if (reason instanceof LockLostError && !outcome.ok) reason.cause ??= outcome.error;
  return reason;
}

// ---- Fencing: the guard a protected write uses ------------------------------------------------------

/** Where a document keeps the newest token it accepted per lock key; `.`, `$` and `%` are escaped. */
export function fenceField(key: string): string {
  return `fences.${key.replace(/%/g, '%25').replace(/\./g, '%2E').replace(/\$/g, '%24')}`;
}

function storedFence(doc: Document, key: string): number | undefined {
  const fences = doc.fences as Record<string, unknown> | undefined;
  const value = fences?.[fenceField(key).slice('fences.'.length)];
  return typeof value === 'number' ? value : undefined;
}

/**
 * updateOne that only applies if the document's fence for lease.key is absent or <= lease.token, and
 * records lease.token there. Throws StaleTokenError when the document exists but a newer holder already
 * wrote to it; returns matchedCount 0 when no document matches `filter` (no upsert: an upsert past a
 * refused fence would insert a second document).
 */
export async function fencedUpdate<T extends Document>(
  collection: Collection<T>,
  filter: Filter<T>,
  update: UpdateFilter<T>,
  lease: Pick<Lease, 'key' | 'token'>,
): Promise<UpdateResult<T>> {
  const field = fenceField(lease.key);
  const fenced = { $and: [filter, { $or: [{ [field]: { $exists: false } }, { [field]: { $lte: lease.token } }] }] };
  const set = { ...(update.$set ?? {}), [field]: lease.token };
  const result = await collection.updateOne(fenced as Filter<T>, { ...update, $set: set } as UpdateFilter<T>);
  if (result.matchedCount > 0) return result;
  const current = await collection.findOne(filter, { projection: { [field]: 1 } });
  const stored = current ? storedFence(current, lease.key) : undefined;
  if (stored !== undefined && stored > lease.token) {
    throw new StaleTokenError(`write refused: lock "${lease.key}" token ${lease.token} is older than ${stored}`, {
      key: lease.key,
      token: lease.token,
      accepted: stored,
    });
  }
  return result;
}

/**
 * For a side effect outside one document: records lease.token as the newest accepted for `resource`
 * (collection `fences`), or throws StaleTokenError if a newer token was already recorded. Once a newer
 * holder has claimed, every older holder's claim fails. All tokens for one resource must come from one
 * lock key (tokens of different keys are not comparable); a resource claimed under another key is refused.
 */
export async function claimFence(db: Db, resource: string, lease: Pick<Lease, 'key' | 'token'>): Promise<void> {
  const fences = db.collection<FenceDoc>(FENCES_COLLECTION);
  try {
    await fences.updateOne(
      { _id: resource, key: lease.key, token: { $lte: lease.token } },
      { $set: { key: lease.key, token: lease.token } },
      { upsert: true },
    );
  } catch (error) {
    if (!isDuplicateKeyError(error)) throw error;
    const current = await fences.findOne({ _id: resource });
    if (current && current.key !== lease.key) {
      const message = `resource "${resource}" is fenced by lock "${current.key}", not "${lease.key}"`;
      throw new ValidationError(message, undefined, { cause: error });
    }
    throw new StaleTokenError(
      `claim refused: lock "${lease.key}" token ${lease.token} is older than ${current?.token} on "${resource}"`,
      { key: lease.key, token: lease.token, accepted: current?.token, resource },
      { cause: error },
    );
  }
}
