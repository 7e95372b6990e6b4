// Prometheus metrics for the Node entry only (prom-client is Node-only; the app itself stays
// runtime-neutral and reports responses through AppOptions.onResponse).
import type { Hono } from 'hono';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { QueueStats } from '../shared/concurrency/queue/index.ts';
import type { PaymentStats } from '../shared/loans/payments.ts';
import type { AppEnv, ResponseInfo } from './app.ts';
import type { StreamStats } from './event-streams.ts';
import { HttpError } from './http-errors.ts';
import type { OverloadState } from './overload.ts';
import type { LedgerChecks } from './services.ts';

export interface MetricsOptions {
  queue: { stats(): Promise<QueueStats> };
  /** The instance's event streams (read at scrape time). */
  events?: StreamStats;
  /** Queue stats are one aggregation; scrapes within this many ms share one. */
  queueStatsCacheMs?: number;
  /** Process metrics (CPU, memory, event loop lag, GC). */
  defaultMetrics?: boolean;
  /** When set, a scrape must send `Authorization: Bearer <token>` (401 otherwise). */
  token?: string;
  /** What /ready answers, read at scrape time as service_ready. */
  ready?: () => Promise<boolean>;
  /** The instance's revocation cache: its refresh failures and the age of its last refresh. */
  revocations?: { syncs: number; syncFailures: number; readonly lastSyncAt: number };
  /** The optional Redis adapters (REDIS_URL): their connection and what they decided. */
  redis?: RedisMetricsSource;
  /** The ledger verifications this instance ran. */
  ledgerChecks?: LedgerChecks;
  /** The payment provider's call outcomes and breaker state (the process's one client). */
  payments?: PaymentStats;
  /** Clock for the refresh's age (the revocation cache's own clock, server time). */
  now?: () => number;
}

export interface Metrics {
  registry: Registry;
  onResponse(info: ResponseInfo): void;
  /** Mounts GET /metrics (Prometheus text format). */
  mount(app: Hono<AppEnv>): void;
  /** Exports the load shedder's counts (AppOptions.onOverload). */
  watchOverload(state: OverloadState): void;
}

const queueStates = ['waiting', 'delayed', 'active', 'completed', 'failed'] as const;

/** Single-flight and cached, so several gauges and frequent scrapes cost one aggregation per `cacheMs`. */
function cachedQueueStats(queue: MetricsOptions['queue'], cacheMs: number): () => Promise<QueueStats | null> {
  let cached: { at: number; stats: Promise<QueueStats | null> } | null = null;
  // A failed query yields null: the gauges keep their last values rather than failing the scrape.
  return () => {
    const now = performance.now();
    if (!cached || now - cached.at > cacheMs) {
      cached = { at: now, stats: queue.stats().catch(() => null) };
    }
    return cached.stats;
  };
}

/** The queue gauges, read at scrape time; returns what a scrape calls first to count a failed query. */
function registerQueueGauges(registry: Registry, queueStats: () => Promise<QueueStats | null>) {
  new Gauge({
    name: 'queue_jobs',
    help: 'Jobs in the queue by state (waiting = due, delayed = not yet due)',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      const stats = await queueStats();
      if (stats) for (const state of queueStates) this.set({ state }, stats[state]);
    },
  });
  new Gauge({
    name: 'queue_jobs_by_name',
    help: 'Jobs in the queue by job name and state',
    labelNames: ['name', 'state'] as const,
    registers: [registry],
    async collect() {
      const stats = await queueStats();
      if (!stats) return;
      this.reset();
      for (const [name, counts] of Object.entries(stats.byName)) {
        for (const state of queueStates) this.set({ name, state }, counts[state]);
      }
    },
  });
  new Gauge({
    name: 'queue_oldest_waiting_age_seconds',
    help: 'Age of the oldest due job still waiting for a worker (0 when none)',
    registers: [registry],
    async collect() {
      const stats = await queueStats();
      if (stats) this.set(stats.oldestWaitingAgeMs / 1000);
    },
  });
  const scrapeFailures = new Counter({
    name: 'queue_stats_failures_total',
    help: 'Scrapes whose queue statistics query failed (the queue gauges then keep their last values)',
    registers: [registry],
  });
  return async () => {
    if ((await queueStats()) === null) scrapeFailures.inc();
  };
}

