// 1000 logged-in admins against one API instance (Node entry, real HTTP on loopback): the shared
// scenario of bench/load-scenario.ts (list 80%, get 15%, versioned PUT 5%), closed loop, for 30 s.
// Prints req/s, latency percentiles, status counts per kind, the 409 rate, and the CPU used by the
// API process and the database server process (what limits first). bench/nginx-load.ts compares
// this with three instances behind nginx.
//
//   npm run bench:api-load                       (1000 admins, 30 s)
//   LOAD_ADMINS=200 LOAD_SECONDS=10 npm run bench:api-load
import { MongoClient } from 'mongodb';
import { startApiInstances } from '../scripts/api-instances.ts';
import { startOfflineServer } from '../scripts/mongo/offline-server.ts';
import { runLoad } from './load-generator.ts';
import { adminScenario, cpuSeconds, kindTable, loadApiEnv, loginAll, prepareLoadData, rates } from './load-scenario.ts';
import { round } from './support.ts';

const ADMINS = Number(process.env.LOAD_ADMINS ?? 1000);
const SECONDS = Number(process.env.LOAD_SECONDS ?? 30);
const DOCS = Number(process.env.LOAD_DOCS ?? 10_000);

const offline = process.env.MONGO_URL ? null : await startOfflineServer({ heap: '4g' });
const url = process.env.MONGO_URL ?? offline!.url;
const dbName = `bench_load_${Date.now()}`;
const client = await new MongoClient(url).connect();
const db = client.db(dbName);
await prepareLoadData(db, { admins: ADMINS, docs: DOCS });

const [api] = await startApiInstances(1, loadApiEnv(url, dbName));
const tokens = await loginAll(api!.origin, ADMINS);
const scenario = await adminScenario(db, tokens);

const apiCpu0 = cpuSeconds(api!.process.pid!);
const dbCpu0 = offline ? cpuSeconds(offline.pid) : 0;
const result = await runLoad({
  origins: [api!.origin],
  connections: ADMINS,
  durationMs: SECONDS * 1000,
  next: scenario.next,
  onResponse: scenario.onResponse,
});
const apiCpu = cpuSeconds(api!.process.pid!) - apiCpu0;
const dbCpu = offline ? cpuSeconds(offline.pid) - dbCpu0 : Number.NaN;

console.log(`## ${ADMINS} admins, ${SECONDS} s, one API instance (Node), ${DOCS} applications`);
console.log(
  `server: ${offline ? 'offline mongo-java-server' : 'MONGO_URL'}; node ${process.version}; ${new Date().toISOString()}`,
);
console.log('rerun: npm run bench:api-load   (LOAD_ADMINS, LOAD_SECONDS, LOAD_DOCS to change)\n');
console.log(kindTable(result));
const { errorPct, conflictPct } = rates(result);
console.log(
  `\n${result.rps} req/s over ${result.durationS} s; error rate ${errorPct}%; 409 rate among PUTs ${conflictPct}%;` +
    ` CPU: API process ${round((100 * apiCpu) / result.durationS, 0)}% of one core, database server ${round((100 * dbCpu) / result.durationS, 0)}%`,
);

await api!.stop();
await db.dropDatabase();
await client.close();
await offline?.stop();
