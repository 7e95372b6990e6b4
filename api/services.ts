// Everything a request handler needs, built once per process (or per Durable Object) from the
// database and the configuration. Runtime-neutral.
import type { Db } from 'mongodb';
import { LockManager } from '../shared/concurrency/leases.ts';
import { Queue, queueIndexes } from '../shared/concurrency/queue/index.ts';
import {
  ExactRateLimiter,
  LoginDelays,
  type RequestLimiter,
  rateLimitIndexes,
  SharedRateLimiter,
} from '../shared/concurrency/rate-limit.ts';
import { type Clock, ServerClock } from '../shared/core/clock.ts';
import type { ApiConfig, Config } from '../shared/core/config.ts';
import { ensureIndexes, type IndexPlan } from '../shared/core/db.ts';
import { ConfigError } from '../shared/core/errors.ts';
import { Admins, adminAuditIndexes, adminIndexes } from '../shared/identity/admins.ts';
import { Revocations, revocationIndexes } from '../shared/identity/revocations.ts';
import { parseJwtKeys, Sessions, sessionIndexes } from '../shared/identity/sessions.ts';
import { ApplicationFeed } from '../shared/loans/application-feed.ts';
import { ApplicationListCache, applicationIndexes } from '../shared/loans/applications.ts';
import { auditIndexes } from '../shared/loans/audit.ts';
import { Disbursements } from '../shared/loans/disbursements.ts';
import { documentIndexes } from '../shared/loans/documents.ts';
import { Ledger, LedgerKeys, ledgerIndexes } from '../shared/loans/ledger.ts';
import { newPaymentStats, PaymentProvider, type PaymentStats } from '../shared/loans/payments.ts';
import { Presence, presenceIndexes } from '../shared/loans/presence.ts';
import { EventStreams } from './event-streams.ts';
import { createLogger, errorFields, type Logger } from './log.ts';

export interface Services {
  db: Db;
  config: ApiConfig;
  logger: Logger;
  clock: ServerClock;
  admins: Admins;
  sessions: Sessions;
  revocations: Revocations;
  locks: LockManager;
  /** Producer side of the job queue: routes publish work for the workers. */
  queue: Queue;
  /** Failed logins per (account, address): growing delays. */
  loginDelays: LoginDelays;
  loginByAccount: ExactRateLimiter;
  loginByAddress: ExactRateLimiter;
  apiLimiter: RequestLimiter;
  /**
   * The instance's one change feed of applications: `feed.subscribe(fn)` hears every change. Started on
   * long-lived instances (Node, Deno: startFeed); on Workers it stays stopped and /api/events answers 501.
   */
  feed: ApplicationFeed;
  /** The open GET /api/events streams of this instance. */
  streams: EventStreams;
  /**
   * This instance's list pages and totals. Every write through this instance drops the entries it may
   * change at once; the feed drops them for changes made elsewhere (other instances, the workers).
   */
  listCache: ApplicationListCache;
  /** Who is editing which application: marks with an expiry, read through a 1 s per-instance cache. */
  presence: Presence;
  /** The ledger verifications this instance ran (GET /api/ledger/verify): exported by Node's /metrics. */
  ledgerChecks: LedgerChecks;
  /** The payment provider (PAYMENT_PROVIDER_URL), one per process: its breaker is shared by every call. */
  payments?: PaymentProvider;
  /** Its call outcomes and breaker state: exported by Node's /metrics. */
  paymentStats: PaymentStats;
}

export interface LedgerChecks {
  ok: number;
  failed: number;
  /** The last one this instance finished (server clock ms); null before any. */
  last: { ok: boolean; atMs: number } | null;
}

export const apiIndexes: IndexPlan[] = [
  adminIndexes,
  adminAuditIndexes,
  sessionIndexes,
  revocationIndexes,
  rateLimitIndexes,
  queueIndexes,
  applicationIndexes,
  auditIndexes,
  ...documentIndexes,
  ledgerIndexes,
  presenceIndexes,
];

const LOGIN_WINDOW_MS = 15 * 60_000;
/** How long an (account, address) remembers its failures after the last one, and its last success. */
const LOGIN_FAILURE_MEMORY_MS = 24 * 3_600_000;
const LOGIN_KNOWN_MS = 30 * 24 * 3_600_000;

