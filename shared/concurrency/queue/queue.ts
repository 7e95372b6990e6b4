// The producer side of the queue: a Queue adds jobs (one or in bulk, de-duplicated by jobId) and
// reports on them. Times are the database server's (ServerClock). Runtime-neutral: Web APIs only.
import type { Collection, Db } from 'mongodb';
import { ServerClock } from '../../core/clock.ts';
import { isDuplicateKeyError, onlyDuplicateKeyErrors } from '../../core/db.ts';
import { ValidationError } from '../../core/errors.ts';
import { currentTrace, inSpan, SpanKind } from '../../core/tracing.ts';
import { type JobDocument, type JobInfo, type JobOptions, type JobState, parseJobOptions, toJobInfo } from './job.ts';
import { fencedFilter, inStateFilter, JOBS_COLLECTION, listOrder, requeueDeadUpdate, statsPipeline } from './plans.ts';

export interface QueueStats {
  /** Waiting, including delayed (queue-stats' `pending`). */
  pending: number;
  /** Active (queue-stats' `processing`). */
  processing: number;
  completed: number;
  failed: number;
  waiting: number;
  delayed: number;
  active: number;
  /** Age of the oldest job that is due and waiting, on the server's clock; 0 when none. */
  oldestWaitingAgeMs: number;
  byName: Record<string, { waiting: number; delayed: number; active: number; completed: number; failed: number }>;
}

/** What retryDead did: re-queued the job, found none, or found it not (or no longer) dead-lettered. */
export type RetryDeadOutcome =
  | { outcome: 'retried'; job: JobInfo }
  | { outcome: 'not_found' }
  | { outcome: 'not_dead'; job: JobInfo }
  | { outcome: 'changed'; job: JobInfo };

export interface QueueOptions {
  collection?: string;
  /** Shared with workers in the same process; synced on first use. */
  clock?: ServerClock;
}

/** The enqueue span: a PRODUCER span in OpenTelemetry's messaging terms (the queue is the `jobs` collection). */
const enqueueSpan = (names: string[], jobId: string | undefined, count = 1) => ({
  kind: SpanKind.PRODUCER,
  attributes: {
    'messaging.system': 'loan-admin.jobs',
    'messaging.operation.type': 'send',
    'messaging.destination.name': names.join(' '),
    ...(jobId ? { 'messaging.message.id': jobId } : {}),
    ...(count > 1 ? { 'messaging.batch.message_count': count } : {}),
  },
});

/** The job's `trace` field: the context of the enqueue span (none while tracing is off). */
function traceField(): { trace?: ReturnType<typeof currentTrace> } {
  const trace = currentTrace();
  return trace ? { trace } : {};
}

/** Producer: adds jobs and reports on them. */
export class Queue {
  readonly collection: Collection<JobDocument>;
  readonly clock: ServerClock;
  private synced: Promise<unknown> | null = null;

  constructor(db: Db, options: QueueOptions = {}) {
    this.collection = db.collection<JobDocument>(options.collection ?? JOBS_COLLECTION);
    this.clock = options.clock ?? new ServerClock(db);
  }

  private async now(): Promise<number> {
    this.synced ??= this.clock.sync();
    await this.synced;
    void this.clock.maybeSync().catch(() => {});
    return this.clock.now();
  }

  private newDocument(name: string, data: unknown, options: JobOptions | undefined, now: number): JobDocument {
    if (typeof name !== 'string' || name.length === 0) throw new ValidationError('job name must be a non-empty string');
    const opts = parseJobOptions(options);
    return {
      _id: opts.jobId ?? crypto.randomUUID(),
      name,
      data,
      state: 'waiting',
      priority: opts.priority,
      runAt: new Date(now + opts.delay),
      createdAt: new Date(now),
      attempts: opts.attempts,
      attemptsMade: 0,
      attemptsStarted: 0,
      stalledCount: 0,
      backoff: opts.backoff ?? null,
      removeOnComplete: opts.removeOnComplete,
      lockToken: crypto.randomUUID(),
      lockedUntil: null,
      lockedBy: null,
      startedAt: null,
      finishedAt: null,
      lastError: null,
      ...traceField(),
    };
  }

  /** Adds one job. With a jobId that exists already, returns that job and creates nothing. */
  add<Data>(name: string, data: Data, options?: JobOptions): Promise<JobInfo<Data>> {
    return inSpan(`enqueue ${name}`, enqueueSpan([name], options?.jobId), () => this.addNow(name, data, options));
  }

  private async addNow<Data>(name: string, data: Data, options?: JobOptions): Promise<JobInfo<Data>> {
    const now = await this.now();
    const doc = this.newDocument(name, data, options, now);
    try {
      await this.collection.insertOne(doc);
      return toJobInfo(doc, now);
    } catch (error) {
      if (!isDuplicateKeyError(error)) throw error;
      const existing = await this.collection.findOne({ _id: doc._id });
      if (!existing) throw error;
      return toJobInfo(existing, now);
    }
  }

