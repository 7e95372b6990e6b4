// Versioned documents: every write names the version it read, and the server applies it only if the
// document still has that version (one findOneAndUpdate), so a stale writer never overwrites.
// Plus the migration that gives existing documents their first version, resumable and idempotent.
import type { Collection, Db, Document, Filter, UpdateFilter, WithId } from 'mongodb';
import { backoffDelay, sleep } from '../core/clock.ts';
import type { IndexPlan } from '../core/db.ts';
import { ConflictError, NotFoundError, ValidationError } from '../core/errors.ts';

export interface Versioned {
  version: number;
}

/** Fields the caller may never write: the lock's own counter and the identity it hangs on. */
const reservedFields = ['version', '_id'] as const;

/** The lock's filters and updates, named in one place. */
export const versionQueries = {
  byId: (id: unknown) => ({ _id: id }),
  /** Matches only while the document still carries the version the writer read. */
  byIdAndVersion: (id: unknown, version: number) => ({ _id: id, version }),
  /** The caller's update plus the version bump, merged into any $inc the caller had. */
  withVersionBump: (update: Document): Document => ({ ...update, $inc: { ...(update.$inc ?? {}), version: 1 } }),
  /** The migration's per-batch filter: only documents in (after, upTo] that still lack a version. */
  unversionedInRange: (after: unknown, upTo: unknown) => ({
    _id: after === undefined ? { $lte: upTo } : { $gt: after, $lte: upTo },
    version: { $exists: false },
  }),
  initialVersion: { $set: { version: 1 } },
  /** The migration's walk: everything after the checkpoint, or everything on a fresh start. */
  afterCheckpoint: (lastId: unknown): Document => (lastId === undefined ? {} : { _id: { $gt: lastId } }),
};

function touchesReserved(path: string): boolean {
  return reservedFields.some((field) => path === field || path.startsWith(`${field}.`));
}

/**
 * Throws ValidationError unless `update` is a non-empty document of update operators that leaves
 * `version` and `_id` alone (including as a $rename target).
 */
export function assertVersionedUpdate(update: unknown): asserts update is Document {
  if (Array.isArray(update)) {
    throw new ValidationError('a versioned update must be an update document, not a pipeline');
  }
  if (typeof update !== 'object' || update === null) {
    throw new ValidationError('a versioned update must be an object of update operators');
  }
  const operators = Object.entries(update);
  if (operators.length === 0) throw new ValidationError('a versioned update must change something');
  const touched: string[] = [];
  for (const [operator, fields] of operators) {
    if (!operator.startsWith('$')) {
      throw new ValidationError(
        `a versioned update takes update operators ($set, $inc, ...), not the field "${operator}"`,
      );
    }
    if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) {
      throw new ValidationError(`${operator} must map field paths to values`);
    }
    for (const [path, value] of Object.entries(fields)) {
      if (touchesReserved(path)) touched.push(`${operator}.${path}`);
      if (operator === '$rename' && typeof value === 'string' && touchesReserved(value))
        touched.push(`${operator}.${path}`);
    }
  }
  if (touched.length > 0) {
    throw new ValidationError('a versioned update may not write version or _id', { fields: touched });
  }
}

function assertVersion(version: unknown, id: unknown): asserts version is number {
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) {
    throw new ValidationError(`version must be a positive integer (document ${String(id)})`, {
      field: 'version',
      value: version,
    });
  }
}

/**
 * Applies `update` to the document `id` if it still has `expectedVersion`, and bumps the version.
 * One round trip on success; on a miss a second read tells NotFoundError from ConflictError,
 * whose `current` is the document as that read saw it.
 */
export async function updateWithVersion<T extends Document>(
  collection: Collection<T>,
  id: unknown,
  expectedVersion: number,
  update: UpdateFilter<T>,
): Promise<WithId<T>> {
  assertVersion(expectedVersion, id);
  assertVersionedUpdate(update);
  const updated = await collection.findOneAndUpdate(
    versionQueries.byIdAndVersion(id, expectedVersion) as Filter<T>,
    versionQueries.withVersionBump(update) as UpdateFilter<T>,
    { returnDocument: 'after' },
  );
  if (updated) return updated;
  const current = await collection.findOne(versionQueries.byId(id) as Filter<T>);
  if (!current) throw new NotFoundError(`document ${String(id)} not found in ${collection.collectionName}`);
  throw new ConflictError<WithId<T>>(
    `document ${String(id)} in ${collection.collectionName} has version ${String(current.version)}, not ${expectedVersion}`,
    current,
  );
}

/** What a mutation returns: fields to $set, an update document of operators, or {} for "no change". */
export type Mutation<T extends Document> = Partial<T> | UpdateFilter<T>;

