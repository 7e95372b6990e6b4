// The same authenticated GET of one application on Node, workerd (Durable Objects owning the
// client, over 8 objects and over 1; and a client per request) and Deno, one after the other against
// one database: closed loop, CONNECTIONS connections, SECONDS seconds each after a 2 s warm-up. Each
// connection logs in on its own, so on workerd the tokens spread over the Durable Objects.
// Then, in process, the MongoDB commands one such GET costs with a long-lived client (Node, Deno, a
// Durable Object) and with a client per request, counted exactly by command monitoring.
//
//   npm run bench:runtimes
//   BENCH_CONNECTIONS=20 BENCH_SECONDS=10 MONGO_URL=mongodb://127.0.0.1:27017 npm run bench:runtimes
import { MongoClient } from 'mongodb';
import { createApp } from '../api/app.ts';
import { createLogger } from '../api/log.ts';
import { apiIndexes, createServices } from '../api/services.ts';
import { startDeno } from '../scripts/runtimes/deno.ts';
import { startNode } from '../scripts/runtimes/node.ts';
import type { RuntimeProcess } from '../scripts/runtimes/process.ts';
import { startWorkerd } from '../scripts/runtimes/workerd.ts';
import { seedApplications } from '../scripts/seed.ts';
import { apiConfigSchema, loadConfig } from '../shared/core/config.ts';
import { ensureIndexes } from '../shared/core/db.ts';
import { runLoad } from './load-generator.ts';
import { countingClient, markdownTable, printPreamble, round, startBenchServer } from './support.ts';

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 20);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ADMIN = { email: 'bench@example.com', password: 'bench admin password' };

const server = await startBenchServer();
const dbName = `bench_runtimes_${Date.now()}`;
const setupClient = await new MongoClient(server.url).connect();
const db = setupClient.db(dbName);
await ensureIndexes(db, apiIndexes);
await seedApplications(db, 1_000);
const target = (await db.collection<{ _id: string }>('applications').findOne({}, { projection: { _id: 1 } }))!._id;

const env = {
  MONGO_URL: server.url,
  MONGO_DB: dbName,
  JWT_KEYS: `bench:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`,
  LEDGER_KEYS: `ledger:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`,
  PASSWORD_ITERATIONS: '1000',
  ADMIN_EMAIL: ADMIN.email,
  ADMIN_PASSWORD: ADMIN.password,
  LOG_LEVEL: 'error',
  RATE_LIMIT_PER_MINUTE: '1000000',
  LOGIN_ATTEMPTS_PER_ACCOUNT: '10000',
};

interface Case {
  runtime: string;
  pattern: string;
  start: () => Promise<RuntimeProcess>;
}
const cases: Case[] = [
  { runtime: 'Node 24', pattern: 'one client per process', start: () => startNode({ env }) },
  {
    runtime: 'workerd',
    pattern: 'Durable Objects own the client (8 objects)',
    start: () => startWorkerd({ env: { ...env, API_OBJECTS: '8' } }),
  },
  {
    runtime: 'workerd',
    pattern: 'Durable Object owns the client (1 object)',
    start: () => startWorkerd({ env: { ...env, API_OBJECTS: '1' } }),
  },
  {
    runtime: 'workerd',
    pattern: 'a client per request',
    start: () => startWorkerd({ env, mode: 'per-request' }),
  },
  { runtime: 'Deno 2', pattern: 'one client per process', start: () => startDeno({ env }) },
];

