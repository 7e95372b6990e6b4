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
  /** Largest request body accepted (bytes); larger ones get 413. */
  BODY_LIMIT_BYTES: int(1024, 100 * 1024 * 1024).default(1024 * 1024),
  /** Default lease length for withLock (ms); the seed's 15 s. */
  LEASE_TTL_MS: int(100, 3_600_000).default(15_000),
  /** How long a claimed job stays with its worker without a heartbeat (ms). */
  QUEUE_LEASE_MS: int(500, 3_600_000).default(30_000),
  QUEUE_CONCURRENCY: int(1, 1000).default(10),
});

export type Config = z.infer<typeof configSchema>;

/** Parses the environment; on any problem throws one ConfigError that lists them all. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const result = configSchema.safeParse(env);
  if (result.success) return result.data;
  throw new ConfigError(result.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`));
}
