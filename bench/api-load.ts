// 1000 logged-in admins against one API instance (Node entry, real HTTP on loopback): a mix of
// list (80%), get (15%) and versioned PUT (5%), closed loop, for 30 s. Prints req/s, latency
// percentiles, status counts per kind, the 409 rate, and the CPU used by the API process and the
// database server process (what limits first).
//
//   npm run bench:api-load                       (1000 admins, 30 s)
//   LOAD_ADMINS=200 LOAD_SECONDS=10 npm run bench:api-load
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { MongoClient } from 'mongodb';
import { apiIndexes } from '../api/services.ts';
import { freePort, startOfflineServer } from '../scripts/mongo/offline-server.ts';
import { seedApplications } from '../scripts/seed.ts';
import type { AdminDoc } from '../shared/admins.ts';
import { ensureIndexes } from '../shared/db.ts';
import { hashPassword } from '../shared/password.ts';
import { runLoad } from './load-generator.ts';
import { markdownTable, round } from './support.ts';

const ADMINS = Number(process.env.LOAD_ADMINS ?? 1000);
const SECONDS = Number(process.env.LOAD_SECONDS ?? 30);
const DOCS = Number(process.env.LOAD_DOCS ?? 10_000);
const PASSWORD = 'load test password';

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks of 10 ms
}

const offline = process.env.MONGO_URL ? null : await startOfflineServer({ heap: '4g' });
const url = process.env.MONGO_URL ?? offline!.url;
const dbName = `bench_load_${Date.now()}`;
const client = await new MongoClient(url).connect();
const db = client.db(dbName);
await ensureIndexes(db, apiIndexes);
await seedApplications(db, DOCS);
// One hash serves every load admin (same password): hashing it 1000 times would only time PBKDF2.
const passwordHash = await hashPassword(PASSWORD, 1000);
await db.collection<AdminDoc>('admins').insertMany(
  Array.from({ length: ADMINS }, (_, i) => ({
    _id: crypto.randomUUID(),
    email: `load${i}@example.com`,
    name: `Load ${i}`,
    passwordHash,
    roles: ['reviewer' as const],
    disabled: false,
    createdAt: new Date(),
  })),
);

const port = await freePort();
const api = spawn(process.execPath, ['api/node.ts'], {
  env: {
    ...process.env,
    MONGO_URL: url,
    MONGO_DB: dbName,
    PORT: String(port),
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    JWT_KEYS: `l1:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`,
    PASSWORD_ITERATIONS: '1000',
    LOGIN_ATTEMPTS_PER_ADDRESS: '100000',
    RATE_LIMIT_PER_MINUTE: '100000',
  },
  stdio: ['ignore', 'inherit', 'inherit'],
});
const origin = `http://127.0.0.1:${port}`;
for (let i = 0; ; i++) {
  if ((await fetch(`${origin}/ready`).catch(() => null))?.status === 200) break;
  if (i > 300) throw new Error('API did not become ready');
  await new Promise((r) => setTimeout(r, 100));
}

// Every admin logs in through HTTP (10 at a time).
const tokens: string[] = new Array(ADMINS);
for (let start = 0; start < ADMINS; start += 10) {
  await Promise.all(
    Array.from({ length: Math.min(10, ADMINS - start) }, async (_, k) => {
      const i = start + k;
      const res = await fetch(`${origin}/api/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: `load${i}@example.com`, password: PASSWORD }),
      });
      if (res.status !== 200) throw new Error(`login ${i}: ${res.status} ${await res.text()}`);
      tokens[i] = (await res.json()).accessToken;
    }),
  );
}

const all = await db
  .collection<{ _id: string; status: string }>('applications')
  .find({}, { projection: { status: 1 } })
  .toArray();
const ids = all.map((d) => d._id);
const editable = all.filter((d) => d.status === 'pending' || d.status === 'under_review').map((d) => d._id);
const versions = new Map<string, number>(editable.map((id) => [id, 1]));
const statusFilters = ['', '&status=pending', '&status=under_review', '&status=approved'];
const pick = <T>(list: T[]) => list[Math.floor(Math.random() * list.length)]!;

const apiCpu0 = cpuSeconds(api.pid!);
const dbCpu0 = offline ? cpuSeconds(offline.pid) : 0;
const result = await runLoad({
  origins: [origin],
  connections: ADMINS,
  durationMs: SECONDS * 1000,
  next: (user) => {
    const headers = { authorization: `Bearer ${tokens[user]}` };
    const roll = Math.random();
    if (roll < 0.8) {
      return {
        kind: 'list',
        method: 'GET',
        path: `/api/applications?page=${1 + Math.floor(Math.random() * 5)}&limit=50${pick(statusFilters)}`,
        headers,
      };
    }
    if (roll < 0.95) return { kind: 'get', method: 'GET', path: `/api/applications/${pick(ids)}`, headers };
    const id = pick(editable);
    return {
      kind: 'put',
      method: 'PUT',
      path: `/api/applications/${id}`,
      headers,
      body: JSON.stringify({ loanAmount: 1000 + Math.floor(Math.random() * 1000) * 100, version: versions.get(id) }),
    };
  },
  onResponse: (_user, request, status, body) => {
    if (request.kind !== 'put' || (status !== 200 && status !== 409)) return;
    const doc = JSON.parse(body);
    const current = status === 200 ? doc : doc.current;
    if (current?._id) versions.set(current._id, Math.max(versions.get(current._id) ?? 0, current.version));
  },
});
const apiCpu = cpuSeconds(api.pid!) - apiCpu0;
const dbCpu = offline ? cpuSeconds(offline.pid) - dbCpu0 : Number.NaN;

console.log(`## ${ADMINS} admins, ${SECONDS} s, one API instance (Node), ${DOCS} applications`);
console.log(
  `server: ${offline ? 'offline mongo-java-server' : 'MONGO_URL'}; node ${process.version}; ${new Date().toISOString()}`,
);
console.log('rerun: npm run bench:api-load   (LOAD_ADMINS, LOAD_SECONDS, LOAD_DOCS to change)\n');
console.log(
  markdownTable(
    ['kind', 'requests', 'p50 ms', 'p95 ms', 'p99 ms', 'statuses'],
    [
      ...Object.entries(result.byKind).map(([kind, k]) => [kind, k.n, k.p50, k.p95, k.p99, JSON.stringify(k.statuses)]),
      [
        'all',
        result.requests,
        result.latency.p50,
        result.latency.p95,
        result.latency.p99,
        JSON.stringify(result.statuses),
      ],
    ],
  ),
);
const puts = result.byKind.put;
const conflicts = puts?.statuses['409'] ?? 0;
console.log(
  `\n${result.rps} req/s over ${result.durationS} s; 409 rate among PUTs ${puts ? round((100 * conflicts) / puts.n, 1) : 0}%;` +
    ` CPU: API process ${round((100 * apiCpu) / result.durationS, 0)}% of one core, database server ${round((100 * dbCpu) / result.durationS, 0)}%`,
);

api.kill('SIGTERM');
await new Promise((r) => api.once('exit', r));
await db.dropDatabase();
await client.close();
await offline?.stop();
