// GET /api/events on the real runtimes: Deno runs the change feed as Node does (an event arrives, and a
// stop ends open streams with `event: reload`); Cloudflare workerd keeps no feed and answers 501
// events_unsupported; Node stops on SIGTERM with streams open, at once and with exit code 0.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ApiInstance, startApiInstances } from '../../scripts/api-instances.ts';
import { startDeno } from '../../scripts/runtimes/deno.ts';
import type { RuntimeProcess } from '../../scripts/runtimes/process.ts';
import { startWorkerd } from '../../scripts/runtimes/workerd.ts';
import { randomJwtKeys } from '../support/app.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { readSse } from '../support/sse.ts';
import { waitFor } from '../support/wait.ts';

const ADMIN = { email: 'events-admin@example.com', password: 'events admin password' };

let database: TestDatabase;
let node: ApiInstance;
let deno: RuntimeProcess;
let workerd: RuntimeProcess;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  const env = {
    MONGO_URL: mongoUrl(),
    MONGO_DB: database.name,
    JWT_KEYS: randomJwtKeys('events'),
    LEDGER_KEYS: randomJwtKeys('ledger'),
    PASSWORD_ITERATIONS: '1000',
    ADMIN_EMAIL: ADMIN.email,
    ADMIN_PASSWORD: ADMIN.password,
    LOG_LEVEL: 'warn',
    EVENTS_SOURCE: 'poll',
    EVENTS_POLL_MS: '100',
    RATE_LIMIT_PER_MINUTE: '100000',
  };
  // Node first: it creates the indexes and the first admin.
  node = (await startApiInstances(1, env))[0]!;
  [deno, workerd] = await Promise.all([startDeno({ env }), startWorkerd({ env })]);
}, 150_000);

afterAll(async () => {
  await Promise.all([node?.stop(), deno?.stop(), workerd?.stop()]);
  await database?.close();
});

async function login(origin: string): Promise<Record<string, string>> {
  const res = await fetch(`${origin}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(ADMIN),
  });
  expect(res.status).toBe(200);
  return { authorization: `Bearer ${(await res.json()).accessToken}` };
}

async function openStream(origin: string, auth: Record<string, string>) {
  const res = await fetch(`${origin}/api/events`, { headers: auth });
  expect(res.status).toBe(200);
  const client = readSse(res);
  await waitFor(() => client.retry !== undefined, { what: 'the retry field' });
  return client;
}

it('Deno: a change made through the API arrives on the stream, and a stop ends it with reload', async () => {
  const auth = await login(deno.origin);
  const client = await openStream(deno.origin, auth);
  const made = await fetch(`${deno.origin}/api/applications`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ applicantName: 'Ada Deno', monthlyIncome: 5000, loanAmount: 20_000, termMonths: 24 }),
  });
  expect(made.status).toBe(201);
  const { _id } = await made.json();
  const [event] = await client.waitFor('change');
  expect(event!.data).toMatchObject({ applicationId: _id, version: 1, status: 'pending', action: 'create' });

  const stopping = deno.stop(8_000);
  const [reload] = await client.waitFor('reload');
  expect(reload!.data).toEqual({ reason: 'instance stopping' });
  expect(await client.ended).toBe('closed');
  await stopping;
});

it('workerd: answers 501 events_unsupported (no feed where services live one request), pointing to the lists', async () => {
  const auth = await login(workerd.origin);
  const res = await fetch(`${workerd.origin}/api/events`, { headers: auth });
  expect(res.status).toBe(501);
  const body = await res.json();
  expect(body.error.code).toBe('events_unsupported');
  expect(body.error.message).toMatch(/GET \/api\/applications\?sort=-updatedAt/);
});

it('Node: SIGTERM with streams open sends them reload, closes them, and exits 0 without waiting on them', async () => {
  const auth = await login(node.origin);
  const clients = await Promise.all([openStream(node.origin, auth), openStream(node.origin, auth)]);
  const signalled = performance.now();
  node.process.kill('SIGTERM');
  for (const client of clients) {
    await client.waitFor('reload');
    expect(await client.ended).toBe('closed');
  }
  await node.exited;
  // The entry's own fallback exits 1 after 10 s: 0 means close() did not wait on the streams.
  expect(node.process.exitCode).toBe(0);
  expect(performance.now() - signalled).toBeLessThan(8_000);
});
