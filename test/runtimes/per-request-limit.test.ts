// The per-admin request budget on Cloudflare workerd with DB_CLIENT_MODE=per-request, where each
// request gets a fresh client, services and app: the budget is counted in MongoDB per request there,
// since a limiter made for one request would start from zero every time.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { RuntimeProcess } from '../../scripts/runtimes/process.ts';
import { startWorkerd } from '../../scripts/runtimes/workerd.ts';
import { randomJwtKeys } from '../support/app.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const LIMIT = 5;
const ADMIN = { email: 'budget-admin@example.com', password: 'budget admin password' };

let database: TestDatabase;
let workerd: RuntimeProcess | undefined;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  workerd = await startWorkerd({
    env: {
      MONGO_URL: mongoUrl(),
      MONGO_DB: database.name,
      JWT_KEYS: randomJwtKeys('budget'),
      LEDGER_KEYS: randomJwtKeys('ledger'),
      PASSWORD_ITERATIONS: '1000',
      ADMIN_EMAIL: ADMIN.email,
      ADMIN_PASSWORD: ADMIN.password,
      LOG_LEVEL: 'warn',
      RATE_LIMIT_PER_MINUTE: String(LIMIT),
    },
    mode: 'per-request',
  });
}, 120_000);

afterAll(async () => {
  await workerd?.stop();
  await database?.close();
});

async function call(path: string, init: RequestInit = {}) {
  const res = await fetch(`${workerd!.origin}${path}`, { ...init, signal: AbortSignal.timeout(30_000) });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

it('admits RATE_LIMIT_PER_MINUTE requests of an admin, then answers 429 with Retry-After', async () => {
  const login = await call('/api/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(ADMIN),
  });
  expect(login.status, JSON.stringify(login.body)).toBe(200);
  const authorization = `Bearer ${login.body.accessToken}`;
  // The budget is per fixed minute: start well inside one so that all requests fall in it.
  const left = 60_000 - (Date.now() % 60_000);
  if (left < 20_000) await new Promise((resolve) => setTimeout(resolve, left + 500));
  const replies = [];
  for (let i = 0; i < LIMIT + 3; i++)
    replies.push(await call('/api/applications?limit=1&total=false', { headers: { authorization } }));
  expect(replies.map((reply) => reply.status)).toEqual([...Array(LIMIT).fill(200), 429, 429, 429]);
  const refused = replies.at(-1)!;
  expect(refused.body).toMatchObject({ error: { code: 'rate_limited' } });
  expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  expect(Number(refused.headers.get('retry-after'))).toBeLessThanOrEqual(60);
  expect(refused.headers.get('ratelimit-limit')).toBe(String(LIMIT));
}, 60_000);
