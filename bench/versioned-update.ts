// Latency, throughput and MongoDB commands per successful versioned update (shared/concurrency/versions.ts):
// uncontended (one writer, random documents) and contended (many writers, one document, updateWithRetry).
// Starts its own offline server unless MONGO_URL is set. Commands are counted exactly with the
// driver's command monitoring, so they do not depend on the server's speed; latencies do.
//
//   npx node bench/versioned-update.ts [--docs 10000] [--serial 2000] [--writers 20] [--per-writer 10]
import { parseArgs } from 'node:util';
import { type CommandStartedEvent, MongoClient, ObjectId } from 'mongodb';
import { startOfflineServer } from '../scripts/mongo/offline-server.ts';
import { probeFeatures } from '../scripts/mongo/targets.ts';
import { defaultRetryOptions, updateWithRetry, updateWithVersion } from '../shared/concurrency/versions.ts';

const { values } = parseArgs({
  options: {
    docs: { type: 'string', default: '10000' },
    serial: { type: 'string', default: '2000' },
    writers: { type: 'string', default: '20' },
    'per-writer': { type: 'string', default: '10' },
    /** updateWithRetry's backoff; the defaults are the library's. */
    delay: { type: 'string', default: String(defaultRetryOptions.backoff.delay) },
    'max-delay': { type: 'string', default: String(defaultRetryOptions.backoff.maxDelay) },
  },
});
const docs = Number(values.docs);
const serialOps = Number(values.serial);
const writers = Number(values.writers);
const perWriter = Number(values['per-writer']);
const backoff = { delay: Number(values.delay), maxDelay: Number(values['max-delay']) };

interface Application {
  _id: ObjectId;
  version: number;
  status: string;
  counter: number;
}

interface Row {
  scenario: string;
  ops: number;
  seconds: number;
  latencies: number[];
  commands: Map<string, number>;
  conflicts: number;
  /** The most writes one call needed. */
  maxAttempts: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

const server = process.env.MONGO_URL ? null : await startOfflineServer();
const url = process.env.MONGO_URL ?? server!.url;
const { server: serverName } = await probeFeatures(url);
const client = new MongoClient(url, { monitorCommands: true, maxPoolSize: Math.max(10, writers * 2) });
const commands = new Map<string, number>();
client.on('commandStarted', (event: CommandStartedEvent) => {
  commands.set(event.commandName, (commands.get(event.commandName) ?? 0) + 1);
});
const db = client.db(`bench_versioned_${new ObjectId().toHexString()}`);
const apps = db.collection<Application>('applications');

async function measure(
  scenario: string,
  ops: number,
  body: (record: (ms: number) => void) => Promise<{ conflicts: number; maxAttempts: number }>,
) {
  const latencies: number[] = [];
  commands.clear();
  const started = performance.now();
  const { conflicts, maxAttempts } = await body((ms) => latencies.push(ms));
  const seconds = (performance.now() - started) / 1000;
  return { scenario, ops, seconds, latencies, commands: new Map(commands), conflicts, maxAttempts } satisfies Row;
}

try {
  const ids = Array.from({ length: docs }, () => new ObjectId());
  for (let i = 0; i < docs; i += 5_000) {
    await apps.insertMany(
      ids.slice(i, i + 5_000).map((_id) => ({ _id, version: 1, status: 'pending', counter: 0 })),
      { ordered: false },
    );
  }
  const versions = new Map(ids.map((id) => [id.toHexString(), 1]));
  const pick = () => ids[Math.floor(Math.random() * ids.length)]!;
  const serialUpdate = async () => {
    const id = pick();
    const version = versions.get(id.toHexString())!;
    const updated = await updateWithVersion(apps, id, version, { $set: { status: 'in_review' }, $inc: { counter: 1 } });
    versions.set(id.toHexString(), updated.version);
  };
  for (let i = 0; i < 50; i++) await serialUpdate(); // warm-up: connections, JIT

  const rows: Row[] = [];
  rows.push(
    await measure(`uncontended: 1 writer, random docs of ${docs}`, serialOps, async (record) => {
      for (let i = 0; i < serialOps; i++) {
        const t = performance.now();
        await serialUpdate();
        record(performance.now() - t);
      }
      return { conflicts: 0, maxAttempts: 1 };
    }),
  );

  const hot = ids[0]!;
  const before = await apps.findOne({ _id: hot });
  rows.push(
    await measure(
      `contended: ${writers} writers on 1 doc (updateWithRetry, backoff ${backoff.delay}..${backoff.maxDelay} ms)`,
      writers * perWriter,
      async (record) => {
        let conflicts = 0;
        let maxAttempts = 1;
        await Promise.all(
          Array.from({ length: writers }, async () => {
            for (let i = 0; i < perWriter; i++) {
              let calls = 0;
              const t = performance.now();
              // Each lost attempt is another call's win after our last read, so this many always suffice.
              await updateWithRetry(
                apps,
                hot,
                (current) => {
                  calls++;
                  return { counter: current.counter + 1 };
                },
                { attempts: writers * perWriter, backoff },
              );
              record(performance.now() - t);
              conflicts += calls - 1;
              maxAttempts = Math.max(maxAttempts, calls);
            }
          }),
        );
        return { conflicts, maxAttempts };
      },
    ),
  );
  const after = await apps.findOne({ _id: hot });
  if (after!.counter - before!.counter !== writers * perWriter) {
    throw new Error(`lost updates: counter moved by ${after!.counter - before!.counter}, not ${writers * perWriter}`);
  }

  const fmt = (n: number, digits = 2) => n.toFixed(digits);
  const lines = [
    `versioned updates on ${serverName}, node ${process.version}`,
    '',
    '| scenario | successes | ops/s | p50 ms | p95 ms | p99 ms | commands per success | conflicts per success | max attempts |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |',
  ];
  for (const row of rows) {
    const sorted = [...row.latencies].sort((a, b) => a - b);
    const perSuccess = [...row.commands]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, count]) => `${name} ${fmt(count / row.ops)}`)
      .join(', ');
    lines.push(
      `| ${row.scenario} | ${row.ops} | ${fmt(row.ops / row.seconds, 0)} | ${fmt(percentile(sorted, 50))} | ` +
        `${fmt(percentile(sorted, 95))} | ${fmt(percentile(sorted, 99))} | ${perSuccess} | ${fmt(row.conflicts / row.ops)} | ${row.maxAttempts} |`,
    );
  }
  lines.push(
    '',
    'Latency is per successful call (updateWithRetry: including its retries and backoff). The offline',
    "server's speed is not MongoDB's: compare command counts across servers, latencies only on one server.",
    '',
    `rerun: npx node bench/versioned-update.ts --docs ${docs} --serial ${serialOps} --writers ${writers} --per-writer ${perWriter} --delay ${backoff.delay} --max-delay ${backoff.maxDelay}` +
      (process.env.MONGO_URL ? ' (with MONGO_URL set)' : ''),
  );
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  await db.dropDatabase().catch(() => {});
  await client.close();
  await server?.stop();
}
