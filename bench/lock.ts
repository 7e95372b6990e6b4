// Lease latency and cost: acquire+release uncontended (serial) and with contenders on one key, plus the
// exact MongoDB commands per acquire+release (command monitoring), failed E11000 attempts included.
// Run: npx node bench/lock.ts   (starts the offline server unless MONGO_URL is set)
// Knobs: LOCK_BENCH_N (serial pairs, 2000), LOCK_BENCH_CONTENDERS (20), LOCK_BENCH_ROUNDS (per contender, 50),
// LOCK_BENCH_RETRY_MAX_MS (the waiters' backoff ceiling; LockManager's default when unset).
import { availableParallelism } from 'node:os';
import { MongoClient } from 'mongodb';
import { startOfflineServer } from '../scripts/mongo/offline-server.ts';
import { probeFeatures } from '../scripts/mongo/targets.ts';
import { LockManager } from '../shared/concurrency/leases.ts';

const serialN = Number(process.env.LOCK_BENCH_N ?? 2000);
const contenders = Number(process.env.LOCK_BENCH_CONTENDERS ?? 20);
const rounds = Number(process.env.LOCK_BENCH_ROUNDS ?? 50);
const retryMaxMs = process.env.LOCK_BENCH_RETRY_MAX_MS ? Number(process.env.LOCK_BENCH_RETRY_MAX_MS) : undefined;

const offline = process.env.MONGO_URL ? undefined : await startOfflineServer();
const url = process.env.MONGO_URL ?? offline!.url;
const { server } = await probeFeatures(url);
const client = new MongoClient(url, { monitorCommands: true, maxPoolSize: contenders + 5 });
await client.connect();
const db = client.db(`bench_lock_${process.pid}`);

const started = new Map<string, number>();
const failed = new Map<string, number>();
const bump = (map: Map<string, number>, name: string) => map.set(name, (map.get(name) ?? 0) + 1);
client.on('commandStarted', (event) => bump(started, event.commandName));
client.on('commandFailed', (event) => bump(failed, event.commandName));
const resetCounts = () => {
  started.clear();
  failed.clear();
};

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

interface Row {
  scenario: string;
  pairs: number;
  seconds: number;
  latencies: number[];
  commands: Map<string, number>;
  failures: Map<string, number>;
}

async function uncontended(): Promise<Row> {
  const locks = new LockManager(db);
  await locks.release((await locks.acquire('serial'))!); // create the lock document outside the measurement
  resetCounts();
  const latencies: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < serialN; i++) {
    const start = performance.now();
    const lease = await locks.acquire('serial', { ttlMs: 10_000 });
    await locks.release(lease!);
    latencies.push(performance.now() - start);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { scenario: 'uncontended, serial', pairs: serialN, seconds, latencies, ...snapshot() };
}

/** Each contender loops acquire (waiting) -> release on one key; latency = time waiting in acquire. */
async function contended(): Promise<Row> {
  await new LockManager(db).release((await new LockManager(db).acquire('contended'))!);
  resetCounts();
  const latencies: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: contenders }, async () => {
      const locks = new LockManager(db, retryMaxMs ? { retryMaxMs } : {});
      for (let i = 0; i < rounds; i++) {
        const start = performance.now();
        const lease = await locks.acquire('contended', { ttlMs: 10_000, waitMs: 120_000 });
        latencies.push(performance.now() - start);
        await locks.release(lease!);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  return {
    scenario: `${contenders} contenders, one key`,
    pairs: contenders * rounds,
    seconds,
    latencies,
    ...snapshot(),
  };
}

function snapshot() {
  return { commands: new Map(started), failures: new Map(failed) };
}

const rows = [await uncontended(), await contended()];
await db.dropDatabase();
await client.close();
await offline?.stop();

const fmt = (n: number, digits = 2) => n.toFixed(digits);
const perPair = (row: Row, count: number | undefined) => fmt((count ?? 0) / row.pairs);
console.log(`\n## shared/concurrency/leases: acquire + release\n`);
console.log(`Server: ${server}; Node ${process.versions.node}; ${availableParallelism()} cores.`);
console.log(
  'Latency: uncontended = one acquire+release round; contended = time spent in acquire (waiting included), ' +
    'lease released immediately after.\n',
);
console.log('| scenario | acquire+release pairs | p50 ms | p95 ms | p99 ms | acquisitions/s |');
console.log('|---|---:|---:|---:|---:|---:|');
for (const row of rows) {
  const sorted = [...row.latencies].sort((a, b) => a - b);
  console.log(
    `| ${row.scenario} | ${row.pairs} | ${fmt(percentile(sorted, 50))} | ${fmt(percentile(sorted, 95))} | ${fmt(
      percentile(sorted, 99),
    )} | ${fmt(row.pairs / row.seconds, 0)} |`,
  );
}
const names = [...new Set(rows.flatMap((row) => [...row.commands.keys()]))].sort();
console.log('\nMongoDB commands per acquire+release (command monitoring; "failed" = E11000, lease held):\n');
console.log(`| scenario | ${names.map((name) => `${name} started | ${name} failed`).join(' | ')} | total |`);
console.log(`|---|${names.map(() => '---:|---:').join('|')}|---:|`);
for (const row of rows) {
  const total = [...row.commands.values()].reduce((a, b) => a + b, 0);
  const cells = names.map(
    (name) => `${perPair(row, row.commands.get(name))} | ${perPair(row, row.failures.get(name))}`,
  );
  console.log(`| ${row.scenario} | ${cells.join(' | ')} | ${perPair(row, total)} |`);
}
console.log(
  `\nRerun: \`npx node bench/lock.ts\` (or \`MONGO_URL=mongodb://127.0.0.1:27017 npx node bench/lock.ts\`; ` +
    `LOCK_BENCH_N=${serialN} LOCK_BENCH_CONTENDERS=${contenders} LOCK_BENCH_ROUNDS=${rounds})`,
);