/** Open event streams, events written to them, clients dropped for not reading: read at scrape time. */
function registerEventGauges(registry: Registry, stats: StreamStats): void {
  new Gauge({
    name: 'events_open_streams',
    help: 'Open GET /api/events streams on this instance',
    registers: [registry],
    collect() {
      this.set(stats.open);
    },
  });
  new Counter({
    name: 'events_sent_total',
    help: 'Change events written to event streams',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(stats.sent);
    },
  });
  new Counter({
    name: 'events_clients_dropped_total',
    help: 'Event streams dropped because their client left EVENTS_CLIENT_BUFFER events unread',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(stats.dropped);
    },
  });
}

/**
 * A gauge read at scrape time that has no sample while `read` gives null (prom-client would report 0 for
 * an unset gauge without labels, which an alert rule cannot tell from a real 0).
 */
function optionalGauge(registry: Registry, name: string, help: string, read: () => number | null): void {
  class Optional extends Gauge {
    override async get() {
      const value = read();
      const metric = await super.get();
      if (value === null) return { ...metric, values: [] };
      return { ...metric, values: [{ value, labels: {} }] };
    }
  }
  new Optional({ name, help, registers: [registry] });
}

/** What the Redis adapters (api/redis.ts) count, read at scrape time. */
export interface RedisMetricsSource {
  client: { readonly isReady: boolean };
  bus: { published: number; lost: number };
  limiter: { counted: number; fellBack: number };
  /** Revocations this instance heard from the others. */
  heard: () => number;
}

function registerRedisMetrics(registry: Registry, redis: RedisMetricsSource): void {
  new Gauge({
    name: 'redis_up',
    help: 'Whether the Redis command connection is ready (REDIS_URL set): 0 means the MongoDB ways decide',
    registers: [registry],
    collect() {
      this.set(redis.client.isReady ? 1 : 0);
    },
  });
  mirroredCounterBy(
    registry,
    'redis_revocation_notices_total',
    'Revocations this instance announced over Redis, by outcome: published, or lost (Redis away; the refresh bounds them)',
    'outcome',
    () => ({ published: redis.bus.published, lost: redis.bus.lost }),
  );
  mirroredCounter(
    registry,
    'redis_revocation_notices_heard_total',
    'Revocations heard from other instances over Redis',
    redis.heard,
  );
  mirroredCounterBy(
    registry,
    'rate_limit_decisions_total',
    'Request budget decisions by who counted: redis, or fallback (the MongoDB count, while Redis did not answer)',
    'by',
    () => ({ redis: redis.limiter.counted, fallback: redis.limiter.fellBack }),
  );
}

/** A counter that mirrors a count kept elsewhere, read at scrape time. */
export function mirroredCounter(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/** A counter with one label that mirrors counts kept elsewhere (one per label value), read at scrape time. */
function mirroredCounterBy(
  registry: Registry,
  name: string,
  help: string,
  label: string,
  read: () => Record<string, number>,
): void {
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      this.reset();
      for (const [value, count] of Object.entries(read())) this.inc({ [label]: value }, count);
    },
  });
}

function registerRevocationMetrics(
  registry: Registry,
  revocations: NonNullable<MetricsOptions['revocations']>,
  now: () => number,
): void {
  mirroredCounter(
    registry,
    'revocation_refreshes_total',
    'Refreshes of the revocation cache sent',
    () => revocations.syncs,
  );
  mirroredCounter(
    registry,
    'revocation_refresh_failures_total',
    'Refreshes of the revocation cache that failed (the instance keeps what it had: revocations arrive late)',
    () => revocations.syncFailures,
  );
  optionalGauge(
    registry,
    'revocation_refresh_age_seconds',
    'Time since the last successful refresh of the revocation cache began (absent before the first)',
    () => (Number.isFinite(revocations.lastSyncAt) ? Math.max(0, now() - revocations.lastSyncAt) / 1000 : null),
  );
}