export interface RetryOptions {
  /** Writes to try before giving up with the last ConflictError. With N writers on one document, N suffice. */
  attempts?: number;
  /** Full-jitter exponential backoff: wait a random 0..min(maxDelay, delay * 2^retry) ms. */
  backoff?: { delay?: number; maxDelay?: number };
}

export const defaultRetryOptions = { attempts: 10, backoff: { delay: 5, maxDelay: 200 } };

/** Fields to $set when no key is an operator; an update document when all are; mixed is refused. */
export function toUpdateDocument(mutation: unknown): Document | null {
  if (typeof mutation !== 'object' || mutation === null || Array.isArray(mutation)) {
    throw new ValidationError('a mutation must return an object: fields to set, or update operators');
  }
  const keys = Object.keys(mutation);
  if (keys.length === 0) return null;
  const operators = keys.filter((key) => key.startsWith('$')).length;
  if (operators === keys.length) return mutation;
  if (operators === 0) return { $set: mutation };
  throw new ValidationError('a mutation must return either fields to set or update operators, not both', {
    keys,
  });
}

/** What a round of retryOnConflict returns when its conditional write missed: read and decide again. */
export const writeMissed: unique symbol = Symbol('writeMissed');

/**
 * Runs `round` (read, check, conditional write) up to `attempts` times, until it returns something other
 * than writeMissed; errors it throws end the loop. After the last miss, throws what `giveUp` returns.
 * `pause` waits between rounds (a backoff), never after the last one.
 */
export async function retryOnConflict<R>(
  attempts: number,
  round: (attempt: number) => Promise<R | typeof writeMissed>,
  giveUp: () => Error | Promise<Error>,
  pause?: (attempt: number) => Promise<void>,
): Promise<R> {
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const result = await round(attempt);
    if (result !== writeMissed) return result;
    if (pause && attempt < attempts) await pause(attempt);
  }
  throw await giveUp();
}

/**
 * Reads the document, applies the pure `mutate` to it and writes the result with updateWithVersion.
 * On a conflict it re-applies `mutate` to the conflict's `current` (no extra read) after a short
 * jittered wait. Returns the written document, or `current` unchanged when `mutate` returns {}.
 * NotFoundError and errors thrown by `mutate` propagate; after `attempts` conflicts, the last one does.
 */
export async function updateWithRetry<T extends Document>(
  collection: Collection<T>,
  id: unknown,
  mutate: (current: WithId<T>) => Mutation<T> | Promise<Mutation<T>>,
  options: RetryOptions = {},
): Promise<WithId<T>> {
  const attempts = options.attempts ?? defaultRetryOptions.attempts;
  const backoff = {
    base: options.backoff?.delay ?? defaultRetryOptions.backoff.delay,
    cap: options.backoff?.maxDelay ?? defaultRetryOptions.backoff.maxDelay,
  };
  if (!Number.isInteger(attempts) || attempts < 1) throw new ValidationError('attempts must be a positive integer');
  let current = await collection.findOne(versionQueries.byId(id) as Filter<T>);
  if (!current) throw new NotFoundError(`document ${String(id)} not found in ${collection.collectionName}`);
  let lastConflict: ConflictError | undefined;
  return retryOnConflict(
    attempts,
    async () => {
      const read = current as WithId<T>;
      // An unversioned document cannot be written safely: the collection needs migrateToVersioned first.
      assertVersion(read.version, id);
      const update = toUpdateDocument(await mutate(read));
      if (!update) return read;
      try {
        return await updateWithVersion(collection, id, read.version, update as UpdateFilter<T>);
      } catch (error) {
        if (!(error instanceof ConflictError)) throw error;
        lastConflict = error;
        current = error.current as WithId<T>;
        return writeMissed;
      }
    },
    () => lastConflict as ConflictError,
    (attempt) => sleep(backoffDelay(attempt, backoff)),
  );
}

// ---- Migration: give every document of a collection its first version ----

/** The checkpoint's collection; one document per migrated collection, read and written by _id. */
export const migrationsCollection = 'migrations';

/** Checkpoints are read and written by _id and the batches walk the _id index: nothing more to index. */
export const optimisticLockIndexPlans: IndexPlan[] = [];

export interface VersionMigrationCheckpoint {
  _id: string;
  collection: string;
  /** The highest _id whose batch is done; the next run continues after it. */
  lastId?: unknown;
  scanned: number;
  versioned: number;
  startedAt: Date;
  updatedAt: Date;
  /** Set when a run reached the end; the next run then starts over (and should find nothing to do). */
  finishedAt?: Date;
}

export const checkpointId = (collection: string) => `add-version:${collection}`;

