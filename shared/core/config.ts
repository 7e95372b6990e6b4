// One schema for every environment variable. Runtime-neutral: pass process.env on Node,
// the env bindings on Workers, Deno.env.toObject() on Deno.
import { z } from 'zod';
import { ConfigError } from './errors.ts';

/** `kid:base64secret[,kid2:base64secret2]` with secrets of at least 32 bytes (an HMAC key shorter than its hash is weak). */
const keyListPattern = /^\s*[A-Za-z0-9_-]{1,64}:[A-Za-z0-9+/=]+\s*(,\s*[A-Za-z0-9_-]{1,64}:[A-Za-z0-9+/=]+\s*)*$/;
const keyListMessage = 'must be kid:base64secret[,kid2:base64secret2]';
const secretsLongEnough = (list: string) =>
  list.split(',').every((part) => {
    try {
      return atob(part.trim().slice(part.trim().indexOf(':') + 1)).length >= 32;
    } catch {
      return false;
    }
  });
const secretsMessage = 'every secret must be base64 of at least 32 bytes';
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const configSchema = z.object({
  NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  /** MONGO_URI is accepted for it (see resolveEnvAliases); a database name in its path is MONGO_DB's default. */
  MONGO_URL: z
    .string({ error: 'is required (mongodb://host:port or mongodb+srv://...; MONGO_URI also works)' })
    .regex(/^mongodb(\+srv)?:\/\/.+/, 'must start with mongodb:// or mongodb+srv://'),
  MONGO_DB: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,63}$/, 'must be 1-63 letters, digits, _ or -')
    .default('loan_admin'),
  /** Connections per process. */
  DB_POOL_MAX: int(1, 1000).default(50),
  /** How long an operation waits for a usable server before failing (ms). */
  DB_TIMEOUT_MS: int(100, 120_000).default(5_000),
  HOST: z.string().min(1).default('0.0.0.0'),
  PORT: int(0, 65_535).default(3000),
  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
  /** Origins allowed by CORS, comma-separated; empty means no cross-origin access. */
  CORS_ORIGINS: z
    .string()
    .default('')
    .transform((value) =>
      value
        .split(',')
        .map((origin) => origin.trim())
        .filter(Boolean),
    ),
  /** Behind a proxy (nginx): take the client address from X-Forwarded-For / X-Real-IP. */
  TRUST_PROXY: z
    .enum(['true', 'false', '1', '0'])
    .default('false')
    .transform((value) => value === 'true' || value === '1'),
  /** How long an instance may reuse a list's total (ms); 0 counts on every list request. */
  LIST_TOTAL_CACHE_MS: int(0, 60_000).default(1_000),
  /**
   * How long an instance serves a list page from memory, from when its query was sent (ms): a change shows
   * in every list at most this long after its write. 0 reads every list.
   */
  LIST_CACHE_MS: int(0, 60_000).default(1_000),
  /** List pages an instance keeps at most; the oldest is evicted first. */
  LIST_CACHE_MAX_ENTRIES: int(1, 100_000).default(1_000),
  /**
   * How long an admin's "editing this application" mark lasts without renewal (ms); the console renews it
   * every few seconds (PUT /api/applications/{id}/presence).
   */
  PRESENCE_TTL_MS: int(1_000, 600_000).default(15_000),
  /** Page mode skips at most this many rows ((page - 1) * limit); deeper pages get 400 and must use a cursor. */
  LIST_MAX_SKIP: int(0, 10_000_000).default(10_000),
  /**
   * Versions each application keeps in its change log (PATCH merges over the changes since its base);
   * a PATCH whose base is older answers 409 merge_base_too_old.
   */
  MERGE_HISTORY_VERSIONS: int(1, 10_000).default(100),
  /** When set, GET /metrics (Node) needs `Authorization: Bearer <METRICS_TOKEN>`; unset, it is open. */
  METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  /** Overload bound: requests served at once, requests waiting for a slot, and how long one may wait. */
  MAX_IN_FLIGHT: int(1, 100_000).default(100),
  MAX_QUEUED: int(0, 1_000_000).default(1024),
  QUEUE_TIMEOUT_MS: int(1, 60_000).default(1_000),
  /** Largest request body accepted (bytes); larger ones get 413. */
  BODY_LIMIT_BYTES: int(1024, 100 * 1024 * 1024).default(1024 * 1024),
  /** Largest uploaded document (bytes); larger ones get 413 and nothing is stored. */
  DOCUMENT_MAX_BYTES: int(1024, 100 * 1024 * 1024).default(10 * 1024 * 1024),
  /** Largest image area (width x height, by its header) uploaded or read by OCR: 40 MP holds A4 at 600 dpi. */
  DOCUMENT_MAX_PIXELS: int(1, 1_000_000_000).default(40_000_000),
  /** Default lease length for withLock (ms). */
  LEASE_TTL_MS: int(100, 3_600_000).default(15_000),
  /** How long a claimed job stays with its worker without a heartbeat (ms). */
  QUEUE_LEASE_MS: int(500, 3_600_000).default(30_000),
  QUEUE_CONCURRENCY: int(1, 1000).default(10),
  /** Approval scoring (workers/approval): automatic approve at or below this debt-to-income ratio... */
  APPROVAL_AUTO_APPROVE_MAX_DTI: z.coerce.number().min(0).max(5).default(0.35),
  /** ...automatic reject above this one. Between the two: manual review. */
  APPROVAL_AUTO_REJECT_MIN_DTI: z.coerce.number().min(0).max(5).default(0.6),
  /** The loan may be at most this many times the yearly income for an automatic approval. */
  APPROVAL_MAX_AMOUNT_TO_ANNUAL_INCOME: z.coerce.number().min(0).max(100).default(2),
  /** Every extracted field must be read at least this surely for an automatic decision. */
  APPROVAL_MIN_OCR_CONFIDENCE: z.coerce.number().min(0).max(1).default(0.8),
  /** Declared and extracted values may differ by this fraction before a human must look. */
  APPROVAL_MAX_MISMATCH: z.coerce.number().min(0).max(1).default(0.1),
  /** Yearly interest used for the monthly payment. */
  APPROVAL_ANNUAL_RATE: z.coerce.number().min(0).max(1).default(0.12),
  /** When false the worker only recommends; admins decide every application. */
  APPROVAL_AUTO_DECIDE: z
    .enum(['true', 'false', '1', '0'])
    .default('true')
    .transform((value) => value === 'true' || value === '1'),
  /** The largest loan the worker may approve by itself; above it, it only recommends (0: never approves). */
  APPROVAL_AUTO_APPROVE_MAX_AMOUNT: int(0, 10_000_000).default(0),
  /** Four eyes on money: a preparer may neither approve nor disburse, an approver may not disburse. */
  FOUR_EYES: z
    .enum(['true', 'false', '1', '0'])
    .default('true')
    .transform((value) => value === 'true' || value === '1'),
  /**
   * How often the approval worker redoes the audit entries and jobs of changes whose process died
   * between the write and its effects (ms; 0: never). One process at a time, under a lease.
   */
  REPLAY_INTERVAL_MS: int(0, 86_400_000).default(60_000),
  /** The replay checkpoint stays this far behind now (ms): more than a write may take to land after its stamp. */
  REPLAY_MARGIN_MS: int(1_000, 86_400_000).default(60_000),
  /** Worker processes answer /health and /ready here (0: a free port, logged at start). */
  WORKER_PROBE_PORT: int(0, 65_535).default(0),
  /** On SIGTERM a worker finishes its jobs for at most this long, then releases the rest. */
  WORKER_DRAIN_MS: int(0, 600_000).default(20_000),

  /**
   * Live events (GET /api/events): where an instance learns of changes to applications. auto probes the
   * change stream once at start (a findOneAndUpdate must raise an event) and polls where it does not.
   */
  EVENTS_SOURCE: z.enum(['auto', 'change-stream', 'poll']).default('auto'),
  /** The poll source: one query per instance per interval (ms)... */
  EVENTS_POLL_MS: int(50, 60_000).default(500),
  /** ...reading this far back past the previous query (ms): writes whose stamps land out of order. */
  EVENTS_POLL_MARGIN_MS: int(0, 600_000).default(2_000),
  /** How far back every instance keeps events in memory for Last-Event-ID resume (ms), at most EVENTS_HISTORY_MAX. */
  EVENTS_HISTORY_MS: int(0, 86_400_000).default(5 * 60_000),
  EVENTS_HISTORY_MAX: int(1, 1_000_000).default(50_000),
  /** A heartbeat comment this often (ms). */
  EVENTS_HEARTBEAT_MS: int(10, 600_000).default(15_000),
  /**
   * Every open stream's session is checked again this often (ms), in one sweep per instance: a logout,
   * a role change or a disabled admin ends the stream (`session_ended`) within this plus
   * REVOCATION_STALENESS_MS, so a console open on it is signed out as fast as the API refuses its token.
   */
  EVENTS_SESSION_CHECK_MS: int(50, 600_000).default(1_000),
  /** Events a client has not yet taken; past this the client is dropped (it reconnects and resumes). */
  EVENTS_CLIENT_BUFFER: int(1, 100_000).default(1_000),
  /** Open event streams per admin per instance (429 past it), and per instance (503 past it). */
  EVENTS_MAX_PER_ADMIN: int(1, 1_000).default(5),
  EVENTS_MAX_STREAMS: int(1, 1_000_000).default(5_000),

  /**
   * The payment provider disbursements pay through (base URL; the client POSTs to <url>/payments).
   * Unset: no provider, the ledger entry is the payment (as before).
   */
  PAYMENT_PROVIDER_URL: z.url({ protocol: /^https?$/ }).optional(),
  /** The provider's credential, sent as `Authorization: Bearer <key>`. Required with PAYMENT_PROVIDER_URL. */
  PAYMENT_PROVIDER_KEY: z.string().min(16, 'must be at least 16 characters').optional(),
  /** HMAC-SHA256 secret of the provider's callbacks (POST /api/payments/webhook); unset, the route answers 404. */
  PAYMENT_WEBHOOK_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  /** One provider attempt may take this long (ms) before it is abandoned and counted as a time-out. */
  PAYMENT_TIMEOUT_MS: int(10, 60_000).default(2_000),
  /** Attempts per disbursement request (the first included), for time-outs, network errors and 5xx only. */
  PAYMENT_MAX_ATTEMPTS: int(1, 10).default(3),
  /** Backoff between attempts: exponential from this (ms)... */
  PAYMENT_BACKOFF_MS: int(1, 60_000).default(100),
  /** ...up to this (ms). */
  PAYMENT_BACKOFF_MAX_MS: int(1, 600_000).default(1_000),
  /** The breaker opens after this many failed attempts in a row (per process) and then makes no call... */
  PAYMENT_BREAKER_FAILURES: int(1, 1_000).default(5),
  /** ...until this long has passed (ms); then one probe call decides: closed again, or open again. */
  PAYMENT_BREAKER_HALF_OPEN_MS: int(10, 3_600_000).default(10_000),
  /** Every this often one API instance completes the disbursements left pending this long (ms; 0: never). */
  PAYMENT_RESUME_INTERVAL_MS: int(0, 86_400_000).default(30_000),

  /**
   * OpenTelemetry: the OTLP/HTTP collector spans are exported to (JSON, POSTed to <endpoint>/v1/traces) by the
   * Node processes (API and workers). Unset: no SDK, no exporter, no span made; the API's no-op tracer answers.
   */
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url({ protocol: /^https?$/ }).optional(),
  /**
   * With tracing on, a span per MongoDB command run under a span. The driver's command monitoring it needs
   * decodes every reply a second time for its event (measured in bench:tracing); false leaves it off.
   */
  OTEL_TRACE_DB_COMMANDS: z
    .enum(['true', 'false', '1', '0'])
    .default('true')
    .transform((value) => value === 'true' || value === '1'),
  /** The service.name of this process's spans; default loan-admin-api, loan-admin-ocr, loan-admin-approval. */
  OTEL_SERVICE_NAME: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,100}$/, 'must be 1-100 letters, digits, ., _ or -')
    .optional(),

  /** Verification keys for access tokens, `kid:base64secret` comma-separated (secrets >= 32 bytes). */
  JWT_KEYS: z.string().min(1).optional(),
  /** The kid that signs new tokens; the others only verify (key rotation). Default: the first. */
  JWT_SIGNING_KID: z.string().min(1).optional(),
  /** HMAC keys of the ledger's hash chain, `kid:base64secret` comma-separated (secrets >= 32 bytes); never removed while entries use them. */
  LEDGER_KEYS: z.string().regex(keyListPattern, keyListMessage).refine(secretsLongEnough, secretsMessage).optional(),
  /** The kid that keys new ledger entries; the others only verify older ones. Default: the first. */
  LEDGER_SIGNING_KID: z.string().min(1).optional(),
  ACCESS_TOKEN_TTL_S: int(30, 86_400).default(900),
  REFRESH_TOKEN_TTL_S: int(300, 90 * 86_400).default(7 * 86_400),
  /** A revocation is refused on every instance within this bound (plus one round trip). */
  REVOCATION_STALENESS_MS: int(50, 1_000).default(500),
  /**
   * Optional Redis (Node API only, `redis://` or `rediss://`): revocations are announced to every instance
   * at once (pub/sub) and the per-admin request budget is counted exactly across instances. Unset: neither,
   * nothing loaded. Without a reachable server the API keeps working as if unset (MongoDB still bounds
   * revocation by REVOCATION_STALENESS_MS; the budget is counted per instance and flushed).
   */
  REDIS_URL: z.url({ protocol: /^rediss?$/ }).optional(),
  /** PBKDF2-SHA256 iterations for new password hashes (OWASP: 600000). */
  PASSWORD_ITERATIONS: int(1_000, 10_000_000).default(600_000),
  /** The first admin, created at start-up when no admin exists. */
  ADMIN_EMAIL: z.email().optional(),
  ADMIN_PASSWORD: z.string().min(12, 'must be at least 12 characters').optional(),
  /** Requests per admin per minute, across all instances. */
  RATE_LIMIT_PER_MINUTE: int(1, 1_000_000).default(600),
  /** Failed logins on one account from one address that get an answer at once... */
  LOGIN_FREE_FAILURES: int(1, 1_000).default(5),
  /** ...then the wait before the next attempt from there: this, doubling with each failure... */
  LOGIN_DELAY_BASE_MS: int(1, 3_600_000).default(1_000),
  /** ...up to this (ms). A successful login from there forgets them. */
  LOGIN_DELAY_MAX_MS: int(1, 86_400_000).default(900_000),
  /**
   * Failed logins allowed per account from all addresses together, and per client address on all
   * accounts, in 15 minutes. Addresses the account logged in from before are not held to the first.
   */
  LOGIN_ATTEMPTS_PER_ACCOUNT: int(1, 1_000_000).default(200),
  LOGIN_ATTEMPTS_PER_ADDRESS: int(1, 1_000_000).default(100),

  /**
   * Kafka brokers the outbox relay (`npm run relay`) publishes application changes to, `host:port`
   * comma-separated. Unset: no relay runs (it exits at once saying so) and nothing else changes.
   */
  KAFKA_BROKERS: z.preprocess(
    (value) => (value === '' ? undefined : value), // set but empty (KAFKA_BROKERS= in a .env): off, as unset
    z
      .string()
      .regex(/^\s*[A-Za-z0-9.-]+:\d{1,5}\s*(,\s*[A-Za-z0-9.-]+:\d{1,5}\s*)*$/, 'must be host:port[,host2:port2]')
      .transform((value) => value.split(',').map((broker) => broker.trim()))
      .optional(),
  ),
  /** The topic every application change goes to (keyed by application id); created by the relay if missing. */
  KAFKA_TOPIC: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,249}$/, 'must be 1-249 letters, digits, ".", "_" or "-"')
    .default('loan-admin.application-changes'),
  /** Partitions of the topic when the relay creates it (an existing topic keeps its own). */
  KAFKA_TOPIC_PARTITIONS: int(1, 10_000).default(12),
  /** The relay's Kafka client id (broker logs and quotas). */
  KAFKA_CLIENT_ID: z.string().min(1).max(255).default('loan-admin-relay'),
  /** With nothing new to publish, the relay looks again after this long (ms). */
  KAFKA_RELAY_POLL_MS: int(10, 60_000).default(200),
  /** Applications the relay reads, and publishes the changes of, per round trip. */
  KAFKA_RELAY_BATCH: int(1, 10_000).default(500),
  /**
   * The relay reads this far back past what it has seen (ms): changes are stamped by each writer's clock
   * and may land out of stamp order. Changes already published are skipped, not sent again.
   */
  KAFKA_RELAY_MARGIN_MS: int(0, 3_600_000).default(10_000),
  /** One relay publishes at a time, under a lease this long (ms): a standby takes over this long after a crash. */
  KAFKA_RELAY_LEASE_MS: int(1_000, 600_000).default(15_000),
});

