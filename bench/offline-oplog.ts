// What an unbounded oplog costs the offline server: idle change streams (as every API instance and
// worker keeps open) scan the whole oplog on each getMore. One server per row, side by side in one run:
// a bulk write (BENCH_OPLOG_BULK documents, 200,000 by default, about what the suite's 100k migration
// test writes), then BENCH_OPLOG_WAIT_S (8) seconds, then 3 s of single-document findOneAndUpdate with
// BENCH_OPLOG_STREAMS (10) streams polled every 100 ms. "window 5 s" trims entries older than 5 s;
// "unbounded" keeps everything (the stock server's behaviour).
// Run: npm run bench:offline-oplog
import { MongoClient } from 'mongodb';
import { startOfflineServer } from '../scripts/mongo/offline-server.ts';

const bulk = Number(process.env.BENCH_OPLOG_BULK ?? 200_000);
const waitS = Number(process.env.BENCH_OPLOG_WAIT_S ?? 8);
const streams = Number(process.env.BENCH_OPLOG_STREAMS ?? 10);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

async function row(label: string, retentionSeconds: number) {
  const server = await startOfflineServer({ oplogRetentionSeconds: retentionSeconds });
  const client = new MongoClient(server.url);
  await client.connect();
  const db = client.db('bench');
  let stop = false;
  const readers = Array.from({ length: streams }, async (_, i) => {
    const stream = db.collection(`watched${i}`).watch([], { maxAwaitTimeMS: 100 });
    while (!stop) {
      await stream.tryNext();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await stream.close();
  });
  for (let done = 0; done < bulk; done += 1000) {
    await db.collection('bulk').insertMany(Array.from({ length: Math.min(1000, bulk - done) }, (_, n) => ({ n })));
  }
  await new Promise((resolve) => setTimeout(resolve, waitS * 1000));
  const oplogEntries = await client.db('local').collection('oplog.rs').estimatedDocumentCount();
  await db.collection('counter').insertOne({ _id: 'c' as never, n: 0 });
  const latencies: number[] = [];
  const began = performance.now();
  while (performance.now() - began < 3000) {
    const sent = performance.now();
    await db.collection('counter').findOneAndUpdate({ _id: 'c' as never }, { $inc: { n: 1 } });
    latencies.push(performance.now() - sent);
  }
  const seconds = (performance.now() - began) / 1000;
  stop = true;
  await Promise.all(readers);
  await client.close();
  await server.stop();
  latencies.sort((a, b) => a - b);
  return {
    oplog: label,
    'entries at start': oplogEntries,
    'updates/s': Math.round(latencies.length / seconds),
    'p50 ms': percentile(latencies, 50).toFixed(1),
    'p99 ms': percentile(latencies, 99).toFixed(1),
    'max ms': latencies.at(-1)!.toFixed(1),
  };
}

const rows = [await row('window 5 s', 5), await row('unbounded', 1_000_000_000)];
console.log(
  `offline server, ${bulk.toLocaleString('en')} documents written, ${waitS} s later, ${streams} idle change streams`,
);
console.table(rows);
console.log('rerun: npm run bench:offline-oplog  (BENCH_OPLOG_BULK, BENCH_OPLOG_WAIT_S, BENCH_OPLOG_STREAMS)');
