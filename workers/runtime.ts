// What every worker process shares: config, one MongoClient, indexes, a queue Worker running the
// handler, liveness/readiness probes over HTTP, JSON logs, and a graceful drain on SIGTERM.
// A bad configuration exits 2 with one message; an unreachable database at start exits 1.
import type { Server } from 'node:http';
import type { Db } from 'mongodb';
import { createLogger, errorFields, type Logger } from '../api/log.ts';
import { startTracing, type Tracing } from '../api/otel.ts';
import { type Job, Queue, queueIndexes, Worker } from '../shared/concurrency/queue/index.ts';
import { ServerClock } from '../shared/core/clock.ts';
import { type Config, loadConfig } from '../shared/core/config.ts';
import { connect, type Database, ensureIndexes, type IndexPlan } from '../shared/core/db.ts';
import { createWorkerMetrics, type WorkerMetrics } from './metrics.ts';
import { isReady, listenProbe, type ProbeStatus, probeAnswers } from './probe.ts';

export interface WorkerContext {
  db: Db;
  clock: ServerClock;
  queue: Queue;
  logger: Logger;
  config: Config;
}

export type JobHandler<Data = unknown, Result = unknown> = (
  job: Job<Data>,
  signal: AbortSignal,
  ctx: WorkerContext,
) => Promise<Result>;

export interface WorkerProcessOptions<Data, Result> {
  /** The process's name in logs and probes, e.g. 'ocr'. */
  name: string;
  jobNames: string[];
  handler: JobHandler<Data, Result>;
  /** Defaults to QUEUE_CONCURRENCY. */
  concurrency?: number;
  /** Defaults to QUEUE_LEASE_MS. */
  leaseMs?: number;
  /** Extra indexes the handler relies on. */
  indexes?: IndexPlan[];
  /** Runs once after connecting, before claiming (e.g. load an OCR model); its cost shows in readiness. */
  prepare?: (ctx: WorkerContext) => Promise<void>;
  /** Runs after the drain (e.g. free the OCR model). */
  dispose?: () => Promise<void>;
  /**
   * Housekeeping once right after start (a worker that comes back after an outage catches up at once)
   * and every `ms` while the worker runs; failures are logged, never fatal.
   */
  every?: { ms: (config: Config) => number; run: (ctx: WorkerContext) => Promise<unknown> };
  /** Metrics of the handler's own (registered on the worker's registry), fed each completed job's result. */
  metrics?: (registry: WorkerMetrics['registry']) => (result: Result, job: Job<Data>) => void;
}

export interface RunningWorker {
  probePort: number;
  stop(reason: string): Promise<void>;
}

/** Starts a worker in this process; used by the workers' main files and, in-process, by tests. */
export async function startWorker<Data, Result>(
  options: WorkerProcessOptions<Data, Result>,
  env: Record<string, string | undefined> = process.env,
): Promise<RunningWorker> {
  const config = loadConfig(env);
  const logger = createLogger(config.LOG_LEVEL, { worker: options.name, pid: process.pid });
  // With OTEL_EXPORTER_OTLP_ENDPOINT: each run is a span, child of the context its job carries.
  const tracing = startTracing(config, `loan-admin-${options.name}`);
  const database = await openDatabase(
    config,
    options.indexes ?? [],
    tracing !== undefined && config.OTEL_TRACE_DB_COMMANDS,
  );
  const clock = new ServerClock(database.db);
  await clock.sync();
  const ctx: WorkerContext = { db: database.db, clock, queue: new Queue(database.db, { clock }), logger, config };
  const status: ProbeStatus = { ready: false, stopping: false };
  const metrics = createWorkerMetrics(options.name, options.jobNames);
  const probe = await listenProbe(
    config.HOST,
    config.WORKER_PROBE_PORT,
    probeAnswers(options.name, database, status, metrics.registry, config.METRICS_TOKEN),
  );
  await options.prepare?.(ctx);
  const worker = createQueueWorker(options, ctx, metrics);
  metrics.watch(worker, () => isReady(database, status));
  await worker.run();
  status.ready = true;
  const housekeeping = startHousekeeping(options.every, ctx);
  logger.info('worker started', {
    jobs: options.jobNames,
    concurrency: options.concurrency ?? config.QUEUE_CONCURRENCY,
    wakeUp: worker.wakeUpMode,
    probePort: probe.port,
  });
  const drain = { ctx, worker, housekeeping, probe, database, dispose: options.dispose, tracing };
  return {
    probePort: probe.port,
    async stop(reason: string) {
      if (status.stopping) return;
      status.stopping = true;
      await drainWorker(drain, reason);
    },
  };
}

