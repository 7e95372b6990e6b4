// Database commands and API CPU per request, for each route: counted exactly with the driver's
// command monitoring, so the figures do not depend on which MongoDB server runs. CPU is this
// process's user+system time per request (the app and the driver; the database server is
// another process). The app runs in-process and is called through app.request (no sockets).
//
//   npm run bench:api-commands            (N=200 requests per route; BENCH_N to change)
import { createApp } from '../api/app.ts';
import { createLogger } from '../api/log.ts';
import { apiIndexes, createServices } from '../api/services.ts';
import { seedApplications } from '../scripts/seed.ts';
import { apiConfigSchema, loadConfig } from '../shared/core/config.ts';
import { ensureIndexes } from '../shared/core/db.ts';
import { countingClient, markdownTable, printPreamble, round, startBenchServer } from './support.ts';

const N = Number(process.env.BENCH_N ?? 200);
const DOCS = Number(process.env.BENCH_DOCS ?? 10_000);
const server = await startBenchServer();
printPreamble('API: database commands and CPU per request', 'npm run bench:api-commands', server);

const counting = countingClient(server.url, { maxPoolSize: 20 });
await counting.client.connect();
const db = counting.client.db(`bench_api_${Date.now()}`);
const config = loadConfig(
  {
    MONGO_URL: server.url,
    JWT_KEYS: `b1:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`,
    LEDGER_KEYS: `ledger:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`,
    LOG_LEVEL: 'silent',
    RATE_LIMIT_PER_MINUTE: '1000000',
    // Login cost here is the database's, not PBKDF2's: 600000 iterations would be ~0.2 s of CPU each.
    PASSWORD_ITERATIONS: '1000',
  },
  apiConfigSchema,
);
await ensureIndexes(db, apiIndexes);
await seedApplications(db, DOCS);
const services = await createServices(db, config, createLogger('silent'));
const app = createApp(services, { remoteAddress: () => '127.0.0.1' });
// The same API with its list cache off: what every list costs when it reaches the database.
const uncached = createApp(await createServices(db, { ...config, LIST_CACHE_MS: 0 }, createLogger('silent')), {
  remoteAddress: () => '127.0.0.1',
});
await services.admins.create({ email: 'bench@example.com', password: 'bench password 123', roles: ['admin'] });

const json = (body: unknown, token?: string): RequestInit => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
  body: JSON.stringify(body),
});
const login = async () =>
  (
    await (
      await app.request('/api/auth/login', json({ email: 'bench@example.com', password: 'bench password 123' }))
    ).json()
  ).accessToken as string;
const token = await login();
const auth = { headers: { authorization: `Bearer ${token}` } };
const applications = db.collection<{ _id: string; status: string }>('applications');
const ids = (
  await applications
    .find({}, { projection: { _id: 1 } })
    .limit(N + 60)
    .toArray()
).map((d) => d._id);
const pending = (
  await applications
    .find({ status: 'pending' }, { projection: { _id: 1 } })
    .limit(N * 2 + 60)
    .toArray()
).map((d) => d._id);
// Warm up: the revocation cache, the JIT, the pool.
for (let i = 0; i < 50; i++) await app.request(`/api/applications/${ids[i]}`, auth);

interface Row {
  route: string;
  run: (i: number) => Response | Promise<Response>;
}
let batchCursor = N;
let listEtag: string | undefined;
const rows: Row[] = [
  {
    route: 'POST /api/auth/login',
    run: () => app.request('/api/auth/login', json({ email: 'bench@example.com', password: 'bench password 123' })),
  },
  { route: 'GET /api/auth/me', run: () => app.request('/api/auth/me', auth) },
  { route: 'GET /api/applications/:id', run: (i) => app.request(`/api/applications/${ids[i % ids.length]}`, auth) },
  {
    route: 'GET /api/applications?total=false, LIST_CACHE_MS=0',
    run: () => uncached.request('/api/applications?limit=50&total=false', auth),
  },
  {
    route: 'GET /api/applications (with total), LIST_CACHE_MS=0',
    run: () => uncached.request('/api/applications?limit=50', auth),
  },
  {
    route: 'GET /api/applications?status=pending (with total), LIST_CACHE_MS=0',
    run: () => uncached.request('/api/applications?limit=50&status=pending', auth),
  },
  {
    route: 'GET /api/applications (with total), list cache on (1 s)',
    run: () => app.request('/api/applications?limit=50', auth),
  },
  {
    route: 'GET /api/applications, If-None-Match current (304), cache on',
    run: async () => {
      listEtag ??= (await app.request('/api/applications?limit=50', auth)).headers.get('etag') ?? '';
      return app.request('/api/applications?limit=50', { headers: { ...auth.headers, 'if-none-match': listEtag } });
    },
  },
  {
    route: 'PUT /api/applications/:id (version in body)',
    run: (i) =>
      app.request(`/api/applications/${pending[i]}`, {
        ...json({ status: 'under_review', version: 1 }, token),
        method: 'PUT',
      }),
  },
  {
    route: 'POST batch-update (50 ids)',
    run: () => {
      const batch = pending.slice(batchCursor, batchCursor + 50);
      batchCursor += 50;
      return app.request(
        '/api/applications/batch-update',
        json({ applicationIds: batch, status: 'under_review' }, token),
      );
    },
  },
];

const table: Array<Array<string | number>> = [];
for (const row of rows) {
  const n = row.route.startsWith('POST batch') ? Math.max(1, Math.floor(N / 50)) : N;
  counting.reset();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const statuses = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const res = await row.run(i);
    await res.arrayBuffer();
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
  }
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  table.push([
    row.route,
    n,
    [...statuses].map(([s, c]) => `${s}x${c}`).join(' '),
    round(counting.total() / n, 2),
    counting.perOperation(n),
    round((cpu.user + cpu.system) / 1000 / n, 2),
    round(wall / n, 2),
  ]);
}
console.log(
  markdownTable(
    [
      'route',
      'requests',
      'statuses',
      'db commands / request',
      'by command',
      'API CPU ms / request',
      'wall ms / request',
    ],
    table,
  ),
);
console.log(
  '\nBackground, independent of load: the revocation cache reads `revocations` at most every REVOCATION_STALENESS_MS,' +
    ' and the rate limiter flushes once per 250 ms (not started in this run: counted above when a request found the cache stale).',
);
await db.dropDatabase();
await counting.client.close();
await server.stop();
