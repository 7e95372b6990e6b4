// The change feed of one instance: ONE source of application changes (a change stream where the server
// raises events for findOneAndUpdate, a poll otherwise), fanned out in memory to every subscriber, and a
// bounded history for Last-Event-ID resume. Event ids are derived from (updatedAt, applicationId,
// version), so every instance names the same change with the same id. Runtime-neutral: Web APIs only.
import type { ChangeStream, Collection, Db, Document } from 'mongodb';
import { type ServerClock, sleep } from '../core/clock.ts';
import { APPLICATIONS_COLLECTION, type ApplicationDoc, type ApplicationStatus } from './applications.ts';

/** One change of one application, as clients see it: never the document body. */
export interface ApplicationEvent {
  /** The SSE id: `<updatedAt ms>_<version>_<applicationId>`, the same on every instance. */
  id: string;
  applicationId: string;
  version: number;
  status: ApplicationStatus;
  /** The previous status, when this change moved the status. */
  from?: ApplicationStatus;
  /** updatedAt, in ms since the epoch. */
  at: number;
  /** What the change was (create, update, batch-update, disburse), when the version carries a lastChange. */
  action?: string;
}

export type FeedSource = 'auto' | 'change-stream' | 'poll';

export interface FeedOptions {
  clock: ServerClock;
  source: FeedSource;
  pollMs: number;
  marginMs: number;
  historyMs: number;
  historyMax: number;
  /** How long the auto probe waits for its change event (ms). */
  probeMs?: number;
  onError?: (error: unknown) => void;
}

/** What resuming after an id gives: the events to send again, or `reload` when the history cannot say. */
export type Resume = { replay: ApplicationEvent[] } | { reload: true };

/** The fields a change is read from (the poll, the history's prime and the change stream's lookup). */
const eventProjection = { _id: 1, version: 1, status: 1, updatedAt: 1, lastChange: 1 } as const;
type ChangedDoc = Pick<ApplicationDoc, '_id' | 'version' | 'status' | 'updatedAt' | 'lastChange'>;
/** A poll reads at most this many changes; more within one interval and margin is logged. */
const POLL_BATCH = 10_000;
const PROBE_COLLECTION = 'events_probe';

export const feedQueries = {
  /** Changes stamped at or after `from`, oldest first (the {updatedAt, _id} index). */
  since: (from: Date) => ({ updatedAt: { $gte: from } }),
  order: { updatedAt: 1, _id: 1 } as const,
  newestFirst: { updatedAt: -1, _id: -1 } as const,
  streamPipeline: [{ $match: { operationType: { $in: ['insert', 'update', 'replace'] } } }],
};

export function eventId(at: number, version: number, applicationId: string): string {
  return `${at}_${version}_${applicationId}`;
}

/** The parts of an id, or null when it is not one of ours. */
export function parseEventId(id: string): { at: number; version: number; applicationId: string } | null {
  const match = /^(\d{1,15})_(\d{1,12})_(.{1,200})$/.exec(id);
  if (!match) return null;
  return { at: Number(match[1]), version: Number(match[2]), applicationId: match[3]! };
}

/** The event a stored document stands for; `from` and `action` only when its lastChange made this version. */
export function eventOf(doc: ChangedDoc): ApplicationEvent | null {
  if (!(doc.updatedAt instanceof Date) || typeof doc.version !== 'number') return null;
  const at = doc.updatedAt.getTime();
  const event: ApplicationEvent = {
    id: eventId(at, doc.version, doc._id),
    applicationId: doc._id,
    version: doc.version,
    status: doc.status,
    at,
  };
  const change = doc.lastChange;
  if (change && (change.version === undefined || change.version === doc.version)) {
    if (change.from) event.from = change.from;
    if (change.action) event.action = change.action;
  }
  return event;
}

/** Order of the history: (at, applicationId, version). */
function compare(a: ApplicationEvent, b: ApplicationEvent): number {
  if (a.at !== b.at) return a.at - b.at;
  if (a.applicationId !== b.applicationId) return a.applicationId < b.applicationId ? -1 : 1;
  return a.version - b.version;
}

/** The recent events in id order, bounded by age and count; knows from when on it is complete. */
export class EventHistory {
  private readonly events: ApplicationEvent[] = [];
  /** Every event stamped at or after this is held (or was never written). */
  coversFrom: number;
  private readonly maxAgeMs: number;
  private readonly maxCount: number;