export interface ServiceOptions {
  /** The clock the server clock corrects (tests move it to cross login delays and windows). */
  localClock?: Clock;
  /**
   * Count the per-admin budget in MongoDB on every request (one round trip) instead of locally with
   * flushes: for services that live one request (workerd with a client per request).
   */
  exactApiLimit?: boolean;
}

export async function createServices(
  db: Db,
  config: ApiConfig,
  logger = createLogger(config.LOG_LEVEL),
  options: ServiceOptions = {},
): Promise<Services> {
  const clock = new ServerClock(db, options.localClock);
  await clock.sync();
  const keys = parseJwtKeys(config.JWT_KEYS);
  const revocations = new Revocations(db, {
    retainMs: config.ACCESS_TOKEN_TTL_S * 1000,
    maxStalenessMs: config.REVOCATION_STALENESS_MS,
    clock,
  });
  const admins = new Admins(db, { passwordIterations: config.PASSWORD_ITERATIONS, clock });
  const feed = changeFeed(db, config, clock, logger);
  const listCache = new ApplicationListCache({
    clock,
    pageMs: config.LIST_CACHE_MS,
    totalMs: config.LIST_TOTAL_CACHE_MS,
    maxEntries: config.LIST_CACHE_MAX_ENTRIES,
  });
  // Another instance's (or a worker's) change drops the pages it can move as soon as the feed hears it;
  // LIST_CACHE_MS bounds what the feed misses or hears late.
  feed.subscribe((event) => listCache.changed({ status: event.status, from: event.from }));
  return {
    db,
    config,
    logger,
    clock,
    admins,
    sessions: new Sessions(db, {
      keys,
      signingKid: config.JWT_SIGNING_KID ?? [...keys.keys()][0]!,
      accessTtlS: config.ACCESS_TOKEN_TTL_S,
      refreshTtlS: config.REFRESH_TOKEN_TTL_S,
      clock,
      revocations,
      admins: (id) => admins.sessionState(id),
    }),
    revocations,
    locks: new LockManager(db, { ttlMs: config.LEASE_TTL_MS }),
    queue: new Queue(db, { clock }),
    listCache,
    presence: new Presence(db, { clock, ttlMs: config.PRESENCE_TTL_MS }),
    ...loginLimiters(db, config, clock),
    apiLimiter: new (options.exactApiLimit ? ExactRateLimiter : SharedRateLimiter)(db, {
      name: 'api',
      limit: config.RATE_LIMIT_PER_MINUTE,
      windowMs: 60_000,
      clock,
    }),
    feed,
    streams: new EventStreams(feed, config),
    ledgerChecks: { ok: 0, failed: 0, last: null },
    ...paymentServices(config),
  };
}

/** The provider client from the configuration (none without PAYMENT_PROVIDER_URL); a URL without a key is an error. */
export function paymentServices(config: Config): { payments?: PaymentProvider; paymentStats: PaymentStats } {
  const paymentStats = newPaymentStats();
  if (!config.PAYMENT_PROVIDER_URL) return { paymentStats };
  if (!config.PAYMENT_PROVIDER_KEY) {
    throw new ConfigError(['PAYMENT_PROVIDER_KEY: is required with PAYMENT_PROVIDER_URL']);
  }
  const payments = new PaymentProvider({
    url: config.PAYMENT_PROVIDER_URL,
    key: config.PAYMENT_PROVIDER_KEY,
    timeoutMs: config.PAYMENT_TIMEOUT_MS,
    maxAttempts: config.PAYMENT_MAX_ATTEMPTS,
    backoffInitialMs: config.PAYMENT_BACKOFF_MS,
    backoffMaxMs: config.PAYMENT_BACKOFF_MAX_MS,
    breakerFailures: config.PAYMENT_BREAKER_FAILURES,
    breakerHalfOpenMs: config.PAYMENT_BREAKER_HALF_OPEN_MS,
    stats: paymentStats,
  });
  return { payments, paymentStats };
}

function changeFeed(db: Db, config: ApiConfig, clock: ServerClock, logger: Logger): ApplicationFeed {
  return new ApplicationFeed(db, {
    clock,
    source: config.EVENTS_SOURCE,
    pollMs: config.EVENTS_POLL_MS,
    marginMs: config.EVENTS_POLL_MARGIN_MS,
    historyMs: config.EVENTS_HISTORY_MS,
    historyMax: config.EVENTS_HISTORY_MAX,
    onError: (error) => logger.warn('change feed', errorFields(error)),
  });
}

