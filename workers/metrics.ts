// Prometheus metrics of a worker process, served as GET /metrics on its probe server beside /health and
// /ready: every run's outcome and duration by job name, lease losses and the worker's other counters,
// readiness, process metrics, and what a handler adds (the OCR worker: confidence per field).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { mirroredCounter } from '../api/metrics.ts';
import type { SettledRun, WorkerCounters } from '../shared/concurrency/queue/index.ts';

export interface WorkerMetrics {
  registry: Registry;
  /** The queue Worker's onSettled. */
  settled(run: SettledRun): void;
  /** Reads the worker's counters and state at scrape time. */
  watch(source: { counters: WorkerCounters; activeCount: number }, ready: () => Promise<boolean>): void;
}

/** Job durations: milliseconds (approval) to a minute (OCR of a large scan). */
const durationBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Counters the queue Worker keeps, exported as they are (read at scrape time). */
const workerCounters: { key: keyof WorkerCounters; name: string; help: string }[] = [
  {
    key: 'leasesLost',
    name: 'worker_lease_losses_total',
    help: 'Leases lost while a handler ran (renewal refused or deadline passed): the job was aborted here',
  },
  {
    key: 'stalledReclaimed',
    name: 'worker_stalled_reclaimed_total',
    help: 'Jobs this worker took over from a worker whose lease ran out',
  },
  {
    key: 'stalledFailed',
    name: 'worker_stalled_failed_total',
    help: 'Jobs failed because they stalled more than maxStalledCount times',
  },
  {
    key: 'staleWrites',
    name: 'worker_stale_writes_total',
    help: 'Outcome or release writes refused because the lease was no longer ours',
  },
  { key: 'claimed', name: 'worker_jobs_claimed_total', help: 'Jobs claimed by this worker' },
];

/** `jobNames`' series start at 0, so the first retry or dead letter shows as an increase. */
export function createWorkerMetrics(worker: string, jobNames: readonly string[]): WorkerMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ worker });
  collectDefaultMetrics({ register: registry });
  const jobs = new Counter({
    name: 'worker_jobs_total',
    help: 'Job runs by job name and written outcome: completed, retried (failed, runs again after its backoff), dead_lettered (failed on its last attempt), stale (lease lost)',
    labelNames: ['name', 'outcome'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'worker_job_duration_seconds',
    help: 'Job run time from the handler start to its outcome written, by job name and outcome',
    labelNames: ['name', 'outcome'] as const,
    buckets: durationBuckets,
    registers: [registry],
  });
  for (const name of jobNames) {
    for (const outcome of ['completed', 'retried', 'dead_lettered', 'stale'] as const) jobs.inc({ name, outcome }, 0);
  }
  return {
    registry,
    settled({ name, outcome, ms }) {
      jobs.inc({ name, outcome });
      duration.observe({ name, outcome }, ms / 1000);
    },
    watch(source, ready) {
      for (const { key, name, help } of workerCounters) {
        mirroredCounter(registry, name, help, () => source.counters[key]);
      }
      new Gauge({
        name: 'worker_jobs_active',
        help: 'Jobs running in this worker now',
        registers: [registry],
        collect() {
          this.set(source.activeCount);
        },
      });
      new Gauge({
        name: 'service_ready',
        help: '1 while the process is ready (a worker: claiming and reaching MongoDB), else 0',
        registers: [registry],
        async collect() {
          this.set((await ready()) ? 1 : 0);
        },
      });
    },
  };
}