async function login(origin: string): Promise<string> {
  const res = await fetch(`${origin}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(ADMIN),
  });
  if (res.status !== 200) throw new Error(`login on ${origin}: ${res.status} ${await res.text()}`);
  return (await res.json()).accessToken;
}

try {
  printPreamble(
    'One authenticated GET /api/applications/:id on Node, workerd and Deno',
    'npm run bench:runtimes   (BENCH_CONNECTIONS, BENCH_SECONDS, MONGO_URL to change)',
    server,
  );
  console.log(`${CONNECTIONS} connections x ${SECONDS} s per row, one row at a time; 1,000 applications.\n`);

  const rows: Array<Array<string | number>> = [];
  for (const entry of cases) {
    const runtime = await entry.start();
    try {
      const tokens = await Promise.all(Array.from({ length: CONNECTIONS }, () => login(runtime.origin)));
      const load = (durationMs: number) =>
        runLoad({
          origins: [runtime.origin],
          connections: CONNECTIONS,
          durationMs,
          next: (user) => ({
            method: 'GET',
            path: `/api/applications/${target}`,
            headers: { authorization: `Bearer ${tokens[user]}` },
            kind: 'get',
          }),
        });
      await load(3_000); // JIT, pools, every Durable Object opened
      const result = await load(SECONDS * 1_000);
      const others = Object.entries(result.statuses)
        .filter(([status]) => status !== '200')
        .map(([status, n]) => `${status}: ${n}`);
      rows.push([
        entry.runtime,
        entry.pattern,
        result.rps,
        result.latency.p50,
        result.latency.p95,
        result.latency.p99,
        result.requests,
        others.join(', ') || '-',
      ]);
    } catch (error) {
      console.error(`${entry.runtime} (${entry.pattern}) failed: ${(error as Error).message}\n${runtime.output()}`);
      rows.push([entry.runtime, entry.pattern, 'failed', '-', '-', '-', '-', '-']);
    } finally {
      await runtime.stop();
    }
  }
  console.log(
    markdownTable(['runtime', 'database client', 'req/s', 'p50 ms', 'p95 ms', 'p99 ms', 'requests', 'not 200'], rows),
  );

  // Exact MongoDB commands per GET, in process: a long-lived client and services (what Node, Deno and
  // each Durable Object keep) against a fresh client and services per request (workerd per request).
  const config = loadConfig({ ...env, LOG_LEVEL: 'silent' }, apiConfigSchema);
  const N = 50;
  async function commandsPerGet(perRequest: boolean): Promise<{ perGet: string; total: number }> {
    const counted: Array<ReturnType<typeof countingClient>> = [];
    const open = async () => {
      const counting = countingClient(server.url);
      counted.push(counting);
      await counting.client.connect();
      const services = await createServices(counting.client.db(dbName), config, createLogger('silent'));
      return { counting, services, app: createApp(services) };
    };
    const get = async (app: ReturnType<typeof createApp>, token: string) => {
      const res = await app.request(`/api/applications/${target}`, { headers: { authorization: `Bearer ${token}` } });
      if (res.status !== 200) throw new Error(`GET answered ${res.status}`);
    };
    const shared = await open();
    const tokenRes = await shared.app.request('/api/auth/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(ADMIN),
    });
    const { accessToken } = await tokenRes.json();
    await get(shared.app, accessToken); // warm: revocation cache filled, first flush done
    await shared.services.apiLimiter.flush();
    for (const c of counted) c.reset();
    for (let i = 0; i < N; i++) {
      if (perRequest) {
        const fresh = await open();
        await get(fresh.app, accessToken);
        await fresh.services.apiLimiter.flush();
        await fresh.counting.client.close();
      } else {
        await get(shared.app, accessToken);
      }
    }
    if (!perRequest) await shared.services.apiLimiter.flush(); // what the timer or the lazy flush sends
    await shared.counting.client.close();
    const totals = new Map<string, number>();
    for (const c of counted) for (const [name, n] of c.counts) totals.set(name, (totals.get(name) ?? 0) + n);
    const perGet = [...totals.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([name, n]) => `${name} ${round(n / N, 2)}`)
      .join(', ');
    return { perGet, total: round([...totals.values()].reduce((a, b) => a + b, 0) / N, 2) };
  }
  const longLived = await commandsPerGet(false);
  const fresh = await commandsPerGet(true);
  console.log(`\nMongoDB commands per GET (${N} sequential GETs, in process, command monitoring):\n`);
  console.log(
    markdownTable(
      ['database client', 'commands per GET', 'by command'],
      [
        ['long-lived (Node, Deno, each Durable Object)', longLived.total, longLived.perGet],
        ['a client per request (plus its connection handshake)', fresh.total, fresh.perGet],
      ],
    ),
  );
} finally {
  // Also after a failure: no database server or database left behind.
  await setupClient
    .db(dbName)
    .dropDatabase()
    .catch(() => {});
  await setupClient.close();
  await server.stop();
}
