// A durable job queue on MongoDB that speaks BullMQ's words: a Queue adds jobs, a Worker claims
// them with a lease, renews it while the handler runs, completes, retries with backoff or fails
// them, and takes over jobs whose worker died (stalled). All times are the database server's
// (ServerClock), all state changes are compare-and-swaps on {_id, lockToken} (see queue/plans.ts).
// Priority follows BullMQ: a lower number runs first, 0 (the default) is the highest.
// Runtime-neutral: Web APIs only.
import { type ChangeStream, type Collection, type Db, MongoServerError } from 'mongodb';
import { z } from 'zod';
import { ServerClock } from '../../core/clock.ts';
import { ValidationError } from '../../core/errors.ts';
import {
  type BackoffOptions,
  backoffDelay,
  type Candidate,
  candidateProjection,
  claimableFilter,
  claimOrder,
  claimUpdate,
  claimWaitingFilter,
  completeUpdate,
  expiredLeaseFilter,
  failUpdate,
  fencedFilter,
  heartbeatUpdate,
  JOBS_COLLECTION,
  type JobDocument,
  type JobError,
  type JobState,
  reclaimStalledUpdate,
  releaseUpdate,
  retryUpdate,
  statsPipeline,
  wakeUpPipeline,
} from './plans.ts';

export type { BackoffOptions, JobDocument, JobError, JobState } from './plans.ts';
export { backoffDelay, JOBS_COLLECTION, queueIndexes, queueIndexPlan } from './plans.ts';

const MAX_PRIORITY = 2_097_152; // BullMQ's limit (2^21)

const jobOptionsSchema = z
  .object({
    jobId: z.string().min(1).max(512).optional(),
    /** Lower number first; 0 (the default) is the highest priority. */
    priority: z.number().int().min(0).max(MAX_PRIORITY).default(0),
    /** Milliseconds from now (server clock) before the job is due. */
    delay: z.number().int().min(0).default(0),
    attempts: z.number().int().min(1).max(1_000).default(1),
    backoff: z
      .object({
        type: z.enum(['exponential', 'fixed']),
        delay: z.number().int().min(0),
        jitter: z.number().min(0).max(1).optional(),
      })
      .optional(),
    removeOnComplete: z.boolean().default(false),
  })
  .strict();

export type JobOptions = z.input<typeof jobOptionsSchema>;

/** What a handler sees of its job. */
export interface Job<Data = unknown> {
  id: string;
  name: string;
  data: Data;
  priority: number;
  /** Failed runs before this one. */
  attemptsMade: number;
  /** Runs allowed in all: a failure of run number `attempts` dead-letters the job (unknown in hand-made jobs). */
  attempts?: number;
  attemptsStarted: number;
  stalledCount: number;
  runAt: Date;
  createdAt: Date;
}

/** A job as stored, for producers, dashboards and tests. */
export interface JobInfo<Data = unknown, Result = unknown> extends Job<Data> {
  state: JobState;
  /** A waiting job whose due time is still ahead. */
  delayed: boolean;
  attempts: number;
  backoff: BackoffOptions | null;
  lockedUntil: Date | null;
  lockedBy: string | null;
  startedAt: Date | null;
  finishedAt: Date | null;
  result: Result | undefined;
  lastError: JobError | null;
}