export interface MigrationProgress {
  scanned: number;
  versioned: number;
  /** The collection's estimated size when the run started (a cheap count, not exact). */
  estimatedTotal: number;
  lastId: unknown;
  resumed: boolean;
}

export interface MigrationOptions {
  batchSize?: number;
  /** Called after each batch, once its checkpoint is written. */
  onProgress?: (progress: MigrationProgress) => void;
  /** Stops after the current batch; the checkpoint lets the next run continue. */
  signal?: AbortSignal;
  /** Wait this long between batches, to spare a busy primary. */
  pauseMs?: number;
}

export interface MigrationResult {
  /** Documents walked by this migration, counting the runs it resumed from. */
  scanned: number;
  /**
   * Documents this migration gave a version, counting the runs it resumed from. A run killed
   * between a batch's update and its checkpoint leaves that batch uncounted (its documents are
   * versioned, and the rerun finds nothing to do there).
   */
  versioned: number;
  resumed: boolean;
  /** False when stopped by the signal before the end. */
  complete: boolean;
}

export async function readCheckpoint(db: Db, collection: string): Promise<VersionMigrationCheckpoint | null> {
  return db
    .collection<VersionMigrationCheckpoint>(migrationsCollection)
    .findOne({ _id: checkpointId(collection) }) as Promise<VersionMigrationCheckpoint | null>;
}

/** Where a migration starts: an unfinished run's checkpoint, or a fresh one written now. */
async function openCheckpoint(
  db: Db,
  collection: string,
): Promise<{ lastId: unknown; scanned: number; versioned: number; resumed: boolean }> {
  const previous = await readCheckpoint(db, collection);
  if (previous !== null && previous.finishedAt === undefined) {
    return { lastId: previous.lastId, scanned: previous.scanned, versioned: previous.versioned, resumed: true };
  }
  const now = new Date();
  await db
    .collection<VersionMigrationCheckpoint>(migrationsCollection)
    .replaceOne(
      { _id: checkpointId(collection) },
      { collection, scanned: 0, versioned: 0, startedAt: now, updatedAt: now },
      { upsert: true },
    );
  return { lastId: undefined, scanned: 0, versioned: 0, resumed: false };
}

/**
 * Adds `version: 1` to every document of `collection` that lacks a version, walking by ascending
 * _id in batches and checkpointing the last _id done in `migrations`. Resumes an unfinished run;
 * after a finished one it starts over. Documents that have a version keep it, so rerunning any
 * batch, or the whole migration, changes nothing. Assumes _id values of one BSON type (range
 * queries on _id compare within a type).
 */
export async function migrateToVersioned(
  db: Db,
  collection: string,
  options: MigrationOptions = {},
): Promise<MigrationResult> {
  const batchSize = options.batchSize ?? 1000;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ValidationError('batchSize must be a positive integer');
  const target = db.collection(collection);
  const checkpoints = db.collection<VersionMigrationCheckpoint>(migrationsCollection);
  const key = checkpointId(collection);
  let { lastId, scanned, versioned, resumed } = await openCheckpoint(db, collection);
  const estimatedTotal = await target.estimatedDocumentCount();
  // One cursor for the whole walk: the server sorts once, and each batch is one getMore.
  const cursor = target
    .find(versionQueries.afterCheckpoint(lastId) as Filter<Document>, { projection: { _id: 1, version: 1 } })
    .sort({ _id: 1 })
    .batchSize(batchSize);
  try {
    let batch: Document[] = [];
    const flush = async () => {
      const upTo = batch[batch.length - 1]?._id;
      // Skip the write when the batch has nothing to do (a rerun); the filter still guards a race.
      if (batch.some((doc) => doc.version === undefined)) {
        const result = await target.updateMany(
          versionQueries.unversionedInRange(lastId, upTo) as Filter<Document>,
          versionQueries.initialVersion,
        );
        versioned += result.modifiedCount;
      }
      scanned += batch.length;
      lastId = upTo;
      batch = [];
      await checkpoints.updateOne({ _id: key }, { $set: { lastId, scanned, versioned, updatedAt: new Date() } });
      options.onProgress?.({ scanned, versioned, estimatedTotal, lastId, resumed });
    };
    for await (const doc of cursor) {
      batch.push(doc);
      if (batch.length < batchSize) continue;
      await flush();
      if (options.signal?.aborted) return { scanned, versioned, resumed, complete: false };
      if (options.pauseMs) await sleep(options.pauseMs);
    }
    if (batch.length > 0) await flush();
  } finally {
    await cursor.close();
  }
  await checkpoints.updateOne({ _id: key }, { $set: { finishedAt: new Date(), updatedAt: new Date() } });
  return { scanned, versioned, resumed, complete: true };
}
