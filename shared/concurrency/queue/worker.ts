// The consumer side of the queue: a Worker claims jobs of its names (claim.ts), keeps their leases
// while the handler runs (lease.ts), writes the outcome (completed, retried with backoff, or failed)
// as a compare-and-swap on the claim's token, and hands unfinished jobs back on close. Idle, it is
// woken by a change stream or a poll (wake-up.ts). All times are the database server's.
// Runtime-neutral: Web APIs only.
import type { Collection, Db } from 'mongodb';
import { ServerClock } from '../../core/clock.ts';
import { ValidationError } from '../../core/errors.ts';
import { contextOf, failSpan, inSpan, recordingSpan, SpanKind } from '../../core/tracing.ts';
import { Claimer } from './claim.ts';
import { backoffDelay, type Job, type JobDocument, toJob, toJobError } from './job.ts';
import { Lease, type LeaseSettings } from './lease.ts';
import { completeUpdate, failUpdate, fencedFilter, JOBS_COLLECTION, releaseUpdate, retryUpdate } from './plans.ts';
import { type WakeUp, WakeUpSource } from './wake-up.ts';

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
  /** Each run's written outcome, once its write is done (for metrics); must not throw. */
  onSettled?: (settled: SettledRun) => void;
}

/**
 * How one run ended: completed, retried after its backoff, dead-lettered (failed on its last attempt),
 * or stale (the lease was no longer ours, so another worker owns the job). `ms` runs from the handler's
 * start to the outcome's write.
 */
export interface SettledRun {
  name: string;
  outcome: 'completed' | 'retried' | 'dead_lettered' | 'stale';
  ms: number;
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
  lease: Lease;
  /** The handler has returned; its outcome is being written. */
  settling: boolean;
  done: Promise<void>;
}