  constructor(coversFrom: number, maxAgeMs: number, maxCount: number) {
    this.coversFrom = coversFrom;
    this.maxAgeMs = maxAgeMs;
    this.maxCount = maxCount;
  }

  get size(): number {
    return this.events.length;
  }

  add(event: ApplicationEvent, now: number): void {
    let i = this.events.length;
    while (i > 0 && compare(this.events[i - 1]!, event) > 0) i--;
    this.events.splice(i, 0, event);
    this.trim(now);
  }

  private trim(now: number): void {
    const oldest = now - this.maxAgeMs;
    let drop = Math.max(0, this.events.length - this.maxCount);
    while (drop < this.events.length && this.events[drop]!.at < oldest) drop++;
    if (drop === 0) return;
    // Events stamped like the last one dropped may be gone too: the history is complete after it.
    this.coversFrom = Math.max(this.coversFrom, this.events[drop - 1]!.at + 1, oldest);
    this.events.splice(0, drop);
  }

  /**
   * Every held event after `id`, and those stamped up to `marginMs` before it (a write may land after
   * a later-stamped one): a client may get an event twice, never miss one. Reload when the id is not
   * ours or older than what the history covers.
   */
  after(id: string, marginMs: number): Resume {
    const parsed = parseEventId(id);
    if (!parsed || parsed.at - marginMs < this.coversFrom) return { reload: true };
    const from = parsed.at - marginMs;
    return { replay: this.events.filter((event) => event.id !== id && event.at >= from) };
  }
}

/** One source per instance, fanned out to subscribers; start() primes the history and picks the source. */
export class ApplicationFeed {
  mode: 'change-stream' | 'poll' | 'stopped' = 'stopped';
  history: EventHistory;
  private readonly collection: Collection<ApplicationDoc>;
  private readonly db: Db;
  private readonly options: FeedOptions;
  private readonly subscribers = new Set<(event: ApplicationEvent) => void>();
  /** (applicationId, version) already emitted, with their stamp: a margin re-read emits nothing twice. */
  private readonly seen = new Map<string, number>();
  private closing = false;
  private cursor = 0;
  private pollTimer: ReturnType<typeof setTimeout> | undefined;
  private stream: ChangeStream<ApplicationDoc, Document> | null = null;
  private reader: Promise<void> | null = null;

  constructor(db: Db, options: FeedOptions) {
    this.db = db;
    this.collection = db.collection<ApplicationDoc>(APPLICATIONS_COLLECTION);
    this.options = options;
    this.history = new EventHistory(Number.POSITIVE_INFINITY, options.historyMs, options.historyMax);
  }

  get started(): boolean {
    return this.mode !== 'stopped';
  }

  /** Calls `fn` with every change from now on; returns the unsubscribe. */
  subscribe(fn: (event: ApplicationEvent) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.closing = false;
    await this.prime();
    const useStream =
      this.options.source === 'change-stream' || (this.options.source === 'auto' && (await this.probe()));
    if (useStream) {
      await this.openStream();
      // Changes between the prime and the stream's start: one poll from the prime (de-duplicated).
      await this.poll();
    } else this.schedulePoll();
    this.mode = useStream ? 'change-stream' : 'poll';
  }

  async close(): Promise<void> {
    this.closing = true;
    this.mode = 'stopped';
    clearTimeout(this.pollTimer);
    const stream = this.stream;
    this.stream = null;
    await stream?.close().catch(() => {});
    await this.reader;
    this.subscribers.clear();
  }

  /** One query: the history's window, newest first up to its count bound. */
  private async prime(): Promise<void> {
    const now = this.options.clock.now();
    this.cursor = now;
    const from = now - this.options.historyMs;
    const docs = await this.collection
      .find(feedQueries.since(new Date(from)), { projection: eventProjection })
      .sort(feedQueries.newestFirst)
      .limit(this.options.historyMax)
      .toArray();
    const full = docs.length === this.options.historyMax;
    this.history = new EventHistory(
      full ? docs.at(-1)!.updatedAt.getTime() + 1 : from,
      this.options.historyMs,
      this.options.historyMax,
    );
    for (const doc of docs.reverse()) {
      const event = eventOf(doc as ChangedDoc);
      if (event && this.remember(event)) this.history.add(event, now);
    }
  }