export type Config = z.infer<typeof configSchema>;

/** The API also needs signing keys (sessions and the ledger); workers and tools do not. */
export const apiConfigSchema = configSchema.extend({
  JWT_KEYS: z.string({ error: 'is required (kid:base64secret[,kid2:base64secret2]); npm start makes one' }).min(1),
  LEDGER_KEYS: z
    .string({ error: 'is required (kid:base64secret[,kid2:base64secret2]); npm start makes one' })
    .regex(keyListPattern, keyListMessage)
    .refine(secretsLongEnough, secretsMessage),
});

export type ApiConfig = z.infer<typeof apiConfigSchema>;

/** The database name in a MongoDB URL's path (mongodb://host/NAME?...), or undefined when it has none. */
export function databaseNameOf(url: string): string | undefined {
  const path = /^mongodb(?:\+srv)?:\/\/[^/?]*\/([^?]*)/.exec(url)?.[1];
  if (!path) return undefined;
  try {
    return decodeURIComponent(path);
  } catch {
    return path; // left as it is: the MONGO_DB rule then names the problem
  }
}

/**
 * Other names the same settings go by: `MONGO_URI` for `MONGO_URL` (setting both to different values is
 * an error), and, with `MONGO_DB` unset, the database named in the URL's path, as the driver reads it.
 */
export function resolveEnvAliases(env: Record<string, string | undefined>): Record<string, string | undefined> {
  const resolved = { ...env };
  const { MONGO_URL: url, MONGO_URI: uri } = env;
  if (uri && url && uri !== url) {
    throw new ConfigError(['MONGO_URI: differs from MONGO_URL (one name for the same setting): set only one']);
  }
  if (!url && uri) resolved.MONGO_URL = uri;
  if (!resolved.MONGO_DB && resolved.MONGO_URL) {
    const name = databaseNameOf(resolved.MONGO_URL);
    if (name !== undefined) resolved.MONGO_DB = name;
  }
  return resolved;
}

/** Parses the environment; on any problem throws one ConfigError that lists them all. */
export function loadConfig<S extends z.ZodType = typeof configSchema>(
  env: Record<string, string | undefined>,
  schema: S = configSchema as unknown as S,
): z.infer<S> {
  const result = schema.safeParse(resolveEnvAliases(env));
  if (result.success) return result.data;
  throw new ConfigError(result.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`));
}
