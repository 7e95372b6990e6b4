// The outbox of application changes: each application's change log (`changes`, history.ts) is the outbox,
// since the entry is pushed by the very write that makes the change. The relay (workers/relay) reads the
// applications changed since its checkpoint, and for each one the entries past the version it has published
// (`outbox_published`: one marker per application), hands them to `publish` in version order, and only once
// that has resolved (the broker acknowledged them) raises the marker. A relay that dies between the two
// publishes those entries again, under the same event ids. Runtime-neutral: the Kafka client is the caller's.
import type { Collection, Db } from 'mongodb';
import type { Clock } from '../../core/clock.ts';
import { type ChangeEntry, isConsistentLog, versionedLog } from './history.ts';
import { APPLICATIONS_COLLECTION, applicationQueries } from './queries.ts';
import { REPLAY_CHECKPOINTS_COLLECTION } from './replay.ts';
import type { ApplicationDoc } from './schemas.ts';

/** One document per application: the newest version whose change the relay has had acknowledged. */
export const OUTBOX_PUBLISHED_COLLECTION = 'outbox_published';
/** The relay's scan checkpoint, in the replay checkpoints' collection. */
export const OUTBOX_CHECKPOINT_ID = 'outbox.kafka';

export interface PublishedMarker {
  _id: string;
  version: number;
}

/** What goes on the topic for a change: its id names (application, version), the same on every publication. */
export interface ChangeEvent {
  id: string;
  type: 'application.changed';
  applicationId: string;
  version: number;
  at: string;
  by: string;
  action: ChangeEntry['action'];
  /** Each changed path with its value before (when the writer read it) and after (absent: removed). */
  changes: ChangeEntry['paths'];
}

/**
 * Published in place of changes the log no longer holds (it keeps MERGE_HISTORY_VERSIONS per application): an
 * application changed more often than that while no relay ran. Consumers re-read the application.
 */
export interface ChangesLostEvent {
  id: string;
  type: 'application.changes_lost';
  applicationId: string;
  /** The first and last version whose change is lost; `version` is the last, for ordering. */
  fromVersion: number;
  version: number;
}

export type OutboxEvent = ChangeEvent | ChangesLostEvent;

export interface OutboxMessage {
  /** The application id: the Kafka key, so one application's events share a partition and keep their order. */
  key: string;
  event: OutboxEvent;
}

export interface RelayPassResult {
  /** Events handed to publish (changes and lost ranges). */
  published: number;
  lost: number;
  /** Applications read by the scan (already published ones included). */
  scanned: number;
}

export interface OutboxRelayOptions {
  /** Sends the messages in order and resolves once the broker has acknowledged every one. */
  publish: (messages: OutboxMessage[]) => Promise<void>;
  /** How far back past the checkpoint each pass reads (KAFKA_RELAY_MARGIN_MS). */
  marginMs: number;
  /** Applications per read (KAFKA_RELAY_BATCH). */
  batchSize?: number;
  /** Told after each page whose events were acknowledged and marked (a pass may send many pages). */
  onSent?: (sent: { published: number; lost: number }) => void;
}

export const eventId = (applicationId: string, version: number) => `${applicationId}:${version}`;

/** The event of one log entry; the same entry always makes the same event (a republication is a duplicate). */
export function changeEvent(applicationId: string, entry: ChangeEntry & { version: number }): ChangeEvent {
  return {
    id: eventId(applicationId, entry.version),
    type: 'application.changed',
    applicationId,
    version: entry.version,
    at: entry.at.toISOString(),
    by: entry.by,
    action: entry.action,
    changes: entry.paths,
  };
}

/** The events an application owes past `published`: a lost range first if its log does not reach back. */
export function pendingEvents(
  doc: Pick<ApplicationDoc, '_id' | 'version' | 'changes' | 'changeHead'>,
  published: number,
) {
  const events: OutboxEvent[] = [];
  if (doc.version <= published) return events;
  const log = versionedLog(doc).filter((entry) => entry.version > published);
  const firstLogged = log[0]?.version ?? doc.version + 1;
  if (firstLogged > published + 1) {
    events.push({
      id: `${doc._id}:lost:${published + 1}-${firstLogged - 1}`,
      type: 'application.changes_lost',
      applicationId: doc._id,
      fromVersion: published + 1,
      version: firstLogged - 1,
    });
  }
  for (const entry of log) events.push(changeEvent(doc._id, entry));
  return events;
}

const MAX_CACHED_MARKERS = 200_000;
const CONSISTENT_READ_ATTEMPTS = 20;

/**
 * Publishes the changes of applications, pass after pass. One relay at a time should run passes (the caller
 * holds a lease); two at once publish duplicates but never out of order: each publishes an application's
 * events from the marker it read, in version order, and a marker is raised only after its events were
 * acknowledged, so the first copy of each version on the topic follows the first copy of the one before.
 */
export class OutboxRelay {
  private readonly applications: Collection<ApplicationDoc>;
  private readonly markers: Collection<PublishedMarker>;
  private readonly checkpoints: Collection<{ _id: string; at: Date }>;
  /** Markers this relay read or raised: never above the stored ones (they only grow), so it never skips. */
  private readonly cache = new Map<string, number>();
  private checkpoint: Date | undefined;
  private readonly clock: Clock;
  private readonly options: OutboxRelayOptions;