/** Node and Deno: the change feed for /api/events (primes its history, picks its source). */
export async function startFeed(services: Services): Promise<void> {
  await services.feed.start();
  services.logger.info('change feed started', { source: services.feed.mode });
}

/** Login throttles: a growing delay per (account, address), and bounds per account and per address. */
function loginLimiters(db: Db, config: ApiConfig, clock: ServerClock) {
  return {
    loginDelays: new LoginDelays(db, {
      name: 'login-pair',
      freeFailures: config.LOGIN_FREE_FAILURES,
      baseDelayMs: config.LOGIN_DELAY_BASE_MS,
      maxDelayMs: config.LOGIN_DELAY_MAX_MS,
      memoryMs: LOGIN_FAILURE_MEMORY_MS,
      knownMs: LOGIN_KNOWN_MS,
      clock,
    }),
    loginByAccount: new ExactRateLimiter(db, {
      name: 'login-account',
      limit: config.LOGIN_ATTEMPTS_PER_ACCOUNT,
      windowMs: LOGIN_WINDOW_MS,
      clock,
    }),
    loginByAddress: new ExactRateLimiter(db, {
      name: 'login-address',
      limit: config.LOGIN_ATTEMPTS_PER_ADDRESS,
      windowMs: LOGIN_WINDOW_MS,
      clock,
    }),
  };
}

/** Node and Deno: keep caches fresh in the background so requests never wait on them. */
export function startBackground(services: Services): () => Promise<void> {
  services.revocations.start();
  services.apiLimiter.start();
  const resync = setInterval(() => void services.clock.maybeSync().catch(() => {}), 30_000);
  (resync as { unref?: () => void }).unref?.();
  const stopResume = startPaymentResume(services);
  return async () => {
    await stopResume();
    services.streams.closeAll();
    await services.feed.close();
    clearInterval(resync);
    services.revocations.stop();
    await services.apiLimiter.stop();
  };
}

/**
 * With a payment provider: every PAYMENT_RESUME_INTERVAL_MS one instance (under the lease payments:resume)
 * completes the disbursements left pending that long (provider down, a client that never retried, a
 * process that died). Runs never overlap; failures are logged.
 */
function startPaymentResume(services: Services): () => Promise<void> {
  const { payments, config } = services;
  const everyMs = config.PAYMENT_RESUME_INTERVAL_MS;
  if (!payments || everyMs <= 0) return async () => {};
  const disbursements = new Disbursements(services.db, {
    ledger: new Ledger(services.db, {
      keys: LedgerKeys.parse(config.LEDGER_KEYS, config.LEDGER_SIGNING_KID),
      clock: services.clock,
    }),
    locks: services.locks,
    clock: services.clock,
    fourEyes: config.FOUR_EYES,
    payments,
  });
  let running: Promise<unknown> = Promise.resolve();
  const sweep = async () => {
    const lease = await services.locks.acquire('payments:resume', { ttlMs: Math.max(everyMs, 60_000) });
    if (!lease) return;
    try {
      const result = await disbursements.resumePending(everyMs);
      if (result.completed + result.pending > 0) services.logger.info('pending disbursements resumed', { ...result });
    } finally {
      await services.locks.release(lease);
    }
  };
  const timer = setInterval(() => {
    running = running.then(sweep).catch((error) => services.logger.warn('payment resume failed', errorFields(error)));
  }, everyMs);
  (timer as { unref?: () => void }).unref?.();
  return async () => {
    clearInterval(timer);
    await running;
  };
}

/** What every entry does before serving: indexes, and the first admin when none exists. Idempotent. */
export async function prepareDatabase(services: Services): Promise<void> {
  await ensureIndexes(services.db, apiIndexes);
  const { ADMIN_EMAIL, ADMIN_PASSWORD } = services.config;
  if ((await services.admins.bootstrap(ADMIN_EMAIL, ADMIN_PASSWORD)) === 'created') {
    services.logger.info('first admin created', { email: ADMIN_EMAIL });
  }
}