/** The ledger verifications this instance ran (GET /api/ledger/verify), by result, and the last one. */
function registerLedgerMetrics(registry: Registry, checks: LedgerChecks): void {
  mirroredCounterBy(
    registry,
    'ledger_verifications_total',
    'Ledger verifications run by this instance (GET /api/ledger/verify) by result: ok or failed',
    'result',
    () => ({ ok: checks.ok, failed: checks.failed }),
  );
  optionalGauge(
    registry,
    'ledger_verification_ok',
    '1 when the last ledger verification this instance ran found the ledger whole, 0 when it failed (absent before the first)',
    () => (checks.last ? Number(checks.last.ok) : null),
  );
  optionalGauge(
    registry,
    'ledger_verification_last_run_timestamp_seconds',
    'When the last ledger verification this instance ran finished (Unix time; absent before the first)',
    () => (checks.last ? checks.last.atMs / 1000 : null),
  );
}

/** Payment provider attempts by outcome, and its circuit breaker (read at scrape time from the client's hooks). */
function registerPaymentMetrics(registry: Registry, stats: PaymentStats): void {
  mirroredCounterBy(
    registry,
    'payment_provider_calls_total',
    'Payment provider attempts by outcome: paid, refused (4xx), timeout, server_error (5xx), network_error, breaker_open (refused without a call)',
    'outcome',
    () => stats.outcomes,
  );
  new Gauge({
    name: 'payment_provider_breaker_open',
    help: "1 while the payment provider's circuit breaker is open (calls fail fast), 0 closed or half-open",
    registers: [registry],
    collect() {
      this.set(stats.breaker === 'open' || stats.breaker === 'isolated' ? 1 : 0);
    },
  });
  mirroredCounter(
    registry,
    'payment_provider_breaker_opened_total',
    "Times the payment provider's circuit breaker opened",
    () => stats.breakerOpened,
  );
}

export function createMetrics(options: MetricsOptions): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
  const labelNames = ['method', 'route', 'status'] as const;
  const requests = new Counter({
    name: 'http_requests_total',
    help: 'HTTP requests by method, route pattern and status',
    labelNames,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request latency by method, route pattern and status',
    labelNames,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  if (options.events) registerEventGauges(registry, options.events);
  if (options.revocations) registerRevocationMetrics(registry, options.revocations, options.now ?? Date.now);
  if (options.redis) registerRedisMetrics(registry, options.redis);
  if (options.ledgerChecks) registerLedgerMetrics(registry, options.ledgerChecks);
  if (options.payments) registerPaymentMetrics(registry, options.payments);
  const { ready } = options;
  if (ready) {
    new Gauge({
      name: 'service_ready',
      help: '1 while /ready answers 200 (MongoDB answers a ping within the readiness bound), else 0',
      registers: [registry],
      async collect() {
        this.set((await ready()) ? 1 : 0);
      },
    });
  }
  const queueStatsOrCount = registerQueueGauges(
    registry,
    cachedQueueStats(options.queue, options.queueStatsCacheMs ?? 1000),
  );

  return {
    registry,
    onResponse({ method, route, status, ms }) {
      const labels = { method, route, status: String(status) };
      requests.inc(labels);
      duration.observe(labels, ms / 1000);
    },
    watchOverload(state) {
      mirroredCounter(
        registry,
        'http_requests_shed_total',
        'Requests refused with 503 overloaded by the load shedder (MAX_IN_FLIGHT and MAX_QUEUED full, or queued too long)',
        () => state.shed,
      );
      new Gauge({
        name: 'http_requests_in_flight',
        help: 'Requests running now (bounded by MAX_IN_FLIGHT)',
        registers: [registry],
        collect() {
          this.set(state.inFlight);
        },
      });
      new Gauge({
        name: 'http_requests_queued',
        help: 'Requests waiting for a slot now (bounded by MAX_QUEUED)',
        registers: [registry],
        collect() {
          this.set(state.queued);
        },
      });
    },
    mount(app) {
      app.get('/metrics', async (c) => {
        if (options.token && c.req.header('authorization') !== `Bearer ${options.token}`) {
          throw new HttpError(401, 'unauthorized', 'Send Authorization: Bearer <METRICS_TOKEN>.', undefined, {
            'WWW-Authenticate': 'Bearer realm="metrics"',
          });
        }
        await queueStatsOrCount();
        return c.body(await registry.metrics(), 200, { 'content-type': registry.contentType });
      });
    },
  };
}