  constructor(db: Db, clock: Clock, options: OutboxRelayOptions) {
    this.clock = clock;
    this.options = options;
    this.applications = db.collection<ApplicationDoc>(APPLICATIONS_COLLECTION);
    this.markers = db.collection<PublishedMarker>(OUTBOX_PUBLISHED_COLLECTION);
    this.checkpoints = db.collection(REPLAY_CHECKPOINTS_COLLECTION);
  }

  /** Reads everything changed since the checkpoint (less the margin) and publishes what is not yet published. */
  async pass(signal?: AbortSignal): Promise<RelayPassResult> {
    const batchSize = this.options.batchSize ?? 500;
    // Taken before reading: a change stamped before this has landed by now, so the next pass may start here.
    const safeUntil = new Date(this.clock.now() - this.options.marginMs);
    if (!this.checkpoint) {
      this.checkpoint = (await this.checkpoints.findOne({ _id: OUTBOX_CHECKPOINT_ID }))?.at ?? new Date(0);
    }
    const result: RelayPassResult = { published: 0, lost: 0, scanned: 0 };
    let after: { at: Date; id: string } | undefined;
    for (;;) {
      signal?.throwIfAborted();
      const page = await this.applications
        .find(applicationQueries.changedFrom(this.checkpoint, after), {
          projection: { _id: 1, version: 1, 'lastChange.at': 1 },
        })
        .sort(applicationQueries.replayOrder)
        .limit(batchSize)
        .toArray();
      result.scanned += page.length;
      const owed = await this.owed(page);
      if (owed.length > 0) {
        const sent = await this.publishChanges(owed, signal);
        result.published += sent.published;
        result.lost += sent.lost;
      }
      const last = page.at(-1);
      if (!last || page.length < batchSize) break;
      // Everything stamped before the last one is published (ties with it may be on the next page).
      await this.advance(new Date(Math.min(last.lastChange.at.getTime(), safeUntil.getTime())));
      after = { at: last.lastChange.at, id: last._id };
    }
    await this.advance(safeUntil);
    return result;
  }

  /** The ids on a page whose version is past their marker. */
  private async owed(page: Pick<ApplicationDoc, '_id' | 'version'>[]): Promise<string[]> {
    const unknown = page.filter((doc) => !this.cache.has(doc._id)).map((doc) => doc._id);
    if (unknown.length > 0) {
      if (this.cache.size + unknown.length > MAX_CACHED_MARKERS) this.cache.clear();
      const stored = await this.markers.find({ _id: { $in: unknown } }).toArray();
      for (const id of unknown) this.cache.set(id, 0);
      for (const marker of stored) this.cache.set(marker._id, marker.version);
    }
    return page.filter((doc) => doc.version > (this.cache.get(doc._id) ?? 0)).map((doc) => doc._id);
  }

  private async publishChanges(ids: string[], signal?: AbortSignal): Promise<{ published: number; lost: number }> {
    const docs = await this.readLogs(ids);
    const messages: OutboxMessage[] = [];
    const raised: PublishedMarker[] = [];
    let lost = 0;
    for (const doc of docs) {
      const events = pendingEvents(doc, this.cache.get(doc._id) ?? 0);
      if (events.length === 0) continue;
      for (const event of events) {
        if (event.type === 'application.changes_lost') lost++;
        messages.push({ key: doc._id, event });
      }
      raised.push({ _id: doc._id, version: events.at(-1)!.version });
    }
    if (messages.length === 0) return { published: 0, lost: 0 };
    // A relay that lost its lease stops before sending (one that sends anyway only adds duplicates).
    signal?.throwIfAborted();
    await this.options.publish(messages);
    await this.markers.bulkWrite(
      raised.map((marker) => ({
        updateOne: { filter: { _id: marker._id }, update: { $max: { version: marker.version } }, upsert: true },
      })),
      { ordered: false },
    );
    for (const marker of raised) this.cache.set(marker._id, marker.version);
    const sent = { published: messages.length, lost };
    this.options.onSent?.(sent);
    return sent;
  }

  /** The change logs of `ids`, each read again until whole (history.ts: isConsistentLog). */
  private async readLogs(ids: string[]) {
    const projection = { _id: 1, version: 1, changes: 1, changeHead: 1 } as const;
    const docs = await this.applications.find({ _id: { $in: ids } }, { projection }).toArray();
    return Promise.all(
      docs.map(async (doc) => {
        let current: typeof doc | null = doc;
        for (let attempt = 0; current && !isConsistentLog(current) && attempt < CONSISTENT_READ_ATTEMPTS; attempt++) {
          current = await this.applications.findOne({ _id: doc._id }, { projection });
        }
        if (!current || !isConsistentLog(current)) {
          throw new Error(
            `the change log of application ${doc._id} read inconsistent ${CONSISTENT_READ_ATTEMPTS} times`,
          );
        }
        return current;
      }),
    );
  }

  private async advance(to: Date): Promise<void> {
    if (this.checkpoint && to.getTime() <= this.checkpoint.getTime()) return;
    // $max: a relay that lost its lease and finishes late cannot move it back.
    await this.checkpoints.updateOne({ _id: OUTBOX_CHECKPOINT_ID }, { $max: { at: to } }, { upsert: true });
    this.checkpoint = to;
  }
}