  /** Emits an event once per (applicationId, version). */
  private emit(event: ApplicationEvent): void {
    if (!this.remember(event)) return;
    this.history.add(event, this.options.clock.now());
    for (const fn of this.subscribers) {
      try {
        fn(event);
      } catch (error) {
        this.options.onError?.(error);
      }
    }
  }

  private remember(event: ApplicationEvent): boolean {
    const key = `${event.applicationId}\u0000${event.version}`;
    if (this.seen.has(key)) return false;
    this.seen.set(key, event.at);
    return true;
  }

  private schedulePoll(): void {
    if (this.closing) return;
    this.pollTimer = setTimeout(() => {
      this.poll()
        .catch((error) => this.options.onError?.(error))
        .finally(() => this.schedulePoll());
    }, this.options.pollMs);
  }

  /** One query per interval, whatever the number of subscribers. */
  async poll(): Promise<void> {
    const startedAt = this.options.clock.now();
    const from = this.cursor - this.options.marginMs;
    const docs = await this.collection
      .find(feedQueries.since(new Date(from)), { projection: eventProjection })
      .sort(feedQueries.order)
      .limit(POLL_BATCH)
      .toArray();
    if (docs.length === POLL_BATCH) {
      this.options.onError?.(new Error(`events poll read ${POLL_BATCH} changes at once; later ones wait a round`));
    } else this.cursor = startedAt;
    for (const doc of docs) {
      const event = eventOf(doc as ChangedDoc);
      if (event) this.emit(event);
    }
    this.forgetBefore(this.cursor - this.options.marginMs);
  }

  /** Keys stamped before the next poll's window cannot be read again. */
  private forgetBefore(at: number): void {
    for (const [key, stamp] of this.seen) if (stamp < at) this.seen.delete(key);
  }

  /**
   * Whether the server raises a change event for a findOneAndUpdate (every versioned write is one):
   * watch a scratch collection, write a probe document, wait up to probeMs for its event.
   */
  async probe(): Promise<boolean> {
    const probes = this.db.collection<{ _id: string; n?: number }>(PROBE_COLLECTION);
    let stream: ChangeStream | null = null;
    const id = crypto.randomUUID();
    try {
      stream = probes.watch([], { maxAwaitTimeMS: 200 });
      await stream.tryNext(); // the aggregate is sent lazily: a server without change streams fails here
      await probes.findOneAndUpdate({ _id: id }, { $inc: { n: 1 } }, { upsert: true });
      const deadline = Date.now() + (this.options.probeMs ?? 2_000);
      while (Date.now() < deadline) {
        const change = (await stream.tryNext()) as { documentKey?: { _id?: unknown } } | null;
        if (change?.documentKey?._id === id) return true;
        if (!change) await sleep(50);
      }
      return false;
    } catch (error) {
      this.options.onError?.(error);
      return false;
    } finally {
      await stream?.close().catch(() => {});
      await probes.deleteOne({ _id: id }).catch(() => {});
    }
  }

  private async openStream(): Promise<void> {
    const stream = this.collection.watch<ApplicationDoc, Document>(feedQueries.streamPipeline, {
      fullDocument: 'updateLookup',
      maxAwaitTimeMS: 500,
    });
    await stream.tryNext().then((first) => first && this.onChange(first));
    this.stream = stream;
    this.reader = this.read(stream);
  }

  private async read(stream: ChangeStream<ApplicationDoc, Document>): Promise<void> {
    while (!this.closing && this.stream === stream) {
      try {
        const change = await stream.tryNext();
        if (change) this.onChange(change);
        else await sleep(50); // a server that answers an empty getMore at once is asked at most this often
      } catch (error) {
        if (this.closing) return;
        // The driver resumes by itself after transient errors; this one ended the stream: poll from now on.
        this.options.onError?.(error);
        this.stream = null;
        this.mode = 'poll';
        this.cursor = this.options.clock.now() - this.options.pollMs;
        this.schedulePoll();
        return;
      }
    }
  }

  /** With updateLookup the full document comes with the event (take its _id from it, not documentKey). */
  private onChange(change: Document): void {
    const doc = change.fullDocument as ChangedDoc | undefined;
    const event = doc && eventOf(doc);
    if (event) this.emit(event);
    // The poll forgets keys past its window; here, whatever is past the margin once the map grows.
    if (this.seen.size > this.options.historyMax) this.forgetBefore(this.options.clock.now() - this.options.marginMs);
  }
}