export interface QueueStats {
  /** Waiting, including delayed (the seed's `pending`). */
  pending: number;
  /** Active (the seed's `processing`). */
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

export interface QueueOptions {
  collection?: string;
  /** Shared with workers in the same process; synced on first use. */
  clock?: ServerClock;
}

function toJob<Data>(doc: JobDocument): Job<Data> {
  return {
    id: doc._id,
    name: doc.name,
    data: doc.data as Data,
    priority: doc.priority,
    attemptsMade: doc.attemptsMade,
    attempts: doc.attempts,
    attemptsStarted: doc.attemptsStarted,
    stalledCount: doc.stalledCount,
    runAt: doc.runAt,
    createdAt: doc.createdAt,
  };
}

function toJobInfo<Data, Result>(doc: JobDocument, now: number): JobInfo<Data, Result> {
  return {
    ...toJob<Data>(doc),
    state: doc.state,
    delayed: doc.state === 'waiting' && doc.runAt.getTime() > now,
    attempts: doc.attempts,
    backoff: doc.backoff,
    lockedUntil: doc.lockedUntil,
    lockedBy: doc.lockedBy,
    startedAt: doc.startedAt,
    finishedAt: doc.finishedAt,
    result: doc.result as Result | undefined,
    lastError: doc.lastError,
  };
}

const isDuplicateKey = (error: unknown) => error instanceof MongoServerError && error.code === 11000;

function parseOptions(options: JobOptions | undefined) {
  const parsed = jobOptionsSchema.safeParse(options ?? {});
  if (!parsed.success) {
    throw new ValidationError(
      'invalid job options',
      parsed.error.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message })),
    );
  }
  return parsed.data;
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
    const opts = parseOptions(options);
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
    };
  }

  /** Adds one job. With a jobId that exists already, returns that job and creates nothing. */
  async add<Data>(name: string, data: Data, options?: JobOptions): Promise<JobInfo<Data>> {
    const now = await this.now();
    const doc = this.newDocument(name, data, options, now);
    try {
      await this.collection.insertOne(doc);
      return toJobInfo(doc, now);
    } catch (error) {
      if (!isDuplicateKey(error)) throw error;
      const existing = await this.collection.findOne({ _id: doc._id });
      if (!existing) throw error;
      return toJobInfo(existing, now);
    }
  }

  /** Adds many jobs in one insert; duplicates by jobId return the existing job. Order is kept. */
  async addBulk<Data>(jobs: { name: string; data: Data; opts?: JobOptions }[]): Promise<JobInfo<Data>[]> {
    if (jobs.length === 0) return [];
    const now = await this.now();
    const docs = jobs.map((job) => this.newDocument(job.name, job.data, job.opts, now));
    const duplicates = new Set<number>();
    try {
      await this.collection.insertMany(docs, { ordered: false });
    } catch (error) {
      const writeErrors = (error as { writeErrors?: unknown }).writeErrors;
      const list = Array.isArray(writeErrors) ? writeErrors : writeErrors ? [writeErrors] : [];
      if (list.length === 0 || list.some((e: { code?: number }) => e.code !== 11000)) throw error;
      for (const e of list as { index: number }[]) duplicates.add(e.index);
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

  /** Counts per state and per name in one aggregation (the seed's queue-stats and more). */
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

export type WakeUp = 'auto' | 'change-stream' | 'poll';

export type Handler<Data = unknown, Result = unknown> = (job: Job<Data>, signal: AbortSignal) => Promise<Result>;

export interface WorkerOptions {
  /** Jobs run at once by this worker (default 1). */
  concurrency?: number;
  /** Lease length; a job whose lease runs out is claimed again by another worker (default 30 s). */
  leaseMs?: number;
  /** Lease renewal period while a handler runs (default leaseMs / 3). */
  heartbeatMs?: number;
  /** Safety-net poll for delayed jobs, expired leases and missed events (default 1 s). */
  pollMs?: number;
  /** 'auto' watches the collection where the server supports change streams, else polls. */
  wakeUp?: WakeUp;
  /** A server that answers an empty getMore at once (no awaitData) is asked at most this often. */
  changeStreamPaceMs?: number;
  /**
   * How long the candidates of one search may serve later claims (default 100 ms; 0 searches for
   * every claim round). A job of higher priority added meanwhile waits at most this long.
   */
  candidateTtlMs?: number;
  /** A change event is acted on this long after it arrives, with any that follow (default 10 ms). */
  eventDelayMs?: number;
  /** Stalls tolerated before a job is failed as stalled (default 1, as in BullMQ). */
  maxStalledCount?: number;
  collection?: string;
  clock?: ServerClock;
  workerId?: string;
  /** Errors of the worker itself (a failed claim or write), never a handler's error. */
  onError?: (error: unknown) => void;
}

export interface WorkerCounters {
  claimed: number;
  completed: number;
  retried: number;
  failed: number;
  /** Jobs this worker took over from a worker whose lease ran out. */
  stalledReclaimed: number;
  /** Jobs failed because they stalled more than maxStalledCount times. */
  stalledFailed: number;
  /** Jobs handed back to waiting by close(). */
  released: number;
  /** Completion, failure or release writes refused because the lease was no longer ours. */
  staleWrites: number;
  /** Leases lost while the handler ran (heartbeat refused or deadline passed). */
  leasesLost: number;
  /** Compare-and-swap claims that another worker won first. */
  claimConflicts: number;
  /** Searches for claimable jobs: a find for candidates, or a server-side claim (both scan). */
  searches: number;
  /** Server-side claims that found nothing due (another worker was first, or the queue is empty). */
  emptyClaims: number;
}

interface Running {
  doc: JobDocument;
  token: string;
  lockedUntil: number;
  controller: AbortController;
  heartbeat: ReturnType<typeof setInterval> | undefined;
  deadline: ReturnType<typeof setTimeout> | undefined;
  released: boolean;
  /** The handler has returned; its outcome is being written. */
  settling: boolean;
  done: Promise<void>;
}

/** Shuffles each run of equal priority in place (Fisher-Yates), keeping priorities in order. */
function shuffleWithinPriority(candidates: Candidate[]): void {
  let start = 0;
  while (start < candidates.length) {
    let end = start + 1;
    while (end < candidates.length && candidates[end]!.priority === candidates[start]!.priority) end++;
    for (let i = end - 1; i > start; i--) {
      const j = start + Math.floor(Math.random() * (i - start + 1));
      [candidates[i], candidates[j]] = [candidates[j]!, candidates[i]!];
    }
    start = end;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function toJobError(error: unknown, at: number): JobError {
  if (error instanceof Error) return { name: error.name, message: error.message, at: new Date(at) };
  return { name: 'Error', message: String(error), at: new Date(at) };
}

/** Consumer: claims jobs of the given names and runs the handler with at most `concurrency` at once. */
export class Worker<Data = unknown, Result = unknown> {
  readonly collection: Collection<JobDocument>;
  readonly clock: ServerClock;
  readonly names: readonly string[];
  readonly workerId: string;
  readonly counters: WorkerCounters = {
    claimed: 0,
    completed: 0,
    retried: 0,
    failed: 0,
    stalledReclaimed: 0,
    stalledFailed: 0,
    released: 0,
    staleWrites: 0,
    leasesLost: 0,
    claimConflicts: 0,
    searches: 0,
    emptyClaims: 0,
  };
  private readonly handler: Handler<Data, Result>;
  private readonly concurrency: number;
  private readonly leaseMs: number;
  private readonly heartbeatMs: number;
  private readonly pollMs: number;
  private readonly wakeUp: WakeUp;
  private readonly paceMs: number;
  private readonly maxStalledCount: number;
  private readonly candidateTtlMs: number;
  private readonly eventDelayMs: number;
  private readonly onError: (error: unknown) => void;
  private readonly running = new Map<string, Running>();
  private started = false;
  private closing = false;
  private fetching: Promise<void> | null = null;
  private wanted = false;
  /** The last search found fewer jobs than it asked for: nothing more is due until something changes. */
  private drained = false;
  /** A change event arrived since the last claim round began. */
  private changed = false;
  /** The next round must search (poll tick): it is what finds expired leases. */
  private searchNext = true;
  /** Wakes the change-stream reader when a slot frees or a claim round ends. */
  private gate: { promise: Promise<void>; open: () => void } | null = null;
  /** Unclaimed candidates of the last search, in claim order, and when it ran (server clock). */
  private hints: Candidate[] = [];
  private hintsAt = Number.NEGATIVE_INFINITY;
  private pollTimer: ReturnType<typeof setTimeout> | undefined;
  private dueTimer: ReturnType<typeof setTimeout> | undefined;
  private dueAt = Number.POSITIVE_INFINITY;
  private eventTimer: ReturnType<typeof setTimeout> | undefined;
  private stream: ChangeStream | null = null;
  private streamLoop: Promise<void> | null = null;
  private mode: 'change-stream' | 'poll' = 'poll';
  /** Recent claim conflicts, decaying; while high, candidates are tried in a shuffled order. */
  private contention = 0;

  constructor(db: Db, names: string | readonly string[], handler: Handler<Data, Result>, options: WorkerOptions = {}) {
    this.names = typeof names === 'string' ? [names] : [...names];
    if (this.names.length === 0) throw new ValidationError('a worker needs at least one job name');
    this.collection = db.collection<JobDocument>(options.collection ?? JOBS_COLLECTION);
    this.clock = options.clock ?? new ServerClock(db);
    this.handler = handler;
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? 1));
    this.leaseMs = Math.max(100, options.leaseMs ?? 30_000);
    this.heartbeatMs = Math.max(10, options.heartbeatMs ?? Math.floor(this.leaseMs / 3));
    this.pollMs = Math.max(10, options.pollMs ?? 1_000);
    this.wakeUp = options.wakeUp ?? 'auto';
    this.paceMs = Math.max(1, options.changeStreamPaceMs ?? 100);
    this.maxStalledCount = Math.max(0, options.maxStalledCount ?? 1);
    this.candidateTtlMs = Math.max(0, options.candidateTtlMs ?? 100);
    this.eventDelayMs = Math.max(0, options.eventDelayMs ?? 10);
    this.workerId = options.workerId ?? crypto.randomUUID();
    this.onError = options.onError ?? (() => {});
  }

  /** How idle workers learn of new jobs, once run() has settled it. */
  get wakeUpMode(): 'change-stream' | 'poll' {
    return this.mode;
  }

  get activeCount(): number {
    return this.running.size;
  }

  /** Syncs the clock, opens the change stream (or settles for polling) and starts claiming. */
  async run(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.clock.sync();
    if (this.wakeUp !== 'poll') {
      try {
        await this.openStream();
      } catch (error) {
        // A standalone mongod refuses $changeStream: 'auto' settles for polling.
        if (this.wakeUp === 'change-stream') {
          this.started = false;
          throw error;
        }
        this.onError(error);
      }
    }
    this.schedulePoll();
    this.kick('poll');
  }

  /**
   * Stops claiming, waits up to timeoutMs for running handlers, then aborts the rest and hands
   * their jobs back to waiting without consuming an attempt.
   */
  async close(timeoutMs = 10_000): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.pollTimer);
    clearTimeout(this.dueTimer);
    clearTimeout(this.eventTimer);
    this.openGate();
    const stream = this.stream;
    this.stream = null;
    await stream?.close().catch(() => {});
    await this.streamLoop;
    await this.fetching;
    const all = () => Promise.all([...this.running.values()].map((r) => r.done));
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([all(), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    await Promise.all(
      [...this.running.values()].map(async (run) => {
        if (run.settling) return run.done; // its outcome is being written: let it land
        run.released = true;
        this.stopLease(run);
        run.controller.abort(new Error('worker closing: job released'));
        const result = await this.collection
          .updateOne(fencedFilter(run.doc._id, run.token), releaseUpdate(crypto.randomUUID()))
          .catch((error) => {
            this.onError(error);
            return null;
          });
        if (result?.modifiedCount) this.counters.released++;
        else this.counters.staleWrites++;
        this.running.delete(run.doc._id);
      }),
    );
  }

  /**
   * Asks for a claim round when slots are free; coalesces requests while one is under way.
   * 'slot' (a job finished) is skipped when the last round showed nothing more is due and no
   * change arrived since; 'poll' always searches, which is also how expired leases are found.
   */
  private kick(reason: 'slot' | 'event' | 'poll'): void {
    if (this.closing || !this.started) return;
    if (reason === 'slot' && this.drained && !this.changed && this.hints.length === 0) return;
    if (reason === 'poll') this.searchNext = true;
    this.wanted = true;
    this.fetching ??= this.fetchLoop().finally(() => {
      this.fetching = null;
      this.openGate();
    });
  }

  private async fetchLoop(): Promise<void> {
    while (this.wanted && !this.closing) {
      this.wanted = false;
      const free = this.concurrency - this.running.size;
      if (free <= 0) return;
      this.changed = false;
      try {
        // With little or nothing due, workers woken together would all swap for the same few
        // jobs; a server-side claim lets them queue up instead. A backlog is searched in batches.
        const fresh = this.clock.now() - this.hintsAt <= this.candidateTtlMs;
        if (this.hints.length > 0 && fresh && !this.searchNext) await this.claimHints();
        else if (this.drained && !this.searchNext) await this.claimDirectly(free);
        else await this.fetch(free);
      } catch (error) {
        this.onError(error);
        return; // the poll timer tries again
      }
    }
  }

  /** One findOneAndUpdate per free slot, in claim order, until none is due. */
  private async claimDirectly(free: number): Promise<void> {
    for (let i = 0; i < free && !this.closing; i++) {
      const now = this.clock.now();
      this.counters.searches++;
      const doc = await this.collection.findOneAndUpdate(
        claimWaitingFilter(this.names, new Date(now)),
        claimUpdate(crypto.randomUUID(), new Date(now + this.leaseMs), this.workerId, new Date(now)),
        { sort: claimOrder, returnDocument: 'after' },
      );
      if (!doc) {
        this.counters.emptyClaims++;
        return;
      }
      this.start(doc);
    }
    // Every slot found a job: there may be a backlog, which a batched search serves better.
    this.drained = false;
    if (this.running.size < this.concurrency) this.wanted = true;
  }

  /**
   * One search for more candidates than free slots, then a compare-and-swap per candidate.
   * The search costs a scan; the swaps are by {_id, lockToken}.
   */
  private async fetch(free: number): Promise<void> {
    this.searchNext = false;
    const now = this.clock.now();
    // Under contention a wider window, tried in a shuffled order, spreads workers apart.
    const contended = this.contention > 0.5;
    const limit = Math.min(contended ? 16 * free + 16 : 4 * free + 16, 1_000);
    this.counters.searches++;
    const candidates = (await this.collection
      .find(claimableFilter(this.names, new Date(now)), { sort: claimOrder, limit, projection: candidateProjection })
      .toArray()) as Candidate[];
    this.drained = candidates.length < limit;
    // Workers that search at once see the same candidates in the same order; once they collide,
    // each tries them in its own order within a priority (order among equals is FIFO-ish anyway).
    if (contended) shuffleWithinPriority(candidates);
    this.hints = candidates;
    this.hintsAt = now;
    await this.claimHints();
    // Candidates lost to other workers but more may be due: search again.
    if (!this.drained && this.hints.length === 0 && this.running.size < this.concurrency) this.wanted = true;
  }

  /**
   * Claims from the candidates of the last search while they are fresh: a slot that frees soon
   * after a search needs no new scan. A candidate someone else took costs one refused swap.
   */
  private async claimHints(): Promise<void> {
    const conflictsBefore = this.counters.claimConflicts;
    while (this.hints.length > 0 && !this.closing) {
      const want = this.concurrency - this.running.size;
      if (want <= 0) break;
      const batch = this.hints.splice(0, want);
      const claimed = await Promise.all(batch.map((candidate) => this.claim(candidate)));
      for (const doc of claimed) if (doc) this.start(doc);
      // Mostly taken already: other workers are working through the same candidates, so the
      // rest are likely gone too; a new search is cheaper than swapping for each of them.
      const lost = claimed.filter((doc) => !doc).length;
      if (lost > 0 && lost * 2 >= batch.length) {
        this.hints = [];
        if (this.running.size < this.concurrency) this.wanted = true;
      }
    }
    this.contention = this.contention * 0.8 + (this.counters.claimConflicts - conflictsBefore);
  }

  private async claim(candidate: Candidate): Promise<JobDocument | null> {
    const now = this.clock.now();
    const token = crypto.randomUUID();
    const lockedUntil = new Date(now + this.leaseMs);
    if (candidate.state === 'active') {
      const filter = expiredLeaseFilter(candidate._id, candidate.lockToken, new Date(now));
      if (candidate.stalledCount >= this.maxStalledCount) {
        const error = {
          name: 'StalledError',
          message: `job stalled more than ${this.maxStalledCount} time(s)`,
          at: new Date(now),
        };
        const result = await this.collection.updateOne(filter, failUpdate(token, error, false));
        if (result.modifiedCount) this.counters.stalledFailed++;
        return null;
      }
      const doc = await this.collection.findOneAndUpdate(
        filter,
        reclaimStalledUpdate(token, lockedUntil, this.workerId, new Date(now)),
        { returnDocument: 'after' },
      );
      if (doc) this.counters.stalledReclaimed++;
      else this.counters.claimConflicts++;
      return doc;
    }
    const doc = await this.collection.findOneAndUpdate(
      fencedFilter(candidate._id, candidate.lockToken),
      claimUpdate(token, lockedUntil, this.workerId, new Date(now)),
      { returnDocument: 'after' },
    );
    if (!doc) this.counters.claimConflicts++;
    return doc;
  }

  private start(doc: JobDocument): void {
    this.counters.claimed++;
    const run: Running = {
      doc,
      token: doc.lockToken,
      lockedUntil: doc.lockedUntil?.getTime() ?? this.clock.now() + this.leaseMs,
      controller: new AbortController(),
      heartbeat: undefined,
      deadline: undefined,
      released: false,
      settling: false,
      done: Promise.resolve(),
    };
    this.running.set(doc._id, run);
    this.armDeadline(run);
    run.heartbeat = setInterval(() => void this.renew(run), this.heartbeatMs);
    run.done = this.execute(run).finally(() => {
      this.stopLease(run);
      if (!run.released) this.running.delete(doc._id);
      this.kick('slot');
      this.openGate();
    });
  }

  /** Aborts the handler when the lease deadline passes without a confirmed renewal. */
  private armDeadline(run: Running): void {
    clearTimeout(run.deadline);
    run.deadline = setTimeout(
      () => this.loseLease(run, 'lease deadline passed without renewal'),
      Math.max(0, run.lockedUntil - this.clock.now()),
    );
  }

  private loseLease(run: Running, reason: string): void {
    if (run.controller.signal.aborted) return;
    this.counters.leasesLost++;
    this.stopLease(run);
    run.controller.abort(new Error(`lease lost: ${reason}`));
  }

  private stopLease(run: Running): void {
    clearInterval(run.heartbeat);
    clearTimeout(run.deadline);
  }

  private async renew(run: Running): Promise<void> {
    if (run.controller.signal.aborted) return;
    const until = this.clock.now() + this.leaseMs;
    try {
      const result = await this.collection.updateOne(
        fencedFilter(run.doc._id, run.token),
        heartbeatUpdate(new Date(until)),
      );
      if (run.controller.signal.aborted || run.released) return;
      if (result.matchedCount === 0) this.loseLease(run, 'another worker holds the job');
      else {
        run.lockedUntil = until;
        this.armDeadline(run);
      }
    } catch (error) {
      this.onError(error); // the deadline timer aborts the handler if renewals keep failing
    }
  }

  private async execute(run: Running): Promise<void> {
    const { doc } = run;
    let outcome: { ok: true; result: Result } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, result: await this.handler(toJob<Data>(doc), run.controller.signal) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    this.stopLease(run);
    if (run.released) return;
    run.settling = true;
    const now = this.clock.now();
    const filter = fencedFilter(doc._id, run.token);
    const token = crypto.randomUUID();
    try {
      let changed: number;
      if (outcome.ok) {
        changed = doc.removeOnComplete
          ? (await this.collection.deleteOne(filter)).deletedCount
          : (await this.collection.updateOne(filter, completeUpdate(token, outcome.result, new Date(now))))
              .modifiedCount;
        if (changed) this.counters.completed++;
      } else {
        const error = toJobError(outcome.error, now);
        const attemptsMade = doc.attemptsMade + 1;
        if (attemptsMade < doc.attempts) {
          const runAt = new Date(now + backoffDelay(doc.backoff, attemptsMade));
          changed = (await this.collection.updateOne(filter, retryUpdate(token, runAt, error))).modifiedCount;
          if (changed) this.counters.retried++;
        } else {
          changed = (await this.collection.updateOne(filter, failUpdate(token, error, true))).modifiedCount;
          if (changed) this.counters.failed++;
        }
      }
      if (!changed) this.counters.staleWrites++;
    } catch (error) {
      // The lease runs out and another worker takes the job again: nothing is lost.
      this.onError(error);
    }
  }

  private schedulePoll(): void {
    if (this.closing) return;
    this.pollTimer = setTimeout(() => {
      this.clock.maybeSync().catch((error) => this.onError(error));
      this.kick('poll');
      this.schedulePoll();
    }, this.pollMs);
  }

  /** Wakes at a known future due time (a delayed insert or a retry seen on the change stream). */
  private scheduleDue(at: number): void {
    if (this.closing || at >= this.dueAt) return;
    clearTimeout(this.dueTimer);
    this.dueAt = at;
    this.dueTimer = setTimeout(
      () => {
        this.dueAt = Number.POSITIVE_INFINITY;
        this.kick('event');
      },
      Math.max(0, at - this.clock.now()) + 5,
    );
  }

  private waitGate(): Promise<void> {
    if (!this.gate) {
      let open = () => {};
      const promise = new Promise<void>((resolve) => (open = resolve));
      this.gate = { promise, open };
    }
    return this.gate.promise;
  }

  private openGate(): void {
    const gate = this.gate;
    this.gate = null;
    gate?.open();
  }

  private async openStream(): Promise<void> {
    // A short await keeps run() quick on a replica set, where the first tryNext waits this long.
    const stream = this.collection.watch(wakeUpPipeline, { maxAwaitTimeMS: Math.min(this.pollMs, 500) });
    try {
      // The aggregate is sent lazily: ask once so that an unsupported server fails here.
      const first = await stream.tryNext();
      if (first) this.onChange(first);
    } catch (error) {
      await stream.close().catch(() => {});
      throw error;
    }
    this.stream = stream;
    this.mode = 'change-stream';
    this.streamLoop = this.readStream(stream);
  }

  private async readStream(stream: ChangeStream): Promise<void> {
    while (!this.closing && this.stream === stream) {
      // Events only matter to a worker with free slots that has run out of due jobs; a busy
      // worker leaves them in the server and reads the backlog in one batch later.
      if (!this.drained || this.running.size >= this.concurrency || this.fetching) {
        await this.waitGate();
        continue;
      }
      const began = Date.now();
      try {
        const change = await stream.tryNext();
        if (change) {
          this.onChange(change);
          continue;
        }
      } catch (error) {
        if (this.closing || this.stream !== stream) return;
        // The driver resumes by itself after transient errors; this one ended the stream. Poll
        // meanwhile, then open a new one (which starts a new reader).
        this.onError(error);
        this.stream = null;
        this.mode = 'poll';
        await stream.close().catch(() => {});
        await sleep(this.pollMs);
        if (this.closing) return;
        await this.openStream().catch((reopenError) => this.onError(reopenError));
        return;
      }
      // mongo-java-server answers an empty getMore at once; a real server waits maxAwaitTimeMS.
      const waited = Date.now() - began;
      if (waited < this.paceMs) await sleep(this.paceMs - waited);
    }
  }

  private onChange(change: unknown): void {
    const event = change as {
      fullDocument?: { runAt?: unknown };
      updateDescription?: { updatedFields?: { runAt?: unknown } };
    };
    const runAt = event.updateDescription?.updatedFields?.runAt ?? event.fullDocument?.runAt;
    if (runAt instanceof Date && runAt.getTime() > this.clock.now()) this.scheduleDue(runAt.getTime());
    else {
      this.changed = true;
      // Workers all see each insert; gathering a few milliseconds of them before claiming means
      // fewer claim rounds, and so fewer rounds in which all but one worker come back empty.
      this.eventTimer ??= setTimeout(() => {
        this.eventTimer = undefined;
        this.kick('event');
      }, this.eventDelayMs);
    }
  }
}
