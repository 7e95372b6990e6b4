// The 1000-admin scenario (bench/load-scenario.ts) against one API instance, then against three
// instances behind nginx (the repository's nginx.conf, run by scripts/nginx/nginx.ts), on loopback.
// Prints req/s, p50/p95/p99, error rate, 409 rate, and the CPU each process used, so the table says
// what limits first: the API processes, the database server, nginx, or the load generator itself.
//
//   node bench/nginx-load.ts                                  (1000 admins, 30 s per setup)
//   LOAD_ADMINS=200 LOAD_SECONDS=10 node bench/nginx-load.ts
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { MongoClient } from 'mongodb';
import { type ApiInstance, startApiInstances } from '../scripts/api-instances.ts';
import { freePort, startOfflineServer } from '../scripts/mongo/offline-server.ts';
import { nginxWorkDir, type RunningNginx, startNginx } from '../scripts/nginx/nginx.ts';
import { runLoad } from './load-generator.ts';
import { adminScenario, cpuSeconds, kindTable, loadApiEnv, loginAll, prepareLoadData, rates } from './load-scenario.ts';
import { markdownTable, round } from './support.ts';

const ADMINS = Number(process.env.LOAD_ADMINS ?? 1000);
const SECONDS = Number(process.env.LOAD_SECONDS ?? 30);
const DOCS = Number(process.env.LOAD_DOCS ?? 10_000);

/** nginx's master and its workers (children of the master). */
function nginxPids(master: number): number[] {
  const children = readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((pid) => {
      try {
        return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]) === master;
      } catch {
        return false;
      }
    })
    .map(Number);
  return [master, ...children];
}

/** Busy and total jiffies of the whole machine (all cores), from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
  const values = fields.map(Number);
  const idle = values[3]! + values[4]!; // idle + iowait
  const total = values.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

const offline = process.env.MONGO_URL ? null : await startOfflineServer({ heap: '4g' });
const url = process.env.MONGO_URL ?? offline!.url;
const dbName = `bench_nginx_${Date.now()}`;
const client = await new MongoClient(url).connect();
const db = client.db(dbName);
await prepareLoadData(db, { admins: ADMINS, docs: DOCS });
const env = loadApiEnv(url, dbName);
const workDir = nginxWorkDir('nginx-load-');

interface Setup {
  name: string;
  instances: number;
  nginx: boolean;
}
const setups: Setup[] = [
  { name: 'one instance, direct', instances: 1, nginx: false },
  { name: 'three instances behind nginx', instances: 3, nginx: true },
];

const rows: (string | number)[][] = [];
const details: string[] = [];
for (const setup of setups) {
  const instances: ApiInstance[] = await startApiInstances(setup.instances, env);
  let nginx: RunningNginx | null = null;
  if (setup.nginx) {
    nginx = await startNginx({
      upstreams: instances.map((i) => i.address),
      listen: `127.0.0.1:${await freePort()}`,
      dir: `${workDir}/${setup.instances}`,
    });
  }
  const origin = nginx?.origin ?? instances[0]!.origin;
  const tokens = await loginAll(origin, ADMINS);
  const scenario = await adminScenario(db, tokens);

  const cpu = () => ({
    api: instances.reduce((sum, i) => sum + cpuSeconds(i.process.pid!), 0),
    db: offline ? cpuSeconds(offline.pid) : Number.NaN,
    nginx: nginx ? nginxPids(nginx.process.pid!).reduce((sum, pid) => sum + cpuSeconds(pid), 0) : 0,
    generator: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
    machine: machineTicks(),
  });
  const before = cpu();
  const result = await runLoad({
    origins: [origin],
    connections: ADMINS,
    durationMs: SECONDS * 1000,
    next: scenario.next,
    onResponse: scenario.onResponse,
  });
  const after = cpu();
  const pct = (key: 'api' | 'db' | 'nginx' | 'generator') =>
    round((100 * (after[key] - before[key])) / result.durationS, 0);
  const machineBusy = round(
    (100 * (after.machine.busy - before.machine.busy)) / (after.machine.total - before.machine.total),
    0,
  );
  const { errorPct, conflictPct } = rates(result);
  const ok = Object.entries(result.statuses)
    .filter(([status]) => /^2\d\d$/.test(status))
    .reduce((sum, [, n]) => sum + n, 0);
  rows.push([
    setup.name,
    result.rps,
    round(ok / result.durationS, 0),
    result.latency.p50,
    result.latency.p95,
    result.latency.p99,
    errorPct,
    conflictPct,
    pct('api'),
    round((1000 * (after.api - before.api)) / result.requests, 2),
    pct('db'),
    round((1000 * (after.db - before.db)) / result.requests, 2),
    setup.nginx ? pct('nginx') : '-',
    pct('generator'),
    machineBusy,
  ]);
  details.push(`### ${setup.name}\n\n${kindTable(result)}`);

  await nginx?.stop();
  await Promise.all(instances.map((i) => i.stop()));
}

console.log(`## ${ADMINS} admins, ${SECONDS} s per setup, ${DOCS} applications: one instance vs three behind nginx`);
console.log(
  `server: ${offline ? 'offline mongo-java-server' : 'MONGO_URL'}; node ${process.version}; ${cpus().length} cores; load average before ${loadavg()[0]!.toFixed(1)}; ${new Date().toISOString()}`,
);
console.log('rerun: node bench/nginx-load.ts   (LOAD_ADMINS, LOAD_SECONDS, LOAD_DOCS to change)\n');
console.log(
  markdownTable(
    [
      'setup',
      'req/s',
      '2xx/s',
      'p50 ms',
      'p95 ms',
      'p99 ms',
      'errors %',
      '409 % of PUTs',
      'CPU API(s) %',
      'API CPU ms/req',
      'CPU database %',
      'DB CPU ms/req',
      'CPU nginx %',
      'CPU load generator %',
      'machine busy %',
    ],
    rows,
  ),
);
console.log(
  '\nCPU columns: % of one core over the run (API(s): all instances together); ms/req: CPU time per request' +
    ' answered; machine busy: all cores, including other processes.\n',
);
for (const detail of details) console.log(`${detail}\n`);

rmSync(workDir, { recursive: true, force: true });
await db.dropDatabase();
await client.close();
await offline?.stop();
