// Revoked access tokens, seen by every instance within a stated bound at near-zero cost.
//
// Access tokens are short-lived JWTs, so a revocation only has to be remembered for as long as
// a token it covers can still pass verification: the longest lifetime plus the verifier's leeway.
// Each instance keeps the recent revocations in memory and refreshes them with one small query at
// most every `maxStalenessMs` (single-flight), however many requests it serves: an authenticated
// request pays no database round trip while the cache is fresh, and a revocation committed at time
// t is refused everywhere from t + maxStalenessMs + one round trip on. Node also refreshes in the
// background so requests rarely wait; workerd and Deno refresh lazily on the request that finds the
// cache stale.
//
// Optionally (REDIS_URL on Node) a bus tells the other instances of a revocation as soon as it is
// written (RevocationBus, published after the database write); what they hear goes into the same
// maps. The refresh above goes on unchanged, so a lost or late notice is still refused within the bound.
import type { Collection, Db } from 'mongodb';
import type { Clock } from '../core/clock.ts';
import type { IndexPlan } from '../core/db.ts';

export type RevocationKind = 'jti' | 'sid' | 'admin';

export interface RevocationDoc {
  _id: string;
  kind: RevocationKind;
  value: string;
  /** For kind 'admin': every token of that admin issued before this instant is refused. */
  before?: Date;
  /** Server time of the write ($currentDate): what the caches poll on. */
  at: Date;
  /** Clean-up only (TTL index); correctness never waits for it. */
  expiresAt: Date;
}

export const revocationIndexes: IndexPlan = {
  collection: 'revocations',
  indexes: [
    { key: { at: 1 }, name: 'at_1' },
    { key: { expiresAt: 1 }, name: 'expiresAt_ttl', expireAfterSeconds: 0 },
  ],
};

/** What the cache needs to know of a verified access token. */
export interface TokenIdentity {
  jti: string;
  sid: string;
  sub: string;
  /** Issued-at in milliseconds since the epoch. */
  iatMs: number;
}

/** A revocation as another instance hears of it: the entry this instance just wrote to the database. */
export interface RevocationNotice {
  kind: RevocationKind;
  value: string;
  /** When it was revoked (for 'admin': the cutoff, tokens issued before it are refused), ms since the epoch. */
  atMs: number;
}

/**
 * Tells the other instances of revocations at once (Node with REDIS_URL: api/redis.ts). Called after the
 * database write succeeded; must not throw: a lost notice only leaves the refresh's bound.
 */
export interface RevocationBus {
  publish(notices: RevocationNotice[]): void;
}

export interface RevocationOptions {
  /**
   * How long after its revocation a covered token can still pass verification (ms): entries are kept
   * that long (plus overlapMs). Sessions raises it to its token lifetime plus leeway (cover()).
   */
  retainMs: number;
  /** The bound: a revocation older than this is always seen (plus one round trip). */
  maxStalenessMs?: number;
  /** Entries stamped this long before the newest one seen are read again, in case they became visible late. */
  overlapMs?: number;
  clock: Clock;
}

export class Revocations {
  readonly maxStalenessMs: number;
  private readonly collection: Collection<RevocationDoc>;
  private retainMs: number;
  private readonly overlapMs: number;
  private readonly clock: Clock;
  private readonly jtis = new Map<string, number>();
  private readonly sids = new Map<string, number>();
  private readonly adminCutoffs = new Map<string, number>();
  private newestAt = 0;
  private syncedAt = Number.NEGATIVE_INFINITY;
  private inFlight: Promise<void> | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  /** Database commands this cache has sent (for benchmarks and tests). */
  syncs = 0;
  /** Refreshes that failed (the cache kept what it had; exported as a metric by the Node API). */
  syncFailures = 0;
  /** Revocations heard from other instances through the bus. */
  heardCount = 0;
  /** Where this instance's revocations are announced (null: none; the refresh alone bounds them). */
  bus: RevocationBus | null = null;

  constructor(db: Db, options: RevocationOptions) {
    this.collection = db.collection<RevocationDoc>('revocations');
    this.retainMs = options.retainMs;
    this.maxStalenessMs = options.maxStalenessMs ?? 500;
    this.overlapMs = options.overlapMs ?? 2_000;
    this.clock = options.clock;
  }

  /** Keeps every entry at least `windowMs` after its revocation: no token it covers passes before then. */
  cover(windowMs: number): void {
    this.retainMs = Math.max(this.retainMs, windowMs);
  }

  /** How long entries are kept after their revocation (ms), overlap included. */
  get keptForMs(): number {
    return this.retainMs + this.overlapMs;
  }

