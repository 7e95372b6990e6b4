// Every MongoDB filter, update and index the queue runs, named in one place
// (pg-boss keeps its SQL in plans.ts apart from the orchestration; so do we).
//
// One rule carries the correctness: every state transition writes a fresh lockToken, and every
// transition out of a known state is a compare-and-swap on the pair {_id, lockToken}. A claim, a
// completion, a retry, a release and a heartbeat all name the one lease they act on, so a worker
// whose lease expired and was re-claimed changes nothing.
import type { Filter, IndexDescription, Sort, UpdateFilter } from 'mongodb';
import type { IndexPlan } from '../../core/db.ts';
import type { JobDocument, JobError, JobState } from './job.ts';

export const JOBS_COLLECTION = 'jobs';

/**
 * The jobs collection's indexes. `fenced_write` is unique on {_id, lockToken}: MongoDB would serve
 * those writes from _id alone, but mongo-java-server (the offline test server) only uses an index
 * whose keys equal the filter's, so without it every fenced write there is a full scan.
 */
export function queueIndexPlan(collection = JOBS_COLLECTION): IndexPlan {
  const indexes: IndexDescription[] = [
    { key: { _id: 1, lockToken: 1 }, name: 'fenced_write', unique: true },
    { key: { state: 1, name: 1, priority: 1, runAt: 1 }, name: 'claim_due' },
    { key: { state: 1, lockedUntil: 1 }, name: 'claim_stalled' },
  ];
  return { collection, indexes };
}

export const queueIndexes: IndexPlan = queueIndexPlan();

/** Claim order: priority (lower first), then due time, then id for a stable order. */
export const claimOrder: Sort = { priority: 1, runAt: 1, _id: 1 };

/** What the claim's search needs to know about a candidate before the compare-and-swap. */
export const candidateProjection = { _id: 1, lockToken: 1, state: 1, stalledCount: 1, priority: 1 } as const;

export type Candidate = Pick<JobDocument, '_id' | 'lockToken' | 'state' | 'stalledCount' | 'priority'>;

/** Due waiting jobs and active jobs whose lease has run out (their worker died or hung). */
export function claimableFilter(names: readonly string[], now: Date): Filter<JobDocument> {
  return {
    name: names.length === 1 ? names[0]! : { $in: [...names] },
    $or: [
      { state: 'waiting', runAt: { $lte: now } },
      { state: 'active', lockedUntil: { $lte: now } },
    ],
  };
}

/** Due waiting jobs only: the server-side claim, which cannot tell a stalled job apart in its update. */
export function claimWaitingFilter(names: readonly string[], now: Date): Filter<JobDocument> {
  return { name: names.length === 1 ? names[0]! : { $in: [...names] }, state: 'waiting', runAt: { $lte: now } };
}

/** The lease or version named by token; exactly the keys of the fenced_write index. */
export function fencedFilter(id: string, token: string): Filter<JobDocument> {
  return { _id: id, lockToken: token };
}

/** An expired lease, still expired: a heartbeat keeps the token but moves lockedUntil. */
export function expiredLeaseFilter(id: string, token: string, now: Date): Filter<JobDocument> {
  return { _id: id, lockToken: token, state: 'active', lockedUntil: { $lte: now } };
}

export function claimUpdate(token: string, lockedUntil: Date, workerId: string, now: Date): UpdateFilter<JobDocument> {
  return {
    $set: { state: 'active', lockToken: token, lockedUntil, lockedBy: workerId, startedAt: now },
    $inc: { attemptsStarted: 1 },
  };
}

export function reclaimStalledUpdate(
  token: string,
  lockedUntil: Date,
  workerId: string,
  now: Date,
): UpdateFilter<JobDocument> {
  return {
    $set: { state: 'active', lockToken: token, lockedUntil, lockedBy: workerId, startedAt: now },
    $inc: { attemptsStarted: 1, stalledCount: 1 },
  };
}

export function heartbeatUpdate(lockedUntil: Date): UpdateFilter<JobDocument> {
  return { $set: { lockedUntil } };
}

export function completeUpdate(token: string, result: unknown, now: Date): UpdateFilter<JobDocument> {
  return {
    $set: { state: 'completed', lockToken: token, result, finishedAt: now, lockedUntil: null, lastError: null },
  };
}

/** Back to waiting at runAt; the failed run counts as an attempt. */
export function retryUpdate(token: string, runAt: Date, error: JobError): UpdateFilter<JobDocument> {
  return {
    $set: { state: 'waiting', lockToken: token, runAt, lockedUntil: null, lockedBy: null, lastError: error },
    $inc: { attemptsMade: 1 },
  };
}

/** Dead letter: failed for good, with the last error. */
export function failUpdate(token: string, error: JobError, countsAsAttempt: boolean): UpdateFilter<JobDocument> {
  const update: UpdateFilter<JobDocument> = {
    $set: { state: 'failed', lockToken: token, finishedAt: error.at, lockedUntil: null, lastError: error },
  };
  if (countsAsAttempt) update.$inc = { attemptsMade: 1 };
  return update;
}

/** Back to waiting, due at once (runAt unchanged), without consuming an attempt. */
export function releaseUpdate(token: string): UpdateFilter<JobDocument> {
  return { $set: { state: 'waiting', lockToken: token, lockedUntil: null, lockedBy: null } };
}

/** Jobs in one state (optionally of one name): the claim_due index's {state, name} prefix finds them. */
export function inStateFilter(state: JobState, name?: string): Filter<JobDocument> {
  return name === undefined ? { state } : { state, name };
}

/**
 * The order a listing of one state shows: the dead letters newest failure first (sorted in memory: there
 * are few, and an index on finishedAt would cost every job's completion a key write), the others as claimed.
 */
export function listOrder(state: JobState): Sort {
  return state === 'failed' ? { finishedAt: -1, _id: 1 } : claimOrder;
}

/**
 * A dead letter back to waiting, due at `runAt` (now), with all its attempts again (attemptsMade 0; its
 * backoff unchanged). Written with fencedFilter on the token read from the failed job: every transition
 * writes a fresh token, so of two admins retrying the same failure one matches, and a failure that was
 * retried, ran and failed again meanwhile is not retried on the strength of the old read. The last error
 * stays until the next outcome replaces it.
 */
export function requeueDeadUpdate(token: string, runAt: Date, by: string): UpdateFilter<JobDocument> {
  return {
    $set: {
      state: 'waiting',
      lockToken: token,
      runAt,
      attemptsMade: 0,
      lockedUntil: null,
      lockedBy: null,
      finishedAt: null,
      retriedBy: by,
      retriedAt: runAt,
    },
    $inc: { retries: 1 },
  };
}

/**
 * Change events that can make a job claimable: inserts, and updates that set state 'waiting'.
 * A real mongod reports the update in updateDescription; mongo-java-server puts the $set delta
 * in fullDocument instead, so both shapes are matched.
 */
export const wakeUpPipeline = [
  {
    $match: {
      $or: [
        { operationType: 'insert' },
        { operationType: 'update', 'updateDescription.updatedFields.state': 'waiting' },
        { operationType: 'update', 'fullDocument.state': 'waiting' },
      ],
    },
  },
];

/** One pass over the collection: counts per name, state and due-ness, and the oldest due time. */
export function statsPipeline(now: Date) {
  return [
    {
      $group: {
        _id: { name: '$name', state: '$state', due: { $lte: ['$runAt', now] } },
        count: { $sum: 1 },
        oldestRunAt: { $min: '$runAt' },
      },
    },
  ];
}