type Outcome<Result> = { ok: true; result: Result } | { ok: false; error: unknown };

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
  private readonly wakeUp: WakeUp;
  private readonly onError: (error: unknown) => void;
  private readonly onSettled: (settled: SettledRun) => void;
  private readonly leaseSettings: LeaseSettings;
  private readonly claims: Claimer;
  private readonly wake: WakeUpSource;
  private readonly running = new Map<string, Running>();
  private started = false;
  private closing = false;
  private fetching: Promise<void> | null = null;
  private wanted = false;
  /** A change event arrived since the last claim round began. */
  private changed = false;

  constructor(db: Db, names: string | readonly string[], handler: Handler<Data, Result>, options: WorkerOptions = {}) {
    this.names = typeof names === 'string' ? [names] : [...names];
    if (this.names.length === 0) throw new ValidationError('a worker needs at least one job name');
    this.collection = db.collection<JobDocument>(options.collection ?? JOBS_COLLECTION);
    this.clock = options.clock ?? new ServerClock(db);
    this.handler = handler;
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? 1));
    this.wakeUp = options.wakeUp ?? 'auto';
    this.workerId = options.workerId ?? crypto.randomUUID();
    this.onError = options.onError ?? (() => {});
    this.onSettled = options.onSettled ?? (() => {});
    const leaseMs = Math.max(100, options.leaseMs ?? 30_000);
    this.leaseSettings = {
      collection: this.collection,
      clock: this.clock,
      leaseMs,
      heartbeatMs: Math.max(10, options.heartbeatMs ?? Math.floor(leaseMs / 3)),
      onLost: () => this.counters.leasesLost++,
      onError: (error) => this.onError(error),
    };
    this.claims = this.newClaimer(leaseMs, options);
    this.wake = this.newWakeUpSource(options);
  }

  private newClaimer(leaseMs: number, options: WorkerOptions): Claimer {
    const { collection, clock, names, workerId, counters } = this;
    const settings = {
      collection,
      clock,
      names,
      workerId,
      counters,
      leaseMs,
      maxStalledCount: Math.max(0, options.maxStalledCount ?? 1),
      candidateTtlMs: Math.max(0, options.candidateTtlMs ?? 100),
    };
    return new Claimer(settings, {
      closing: () => this.closing,
      freeSlots: () => this.concurrency - this.running.size,
      start: (doc) => this.start(doc),
      again: () => {
        this.wanted = true;
      },
    });
  }

  private newWakeUpSource(options: WorkerOptions): WakeUpSource {
    const settings = {
      collection: this.collection,
      clock: this.clock,
      pollMs: Math.max(10, options.pollMs ?? 1_000),
      paceMs: Math.max(1, options.changeStreamPaceMs ?? 100),
      eventDelayMs: Math.max(0, options.eventDelayMs ?? 10),
    };
    return new WakeUpSource(settings, {
      kick: (reason) => this.kick(reason),
      idle: () => this.claims.drained && this.running.size < this.concurrency && !this.fetching,
      changed: () => {
        this.changed = true;
      },
      onError: (error) => this.onError(error),
    });
  }

  /** How idle workers learn of new jobs, once run() has settled it. */
  get wakeUpMode(): 'change-stream' | 'poll' {
    return this.wake.mode;
  }

  get activeCount(): number {
    return this.running.size;
  }

  /** Syncs the clock, opens the change stream (or settles for polling) and starts claiming. */
  async run(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.clock.sync();
    try {
      await this.wake.start(this.wakeUp);
    } catch (error) {
      this.started = false;
      throw error;
    }
    this.kick('poll');
  }

  /**
   * Stops claiming, waits up to timeoutMs for running handlers, then aborts the rest and hands
   * their jobs back to waiting without consuming an attempt.
   */
  async close(timeoutMs = 10_000): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    await this.wake.close();
    await this.fetching;
    const all = () => Promise.all([...this.running.values()].map((r) => r.done));
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([all(), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    await Promise.all([...this.running.values()].map((run) => this.release(run)));
  }

  /** Aborts a handler that outlived the drain and hands its job back to waiting. */
  private async release(run: Running): Promise<void> {
    if (run.settling) return run.done; // its outcome is being written: let it land
    run.lease.release(new Error('worker closing: job released'));
    const result = await this.collection
      .updateOne(fencedFilter(run.doc._id, run.lease.token), releaseUpdate(crypto.randomUUID()))
      .catch((error) => {
        this.onError(error);
        return null;
      });
    if (result?.modifiedCount) this.counters.released++;
    else this.counters.staleWrites++;
    this.running.delete(run.doc._id);
  }

  /**
   * Asks for a claim round when slots are free; coalesces requests while one is under way.
   * 'slot' (a job finished) is skipped when the last round showed nothing more is due and no
   * change arrived since; 'poll' always searches, which is also how expired leases are found.
   */
  private kick(reason: 'slot' | 'event' | 'poll'): void {
    if (this.closing || !this.started) return;
    if (reason === 'slot' && this.claims.drained && !this.changed && !this.claims.hasCandidates) return;
    if (reason === 'poll') this.claims.mustSearch();
    this.wanted = true;
    this.fetching ??= this.fetchLoop().finally(() => {
      this.fetching = null;
      this.wake.openGate();
    });
  }

  private async fetchLoop(): Promise<void> {
    while (this.wanted && !this.closing) {
      this.wanted = false;
      const free = this.concurrency - this.running.size;
      if (free <= 0) return;
      this.changed = false;
      try {
        await this.claims.round(free);
      } catch (error) {
        this.onError(error);
        return; // the poll timer tries again
      }
    }
  }

  private start(doc: JobDocument): void {
    this.counters.claimed++;
    const run: Running = { doc, lease: new Lease(doc, this.leaseSettings), settling: false, done: Promise.resolve() };
    this.running.set(doc._id, run);
    run.lease.keep();
    run.done = this.execute(run).finally(() => {
      run.lease.stop();
      if (!run.lease.released) this.running.delete(doc._id);
      this.kick('slot');
      this.wake.openGate();
    });
  }

  /**
   * One run, in a CONSUMER span (while tracing is on) whose parent is the context the job carries: the
   * run, its handler's commands and jobs, and the outcome's write join the trace that added the job.
   */
  private execute(run: Running): Promise<void> {
    const { doc } = run;
    const attributes = {
      'messaging.system': 'loan-admin.jobs',
      'messaging.operation.type': 'process',
      'messaging.destination.name': doc.name,
      'messaging.message.id': doc._id,
      'loan_admin.job.attempt': doc.attemptsMade + 1,
    };
    const options = { root: true, parent: contextOf(doc.trace), kind: SpanKind.CONSUMER, attributes };
    return inSpan(`run ${doc.name}`, options, (span) =>
      this.executeNow(run).then((outcome) => {
        span?.setAttribute('loan_admin.job.outcome', outcome);
      }),
    );
  }

  private async executeNow(run: Running): Promise<SettledRun['outcome'] | 'released' | 'unwritten'> {
    const started = performance.now();
    let outcome: Outcome<Result>;
    try {
      outcome = { ok: true, result: await this.handler(toJob<Data>(run.doc), run.lease.signal) };
    } catch (error) {
      outcome = { ok: false, error };
      const span = recordingSpan();
      if (span) failSpan(span, error);
    }
    run.lease.stop();
    if (run.lease.released) return 'released';
    run.settling = true;
    try {
      const written = await this.writeOutcome(run.doc, run.lease.token, outcome);
      if (!written) this.counters.staleWrites++;
      this.onSettled({ name: run.doc.name, outcome: written || 'stale', ms: performance.now() - started });
      return written || 'stale';
    } catch (error) {
      // The lease runs out and another worker takes the job again: nothing is lost.
      this.onError(error);
      return 'unwritten';
    }
  }

  /** Completed, retried after its backoff, or failed for good; null when the lease was no longer ours. */
  private async writeOutcome(
    doc: JobDocument,
    lease: string,
    outcome: Outcome<Result>,
  ): Promise<Exclude<SettledRun['outcome'], 'stale'> | null> {
    const now = this.clock.now();
    const filter = fencedFilter(doc._id, lease);
    const token = crypto.randomUUID();
    if (outcome.ok) {
      const changed = doc.removeOnComplete
        ? (await this.collection.deleteOne(filter)).deletedCount
        : (await this.collection.updateOne(filter, completeUpdate(token, outcome.result, new Date(now)))).modifiedCount;
      if (changed) this.counters.completed++;
      return changed ? 'completed' : null;
    }
    const error = toJobError(outcome.error, now);
    const attemptsMade = doc.attemptsMade + 1;
    if (attemptsMade < doc.attempts) {
      const runAt = new Date(now + backoffDelay(doc.backoff, attemptsMade));
      const changed = (await this.collection.updateOne(filter, retryUpdate(token, runAt, error))).modifiedCount;
      if (changed) this.counters.retried++;
      return changed ? 'retried' : null;
    }
    const changed = (await this.collection.updateOne(filter, failUpdate(token, error, true))).modifiedCount;
    if (changed) this.counters.failed++;
    return changed ? 'dead_lettered' : null;
  }
}