  async revokeToken(jti: string): Promise<void> {
    await this.write('jti', jti);
  }

  async revokeSession(sid: string): Promise<void> {
    await this.write('sid', sid);
  }

  /** Several session families at once (one bulk write). */
  async revokeSessions(sids: string[]): Promise<void> {
    if (sids.length === 0) return;
    const now = this.clock.now();
    await this.collection.bulkWrite(
      sids.map((sid) => ({
        updateOne: {
          filter: { _id: `sid:${sid}` },
          update: {
            $set: { kind: 'sid' as const, value: sid, expiresAt: new Date(now + this.keptForMs) },
            $currentDate: { at: true },
          },
          upsert: true,
        },
      })),
      { ordered: false },
    );
    for (const sid of sids) this.remember('sid', sid, now);
    this.bus?.publish(sids.map((sid) => ({ kind: 'sid' as const, value: sid, atMs: now })));
  }

  /** Every access token of this admin issued up to now is refused. */
  async revokeAdmin(adminId: string): Promise<void> {
    await this.write('admin', adminId);
  }

  private async write(kind: RevocationKind, value: string): Promise<void> {
    const now = this.clock.now();
    await this.collection.updateOne(
      { _id: `${kind}:${value}` },
      {
        $set: { kind, value, expiresAt: new Date(now + this.keptForMs) },
        $currentDate: { at: true },
        ...(kind === 'admin' ? { $max: { before: new Date(now) } } : {}),
      },
      { upsert: true },
    );
    // The instance that revoked knows at once, without waiting for its next sync.
    this.remember(kind, value, now);
    this.bus?.publish([{ kind, value, atMs: now }]);
  }

  /** Revocations another instance announced on the bus: refused here from now on, like those the refresh reads. */
  heard(notices: RevocationNotice[]): void {
    for (const notice of notices) {
      this.remember(notice.kind, notice.value, notice.atMs);
      this.heardCount++;
    }
  }

  /** True when the token is revoked as far as this instance knows. Call ensureFresh() first. */
  isRevoked(token: TokenIdentity): boolean {
    if (this.jtis.has(token.jti) || this.sids.has(token.sid)) return true;
    const cutoff = this.adminCutoffs.get(token.sub);
    return cutoff !== undefined && token.iatMs < cutoff;
  }

  /** When the last successful refresh began (server clock ms; -Infinity before the first). */
  get lastSyncAt(): number {
    return this.syncedAt;
  }

  /** Refreshes when the cache is older than the bound; concurrent callers share one query. */
  async ensureFresh(): Promise<void> {
    if (this.clock.now() - this.syncedAt <= this.maxStalenessMs) return;
    await this.sync();
  }

  sync(): Promise<void> {
    if (!this.inFlight) {
      const started = this.clock.now();
      this.inFlight = this.load()
        .then(
          () => {
            this.syncedAt = started;
          },
          (error) => {
            this.syncFailures++;
            throw error;
          },
        )
        .finally(() => {
          this.inFlight = null;
        });
    }
    return this.inFlight;
  }

  private async load(): Promise<void> {
    this.syncs++;
    const since =
      this.newestAt === 0 ? new Date(this.clock.now() - this.keptForMs) : new Date(this.newestAt - this.overlapMs);
    const docs = await this.collection.find({ at: { $gte: since } }).toArray();
    for (const doc of docs) {
      this.remember(doc.kind, doc.value, doc.before?.getTime() ?? doc.at.getTime());
      this.newestAt = Math.max(this.newestAt, doc.at.getTime());
    }
    this.forgetOld();
  }

  /** For 'admin', `atMs` is the cutoff: tokens issued before it are refused. */
  private remember(kind: RevocationKind, value: string, atMs: number): void {
    const map = kind === 'jti' ? this.jtis : kind === 'sid' ? this.sids : this.adminCutoffs;
    map.set(value, Math.max(atMs, map.get(value) ?? 0));
  }

  private forgetOld(): void {
    // An entry at `at` covers tokens issued no later than `at`; the last of them passes verification
    // until at + retainMs, so the entry goes only after that (overlapMs absorbs instance clock error).
    const horizon = this.clock.now() - this.keptForMs;
    for (const map of [this.jtis, this.sids, this.adminCutoffs]) {
      for (const [key, at] of map) if (at < horizon) map.delete(key);
    }
  }

  /** Background refresh (Node): keeps requests from waiting on a stale cache. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.sync().catch(() => {}), Math.max(50, this.maxStalenessMs * 0.8));
    (this.timer as { unref?: () => void }).unref?.();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
