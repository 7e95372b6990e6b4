// How long a logout on instance A takes to be refused by instance B, and what the freshness costs.
// Two app instances in this process, each with its own MongoClient and revocation cache, on one
// database; B is polled every 5 ms after A's logout returns.
//
//   npm run bench:revocation        (REVOCATION_TRIALS=30)
import { MongoClient } from 'mongodb';
import { createApp } from '../api/app.ts';
import { createLogger } from '../api/log.ts';
import { apiIndexes, createServices } from '../api/services.ts';
import { sleep } from '../shared/core/clock.ts';
import { apiConfigSchema, loadConfig } from '../shared/core/config.ts';
import { ensureIndexes } from '../shared/core/db.ts';
import { countingClient, markdownTable, printPreamble, round, startBenchServer, summarize } from './support.ts';

const TRIALS = Number(process.env.REVOCATION_TRIALS ?? 30);
const server = await startBenchServer();
printPreamble('Revocation: time until another instance refuses a logged-out token', 'npm run bench:revocation', server);

const dbName = `bench_revocation_${Date.now()}`;
const env = {
  MONGO_URL: server.url,
  MONGO_DB: dbName,
  JWT_KEYS: `r1:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`,
  LEDGER_KEYS: `ledger:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`,
  LOG_LEVEL: 'silent',
  PASSWORD_ITERATIONS: '1000',
  LOGIN_ATTEMPTS_PER_ADDRESS: '100000',
};
const config = loadConfig(env, apiConfigSchema);
const clientA = await new MongoClient(server.url).connect();
const counted = countingClient(server.url);
await counted.client.connect();
await ensureIndexes(clientA.db(dbName), apiIndexes);
const a = await createServices(clientA.db(dbName), config, createLogger('silent'));
const b = await createServices(counted.client.db(dbName), config, createLogger('silent'));
const appA = createApp(a, { remoteAddress: () => '127.0.0.1' });
const appB = createApp(b, { remoteAddress: () => '127.0.0.1' });
// As on Node: both instances refresh their caches in the background.
a.revocations.start();
b.revocations.start();
await a.admins.create({ email: 'r@example.com', password: 'revocation bench pw', roles: ['viewer'] });

const delays: number[] = [];
for (let i = 0; i < TRIALS; i++) {
  const login = await appA.request('/api/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'r@example.com', password: 'revocation bench pw' }),
  });
  const { accessToken } = await login.json();
  const auth = { headers: { authorization: `Bearer ${accessToken}` } };
  if ((await appB.request('/api/auth/me', auth)).status !== 200) throw new Error('B refused a fresh token');
  // Start at a random point of B's refresh cycle.
  await sleep(Math.random() * config.REVOCATION_STALENESS_MS);
  const logout = await appA.request('/api/auth/logout', { method: 'POST', ...auth });
  if (logout.status !== 204) throw new Error(`logout: ${logout.status}`);
  const t0 = performance.now();
  while ((await appB.request('/api/auth/me', auth)).status === 200) await sleep(5);
  delays.push(performance.now() - t0);
}

// The cost of freshness: B's database commands over 5 idle seconds, and per authenticated request.
counted.reset();
await sleep(5000);
const idlePerSecond = counted.total() / 5;
const { accessToken } = await (
  await appA.request('/api/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'r@example.com', password: 'revocation bench pw' }),
  })
).json();
counted.reset();
const syncs0 = b.revocations.syncs;
const started = performance.now();
for (let i = 0; i < 2000; i++)
  await appB.request('/api/auth/me', { headers: { authorization: `Bearer ${accessToken}` } });
const seconds = (performance.now() - started) / 1000;
const revocationReads = b.revocations.syncs - syncs0;

const d = summarize(delays);
console.log(
  markdownTable(
    ['measure', 'value'],
    [
      ['trials', TRIALS],
      ['REVOCATION_STALENESS_MS (the bound)', config.REVOCATION_STALENESS_MS],
      ['refused by B after logout on A: p50 ms', round(d.p50)],
      ['p95 ms', round(d.p95)],
      ['max ms', round(Math.max(...delays))],
      ['B idle: revocation reads per second', round(idlePerSecond, 2)],
      ['2000 GET /api/auth/me on B: database commands per request', round(counted.total() / 2000, 3)],
      ['  of which revocation reads (background, time-based)', `${revocationReads} in ${round(seconds, 1)} s`],
    ],
  ),
);
a.revocations.stop();
b.revocations.stop();
await clientA.db(dbName).dropDatabase();
await clientA.close();
await counted.client.close();
await server.stop();
