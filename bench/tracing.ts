// What tracing costs the API: two real API processes (api/node.ts) on one database, one with
// OTEL_EXPORTER_OTLP_ENDPOINT unset (no SDK) and one exporting every span to an OTLP/HTTP receiver in this
// process, called over HTTP one request at a time, in alternating rounds so both see the same machine load.
// CPU is each API process's own user+system time (from /proc/<pid>/stat, so it includes the span batching
// and the OTLP export it does in the background), divided by the requests it served.
//
//   npm run bench:tracing            (BENCH_N=500 requests per route per round, BENCH_ROUNDS=4)
import { readFileSync } from 'node:fs';
import { MongoClient } from 'mongodb';
import { type ApiInstance, startApiInstances } from '../scripts/api-instances.ts';
import { startOtlpReceiver } from '../scripts/otlp-receiver.ts';
import { seedApplications } from '../scripts/seed.ts';
import { sleep } from '../shared/core/clock.ts';
import { markdownTable, printPreamble, round, startBenchServer } from './support.ts';

const N = Number(process.env.BENCH_N ?? 500);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4);
const TICKS_PER_S = 100; // getconf CLK_TCK on Linux

const server = await startBenchServer();
printPreamble('Tracing: API CPU per request, off and on', 'npm run bench:tracing', server);
const dbName = `bench_tracing_${Date.now()}`;
const client = await new MongoClient(server.url).connect();
const db = client.db(dbName);
// Half the seeded applications are pending; each side moves N * ROUNDS of them.
await seedApplications(db, Math.max(5_000, N * ROUNDS * 3 * 2 + 1_000));
const receiver = await startOtlpReceiver();

const key = () => btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
const env = {
  MONGO_URL: server.url,
  MONGO_DB: dbName,
  JWT_KEYS: `b1:${key()}`,
  LEDGER_KEYS: `ledger:${key()}`,
  PASSWORD_ITERATIONS: '1000',
  ADMIN_EMAIL: 'bench@example.com',
  ADMIN_PASSWORD: 'bench password 123',
  RATE_LIMIT_PER_MINUTE: '1000000',
  LIST_CACHE_MS: '0',
  LIST_TOTAL_CACHE_MS: '0',
  // Quiet in the background (the change feed polls once a minute, no payment sweep), so what is counted
  // is the requests' CPU.
  EVENTS_POLL_MS: '60000',
  PAYMENT_RESUME_INTERVAL_MS: '0',
  // Production's level: every request writes its log line (which carries the trace id when on).
  LOG_LEVEL: 'info',
};
// One after the other: the first creates the admin.
const [off] = await startApiInstances(1, env);
// The SDK's own batching (a batch every 5 s or every 512 spans, whichever first), as in production.
const [on] = await startApiInstances(1, { ...env, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url });
const [noCommands] = await startApiInstances(1, {
  ...env,
  OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
  OTEL_TRACE_DB_COMMANDS: 'false',
});
const instances = { off: off!, on: on!, noCommands: noCommands! };
type Side = keyof typeof instances;
const sides = Object.keys(instances) as Side[];

/** utime + stime of a process, in microseconds. */
function cpuMicros(instance: ApiInstance): number {
  const stat = readFileSync(`/proc/${instance.process.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1_000_000) / TICKS_PER_S;
}

const login = await (
  await fetch(`${off!.origin}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'bench@example.com', password: 'bench password 123' }),
  })
).json();
const auth = { authorization: `Bearer ${login.accessToken}` };
const apps = db.collection<{ _id: string; status: string }>('applications');
const ids = (
  await apps
    .find({}, { projection: { _id: 1 } })
    .limit(N)
    .toArray()
).map((d) => d._id);
const pending = (await apps.find({ status: 'pending' }, { projection: { _id: 1 } }).toArray()).map((d) => d._id);
if (pending.length < N * ROUNDS * 3) throw new Error(`only ${pending.length} pending applications seeded`);
let nextPending = 0;