  /** Adds many jobs in one insert; duplicates by jobId return the existing job. Order is kept. */
  addBulk<Data>(jobs: { name: string; data: Data; opts?: JobOptions }[]): Promise<JobInfo<Data>[]> {
    if (jobs.length === 0) return Promise.resolve([]);
    const names = [...new Set(jobs.map((job) => job.name))];
    const jobId = jobs.length === 1 ? jobs[0]!.opts?.jobId : undefined;
    return inSpan(`enqueue ${names.join(' ')}`, enqueueSpan(names, jobId, jobs.length), () => this.addBulkNow(jobs));
  }

  private async addBulkNow<Data>(jobs: { name: string; data: Data; opts?: JobOptions }[]): Promise<JobInfo<Data>[]> {
    const now = await this.now();
    const docs = jobs.map((job) => this.newDocument(job.name, job.data, job.opts, now));
    const duplicates = new Set<number>();
    try {
      await this.collection.insertMany(docs, { ordered: false });
    } catch (error) {
      if (!onlyDuplicateKeyErrors(error)) throw error;
      const writeErrors = (error as { writeErrors: { index: number } | { index: number }[] }).writeErrors;
      for (const e of [writeErrors].flat()) duplicates.add(e.index);
    }
    if (duplicates.size === 0) return docs.map((doc) => toJobInfo(doc, now));
    const ids = [...duplicates].map((i) => docs[i]!._id);
    const existing = new Map((await this.collection.find({ _id: { $in: ids } }).toArray()).map((d) => [d._id, d]));
    return docs.map((doc, i) => toJobInfo(duplicates.has(i) ? (existing.get(doc._id) ?? doc) : doc, now));
  }

  async getJob<Data = unknown, Result = unknown>(id: string): Promise<JobInfo<Data, Result> | null> {
    const doc = await this.collection.findOne({ _id: id });
    return doc ? toJobInfo<Data, Result>(doc, await this.now()) : null;
  }

  /** Up to `limit` jobs in `state` (of `name` if given): dead letters ('failed') newest failure first, else in claim order. */
  async list<Data = unknown>(query: { state: JobState; name?: string; limit: number; signal?: AbortSignal }) {
    const docs = await this.collection
      .find(inStateFilter(query.state, query.name), query.signal ? { signal: query.signal } : {})
      .sort(listOrder(query.state))
      .limit(query.limit)
      .toArray();
    const now = await this.now();
    return docs.map((doc) => toJobInfo<Data, unknown>(doc, now));
  }

  /**
   * Moves a dead-lettered job back to waiting, due now, with its attempts reset: one read, then a
   * compare-and-swap on the token that read saw (so of concurrent retries of one failure exactly one
   * re-queues it; the others get 'not_dead' or, if it failed again meanwhile, 'changed').
   */
  async retryDead(id: string, by: string): Promise<RetryDeadOutcome> {
    const now = await this.now();
    const doc = await this.collection.findOne({ _id: id });
    if (!doc) return { outcome: 'not_found' };
    if (doc.state !== 'failed') return { outcome: 'not_dead', job: toJobInfo(doc, now) };
    const retried = await this.collection.findOneAndUpdate(
      fencedFilter(id, doc.lockToken),
      requeueDeadUpdate(crypto.randomUUID(), new Date(now), by),
      { returnDocument: 'after' },
    );
    if (retried) return { outcome: 'retried', job: toJobInfo(retried, now) };
    const current = await this.collection.findOne({ _id: id });
    if (!current) return { outcome: 'not_found' };
    return { outcome: current.state === 'failed' ? 'changed' : 'not_dead', job: toJobInfo(current, now) };
  }

  /** Counts per state and per name in one aggregation (what queue-stats answers, and more). */
  async stats(): Promise<QueueStats> {
    const now = await this.now();
    const groups = await this.collection
      .aggregate<{ _id: { name: string; state: JobState; due: boolean }; count: number; oldestRunAt: Date | null }>(
        statsPipeline(new Date(now)),
      )
      .toArray();
    const stats: QueueStats = {
      pending: 0,
      processing: 0,
      completed: 0,
      failed: 0,
      waiting: 0,
      delayed: 0,
      active: 0,
      oldestWaitingAgeMs: 0,
      byName: {},
    };
    let oldestDue = Number.POSITIVE_INFINITY;
    for (const { _id: key, count, oldestRunAt } of groups) {
      stats.byName[key.name] ??= { waiting: 0, delayed: 0, active: 0, completed: 0, failed: 0 };
      const perName = stats.byName[key.name]!;
      if (key.state === 'waiting') {
        const bucket = key.due ? 'waiting' : 'delayed';
        stats[bucket] += count;
        perName[bucket] += count;
        if (key.due && oldestRunAt) oldestDue = Math.min(oldestDue, oldestRunAt.getTime());
      } else if (key.state in perName) {
        stats[key.state] += count;
        perName[key.state] += count;
      }
    }
    stats.pending = stats.waiting + stats.delayed;
    stats.processing = stats.active;
    stats.oldestWaitingAgeMs = Number.isFinite(oldestDue) ? Math.max(0, Math.round(now - oldestDue)) : 0;
    return stats;
  }
}