async function openDatabase(config: Config, indexes: IndexPlan[], traced: boolean): Promise<Database> {
  try {
    const database = await connect(config, { traced });
    await ensureIndexes(database.db, [queueIndexes, ...indexes]);
    return database;
  } catch (error) {
    throw Object.assign(new Error(`cannot reach MongoDB at start: ${(error as Error).message}`, { cause: error }), {
      exitCode: 1,
    });
  }
}

/** The queue Worker that runs the handler and logs each job's outcome. */
function createQueueWorker<Data, Result>(
  options: WorkerProcessOptions<Data, Result>,
  ctx: WorkerContext,
  metrics: WorkerMetrics,
): Worker<Data, Result> {
  const { config, logger } = ctx;
  const observe = options.metrics?.(metrics.registry);
  return new Worker<Data, Result>(
    ctx.db,
    options.jobNames,
    async (job, signal) => {
      const started = performance.now();
      try {
        const result = await options.handler(job, signal, ctx);
        logger.info('job completed', { job: job.id, name: job.name, ms: Math.round(performance.now() - started) });
        try {
          observe?.(result, job);
        } catch (error) {
          logger.warn('job metrics failed', errorFields(error));
        }
        return result;
      } catch (error) {
        const attempt = job.attemptsMade + 1;
        const fields = { job: job.id, name: job.name, attempt, attempts: job.attempts, ...errorFields(error) };
        if (job.attempts === undefined) logger.warn('job failed', fields);
        else if (attempt < job.attempts) logger.warn('job failed; it runs again after its backoff', fields);
        else logger.error('job failed on its last attempt; it is dead-lettered', fields);
        throw error;
      }
    },
    {
      concurrency: options.concurrency ?? config.QUEUE_CONCURRENCY,
      leaseMs: options.leaseMs ?? config.QUEUE_LEASE_MS,
      clock: ctx.clock,
      onError: (error) => logger.error('worker error', errorFields(error)),
      onSettled: metrics.settled,
    },
  );
}

/**
 * Housekeeping once right after start (a worker that comes back after an outage catches up at once)
 * and every `ms`; runs never overlap, failures are logged. stop() ends the timer and awaits the last run.
 */
function startHousekeeping(
  every: WorkerProcessOptions<unknown, unknown>['every'],
  ctx: WorkerContext,
): { stop(): Promise<unknown> } {
  let housekeeping: Promise<unknown> = Promise.resolve();
  const everyMs = every?.ms(ctx.config) ?? 0;
  if (!every || everyMs <= 0) return { stop: () => housekeeping };
  const keepHouse = () => {
    housekeeping = housekeeping
      .then(() => every.run(ctx))
      .catch((error) => ctx.logger.warn('housekeeping failed', errorFields(error)));
  };
  keepHouse();
  const timer = setInterval(keepHouse, everyMs);
  return {
    stop() {
      clearInterval(timer);
      return housekeeping;
    },
  };
}

interface Drain {
  ctx: WorkerContext;
  worker: Pick<Worker, 'activeCount' | 'close' | 'counters'>;
  housekeeping: { stop(): Promise<unknown> };
  probe: { server: Server };
  database: Database;
  dispose: (() => Promise<void>) | undefined;
  tracing: Tracing | undefined;
}

/** Graceful stop: housekeeping ends, running jobs get WORKER_DRAIN_MS, then everything closes. */
async function drainWorker(drain: Drain, reason: string): Promise<void> {
  const { ctx, worker } = drain;
  const { config, logger } = ctx;
  await drain.housekeeping.stop();
  logger.info('worker stopping', { reason, active: worker.activeCount, drainMs: config.WORKER_DRAIN_MS });
  await worker.close(config.WORKER_DRAIN_MS);
  await drain.dispose?.();
  await new Promise<void>((resolve) => drain.probe.server.close(() => resolve()));
  await drain.database.close();
  logger.info('worker stopped', { counters: worker.counters });
  // The last runs' spans leave before the process exits.
  await drain.tracing?.shutdown();
}

/** The workers' main: start, log the probe port, drain on SIGTERM/SIGINT, exit with a clear code. */
export async function runWorkerProcess<Data, Result>(options: WorkerProcessOptions<Data, Result>): Promise<void> {
  let running: RunningWorker;
  try {
    running = await startWorker(options);
  } catch (error) {
    const code = (error as { exitCode?: number }).exitCode ?? ((error as { code?: string }).code === 'config' ? 2 : 1);
    console.error((error as Error).message);
    process.exit(code);
  }
  const stop = (signal: string) => {
    running.stop(signal).then(
      () => process.exit(0),
      (error) => {
        console.error(`worker ${options.name} did not stop cleanly: ${(error as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}
