// A job as stored in MongoDB, the options it is added with, and what producers and handlers see
// of it. Priority follows BullMQ: a lower number runs first, 0 (the default) is the highest.
import { z } from 'zod';
import { backoffDelay as exponentialBackoff } from '../../core/clock.ts';
import { ValidationError } from '../../core/errors.ts';
import type { TraceCarrier } from '../../core/tracing.ts';

export type JobState = 'waiting' | 'active' | 'completed' | 'failed';

export interface BackoffOptions {
  type: 'exponential' | 'fixed';
  /** Milliseconds: the fixed delay, or the first retry's delay that doubles with each attempt. */
  delay: number;
  /** 0..1: the delay is drawn uniformly from [delay * (1 - jitter), delay] (BullMQ's rule). */
  jitter?: number;
}

export interface JobError {
  name: string;
  message: string;
  at: Date;
}

export interface JobDocument<Data = unknown, Result = unknown> {
  _id: string;
  name: string;
  data: Data;
  state: JobState;
  /** Lower number first (BullMQ's convention); 0, the default, is the highest. */
  priority: number;
  /** Due time on the database server's clock; a waiting job with runAt in the future is delayed. */
  runAt: Date;
  createdAt: Date;
  /** How many times the handler may run to a failure before the job is failed (>= 1). */
  attempts: number;
  /** Failed runs so far (a stalled or released run does not count). */
  attemptsMade: number;
  /** Claims so far, including stalled and released ones. */
  attemptsStarted: number;
  /** Times a lease expired under a running job and the job was claimed again. */
  stalledCount: number;
  backoff: BackoffOptions | null;
  removeOnComplete: boolean;
  /** Names the current lease (or, for a job nobody holds, its current version). */
  lockToken: string;
  /** Lease deadline on the server's clock while active; null otherwise. */
  lockedUntil: Date | null;
  lockedBy: string | null;
  startedAt: Date | null;
  finishedAt: Date | null;
  result?: Result;
  lastError: JobError | null;
  /** Times an admin moved it back from the dead letters (Queue.retryDead), the last one by whom and when. */
  retries?: number;
  retriedBy?: string;
  retriedAt?: Date;
  /**
   * The W3C trace context of the span that added it (only while tracing is on): the run is a child of it,
   * so one trace follows a piece of work through every process that touches it.
   */
  trace?: TraceCarrier;
}

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

export function parseJobOptions(options: JobOptions | undefined) {
  const parsed = jobOptionsSchema.safeParse(options ?? {});
  if (!parsed.success) {
    throw new ValidationError(
      'invalid job options',
      parsed.error.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message })),
    );
  }
  return parsed.data;
}

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
  /** Times it was moved back from the dead letters; 0 when never. */
  retries: number;
  retriedBy: string | null;
  retriedAt: Date | null;
}

export function toJob<Data>(doc: JobDocument): Job<Data> {
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

export function toJobInfo<Data, Result>(doc: JobDocument, now: number): JobInfo<Data, Result> {
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
    retries: doc.retries ?? 0,
    retriedBy: doc.retriedBy ?? null,
    retriedAt: doc.retriedAt ?? null,
  };
}

export function toJobError(error: unknown, at: number): JobError {
  if (error instanceof Error) return { name: error.name, message: error.message, at: new Date(at) };
  return { name: 'Error', message: String(error), at: new Date(at) };
}

/** BullMQ's delays: fixed, or delay * 2^(attempt - 1); jitter draws from [d * (1 - jitter), d]. */
export function backoffDelay(
  backoff: BackoffOptions | null,
  attemptsMade: number,
  random: () => number = Math.random,
): number {
  if (!backoff) return 0;
  const jitter = Math.min(1, Math.max(0, backoff.jitter ?? 0));
  const retry = backoff.type === 'fixed' ? 1 : attemptsMade;
  return Math.round(exponentialBackoff(retry, { base: backoff.delay, cap: Number.POSITIVE_INFINITY, jitter, random }));
}
