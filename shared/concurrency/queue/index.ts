// The queue's public API: producers use Queue, consumers Worker; the rest is for wiring and tests.
export type { BackoffOptions, Job, JobDocument, JobError, JobInfo, JobOptions, JobState } from './job.ts';
export { backoffDelay } from './job.ts';
export { JOBS_COLLECTION, queueIndexes, queueIndexPlan } from './plans.ts';
export { Queue, type QueueOptions, type QueueStats, type RetryDeadOutcome } from './queue.ts';
export type { WakeUp } from './wake-up.ts';
export { type Handler, type SettledRun, Worker, type WorkerCounters, type WorkerOptions } from './worker.ts';
