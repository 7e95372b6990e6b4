// Presence: which admin is editing which application right now. One document per (application, admin),
// renewed by the admin's console every few seconds and valid until its expiresAt (written on the server's
// clock, ServerClock). An entry counts while expiresAt is ahead of the server time: every read filters on
// it, and a TTL index deletes what has lapsed (mongod's TTL monitor, about once a minute; the offline
// server has none, so there the filter alone hides them). Advisory only: nothing is locked, writes are
// still decided by their versions. Reads go through a per-instance cache, so however many admins poll,
// an instance sends one query per cache period.
import type { Collection, Db } from 'mongodb';
import { TtlCache } from '../concurrency/ttl-cache.ts';
import type { Clock } from '../core/clock.ts';
import type { IndexPlan } from '../core/db.ts';

export const PRESENCE_COLLECTION = 'presence';
/** How long an instance serves the list of editors from memory (ms). */
export const PRESENCE_CACHE_MS = 1_000;
/** Entries one read returns at most (one per admin editing, so far more than any console shows). */
export const PRESENCE_MAX_ENTRIES = 10_000;

export interface PresenceDoc {
  /** `<applicationId>:<adminId>`: one entry per admin and application. */
  _id: string;
  applicationId: string;
  adminId: string;
  adminName?: string;
  adminEmail?: string;
  /** When this stretch of editing began (a lapsed entry starts a new one). */
  since: Date;
  expiresAt: Date;
}

export type PresenceEntry = Omit<PresenceDoc, '_id'>;

/** The TTL index deletes lapsed entries; it also serves the read of every unexpired one. */
export const presenceIndexes: IndexPlan = {
  collection: PRESENCE_COLLECTION,
  indexes: [{ key: { expiresAt: 1 }, name: 'expiresAt_ttl', expireAfterSeconds: 0 }],
};

export const presenceQueries = {
  idOf: (applicationId: string, adminId: string) => `${applicationId}:${adminId}`,
  /** The entry, if it has not lapsed: a renewal only moves the expiry of a live one. */
  live: (id: string, now: Date) => ({ _id: id, expiresAt: { $gt: now } }),
  renew: (expiresAt: Date) => ({ $set: { expiresAt } }),
  unexpired: (now: Date) => ({ expiresAt: { $gt: now } }),
  publicProjection: { _id: 0 } as const,
};

export interface PresenceOptions {
  clock: Clock;
  /** How long a mark lasts without renewal (PRESENCE_TTL_MS). */
  ttlMs: number;
  cacheMs?: number;
}

/** Who the admin is, for the others' screens; read once per stretch of editing. */
export interface Editor {
  id: string;
  name?: string;
  email?: string;
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export class Presence {
  readonly collection: Collection<PresenceDoc>;
  private readonly clock: Clock;
  private readonly ttlMs: number;
  private readonly cache: TtlCache<PresenceEntry[]>;

  constructor(db: Db, options: PresenceOptions) {
    this.collection = db.collection<PresenceDoc>(PRESENCE_COLLECTION);
    this.clock = options.clock;
    this.ttlMs = options.ttlMs;
    this.cache = new TtlCache({ clock: options.clock, ttlMs: options.cacheMs ?? PRESENCE_CACHE_MS, maxEntries: 1 });
  }

  /**
   * Marks `adminId` as editing the application until now + ttlMs. A live entry is renewed with one update;
   * otherwise `start` is asked who the editor is (null: the application does not exist, nothing written)
   * and a new stretch begins. Returns the entry, or null when `start` refused.
   */
  async mark(
    applicationId: string,
    adminId: string,
    start: () => Promise<Editor | null>,
  ): Promise<PresenceEntry | null> {
    const now = this.clock.now();
    const expiresAt = new Date(now + this.ttlMs);
    const id = presenceQueries.idOf(applicationId, adminId);
    const renewed = await this.collection.findOneAndUpdate(
      presenceQueries.live(id, new Date(now)),
      presenceQueries.renew(expiresAt),
      { returnDocument: 'after', projection: presenceQueries.publicProjection },
    );
    if (renewed) return renewed;
    const editor = await start();
    if (!editor) return null;
    const entry: PresenceEntry = {
      applicationId,
      adminId,
      ...(editor.name ? { adminName: editor.name } : {}),
      ...(editor.email ? { adminEmail: editor.email } : {}),
      since: new Date(now),
      expiresAt,
    };
    // A lapsed entry (not yet deleted by the TTL monitor) is replaced whole: a new stretch, a new since.
    await this.collection.replaceOne({ _id: id }, entry, { upsert: true });
    return entry;
  }

  /** Ends the admin's mark on the application; false when there was none. */
  async end(applicationId: string, adminId: string): Promise<boolean> {
    const { deletedCount } = await this.collection.deleteOne({ _id: presenceQueries.idOf(applicationId, adminId) });
    return deletedCount === 1;
  }

  /**
   * Every unexpired entry, by application then since: one query per cache period on this instance, and
   * entries that lapsed since that query are left out on the way out.
   */
  async editing(signal?: AbortSignal): Promise<PresenceEntry[]> {
    const read = await this.cache.get('all', undefined, () => this.load(), signal);
    const now = this.clock.now();
    return read.value.filter((entry) => entry.expiresAt.getTime() > now);
  }

  private async load(): Promise<PresenceEntry[]> {
    const entries = await this.collection
      .find(presenceQueries.unexpired(new Date(this.clock.now())), {
        projection: presenceQueries.publicProjection,
      })
      .limit(PRESENCE_MAX_ENTRIES)
      .toArray();
    return entries.sort(
      (a, b) =>
        compare(a.applicationId, b.applicationId) ||
        a.since.getTime() - b.since.getTime() ||
        compare(a.adminId, b.adminId),
    );
  }
}