interface Route {
  name: string;
  call: (origin: string, i: number) => Promise<Response>;
}
const routes: Route[] = [
  { name: 'GET /health (no session, no database)', call: (origin) => fetch(`${origin}/health`) },
  {
    name: 'GET /api/applications/:id (session, 1 find)',
    call: (origin, i) => fetch(`${origin}/api/applications/${ids[i % ids.length]}`, { headers: auth }),
  },
  {
    name: 'GET /api/applications?limit=50&total=false (cache off)',
    call: (origin) => fetch(`${origin}/api/applications?limit=50&total=false`, { headers: auth }),
  },
  {
    name: 'PUT /api/applications/:id -> under_review (write, audit, job)',
    call: (origin) =>
      fetch(`${origin}/api/applications/${pending[nextPending++]}`, {
        method: 'PUT',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ status: 'under_review', version: 1 }),
      }),
  },
];

async function batch(instance: ApiInstance, route: Route): Promise<{ cpu: number; wall: number; failed: number }> {
  const cpu0 = cpuMicros(instance);
  const t0 = performance.now();
  let failed = 0;
  for (let i = 0; i < N; i++) {
    const res = await route.call(instance.origin, i);
    await res.arrayBuffer();
    if (res.status >= 300) failed++;
  }
  const wall = performance.now() - t0;
  // No wait for the last spans: a traced process exports whenever 512 spans are queued or 5 s have passed,
  // so what one batch leaves queued is exported (and counted) during its next batch. Waiting instead would
  // add seconds of idle background CPU to every batch, noise as large as what is measured.
  await sleep(100);
  return { cpu: cpuMicros(instance) - cpu0, wall, failed };
}

// Warm both up (JIT, pools, the revocation cache).
for (const instance of Object.values(instances)) {
  for (const route of routes.slice(0, 3))
    for (let i = 0; i < 100; i++) await (await route.call(instance.origin, i)).arrayBuffer();
}
await sleep(1_000);

const rows: Array<Array<string | number>> = [];
for (const route of routes) {
  const sum = Object.fromEntries(sides.map((side) => [side, { cpu: 0, wall: 0, failed: 0, spans: 0 }])) as Record<
    Side,
    { cpu: number; wall: number; failed: number; spans: number }
  >;
  for (let r = 0; r < ROUNDS; r++) {
    // Rotate which goes first, so none always meets the machine in the same state.
    const order = sides.map((_, i) => sides[(i + r) % sides.length]!);
    for (const side of order) {
      const spans0 = receiver.spans().length;
      const result = await batch(instances[side], route);
      sum[side].cpu += result.cpu;
      sum[side].wall += result.wall;
      sum[side].failed += result.failed;
      sum[side].spans += receiver.spans().length - spans0;
    }
  }
  const requests = N * ROUNDS;
  const cpu = (side: Side) => sum[side].cpu / requests;
  const versus = (side: Side) => {
    const extra = cpu(side) - cpu('off');
    return `${round(cpu(side), 0)} (${extra >= 0 ? '+' : ''}${round(extra, 0)}, ${round((extra / cpu('off')) * 100, 0)}%)`;
  };
  rows.push([
    route.name,
    requests,
    round(cpu('off'), 0),
    versus('on'),
    versus('noCommands'),
    `${round(sum.on.spans / requests, 1)} / ${round(sum.noCommands.spans / requests, 1)}`,
    sides.map((side) => round(sum[side].wall / requests, 2)).join(' / '),
    sides.reduce((n, side) => n + sum[side].failed, 0),
  ]);
}

console.log(
  markdownTable(
    [
      'route',
      'requests each',
      'CPU µs / request, tracing off',
      'tracing on (vs off)',
      'on, OTEL_TRACE_DB_COMMANDS=false (vs off)',
      'spans exported / request (on / without commands)',
      'wall ms / request (off / on / without commands)',
      'failed',
    ],
    rows,
  ),
);
console.log(
  `\nEach API process's user+system CPU (clock ticks of 10 ms, over ${N} requests x ${ROUNDS} rounds per route), ` +
    'including the OTLP export (the SDK defaults: a batch when 512 spans are queued or every 5 s; what a batch leaves queued is exported during the next).',
);
await Promise.all(Object.values(instances).map((instance) => instance.stop()));
await receiver.close();
await db.dropDatabase();
await client.close();
await server.stop();
