// One schema for every environment variable. Runtime-neutral: pass process.env on Node,
// the env bindings on Workers, Deno.env.toObject() on Deno.
import { z } from 'zod';
import { ConfigError } from './errors.ts';

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const configSchema = z.object({
  NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  MONGO_URL: z
    .string({ error: 'is required (mongodb://host:port or mongodb+srv://...)' })
    .regex(/^mongodb(\+srv)?:\/\/.+/, 'must start with mongodb:// or mongodb+srv://'),
  MONGO_DB: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,63}$/, 'must be 1-63 letters, digits, _ or -')
    .default('loan_admin'),
  /** Connections per process; the seed's 50. */
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
  /** Overload bound: requests served at once, requests waiting for a slot, and how long one may wait. */
  MAX_IN_FLIGHT: int(1, 100_000).default(256),
  MAX_QUEUED: int(0, 1_000_000).default(1024),
  QUEUE_TIMEOUT_MS: int(1, 60_000).default(2_000),
  /** Largest request body accepted (bytes); larger ones get 413. */
  BODY_LIMIT_BYTES: int(1024, 100 * 1024 * 1024).default(1024 * 1024),
  /** Default lease length for withLock (ms); the seed's 15 s. */
  LEASE_TTL_MS: int(100, 3_600_000).default(15_000),
  /** How long a claimed job stays with its worker without a heartbeat (ms). */
  QUEUE_LEASE_MS: int(500, 3_600_000).default(30_000),
  QUEUE_CONCURRENCY: int(1, 1000).default(10),

  /** Verification keys for access tokens, `kid:base64secret` comma-separated (secrets >= 32 bytes). */
  JWT_KEYS: z.string().min(1).optional(),
  /** The kid that signs new tokens; the others only verify (key rotation). Default: the first. */
  JWT_SIGNING_KID: z.string().min(1).optional(),
  ACCESS_TOKEN_TTL_S: int(30, 86_400).default(900),
  REFRESH_TOKEN_TTL_S: int(300, 90 * 86_400).default(7 * 86_400),
  /** A revocation is refused on every instance within this bound (plus one round trip). */
  REVOCATION_STALENESS_MS: int(50, 1_000).default(500),
  /** PBKDF2-SHA256 iterations for new password hashes (OWASP: 600000). */
  PASSWORD_ITERATIONS: int(1_000, 10_000_000).default(600_000),
  /** The first admin, created at start-up when no admin exists. */
  ADMIN_EMAIL: z.email().optional(),
  ADMIN_PASSWORD: z.string().min(12, 'must be at least 12 characters').optional(),
  /** Requests per admin per minute, across all instances. */
  RATE_LIMIT_PER_MINUTE: int(1, 1_000_000).default(600),
  /** Failed logins allowed per account, and per client address, in 15 minutes. */
  LOGIN_ATTEMPTS_PER_ACCOUNT: int(1, 10_000).default(10),
  LOGIN_ATTEMPTS_PER_ADDRESS: int(1, 100_000).default(100),
});

export type Config = z.infer<typeof configSchema>;

/** The API also needs signing keys; workers and tools do not. */
export const apiConfigSchema = configSchema.extend({
  JWT_KEYS: z.string({ error: 'is required (kid:base64secret[,kid2:base64secret2]); npm start makes one' }).min(1),
});

export type ApiConfig = z.infer<typeof apiConfigSchema>;

/** Parses the environment; on any problem throws one ConfigError that lists them all. */
export function loadConfig<S extends z.ZodType = typeof configSchema>(
  env: Record<string, string | undefined>,
  schema: S = configSchema as unknown as S,
): z.infer<S> {
  const result = schema.safeParse(env);
  if (result.success) return result.data;
  throw new ConfigError(result.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`));
}
