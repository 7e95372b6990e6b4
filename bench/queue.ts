// End-to-end queue throughput: add -> claim -> complete of a no-op job, ours (shared/queue.ts)
// beside Agenda 6 (@agendajs/mongo-backend) on the same MongoDB server, a fresh database per cell,
// at concurrency 1, 10, 50 with 1 and 4 worker processes. Counts our MongoDB commands per job
// exactly with the driver's command monitoring.
//
//   npx node bench/queue.ts                 # 2,000 jobs per cell
//   BENCH_JOBS=500 npx node bench/queue.ts  # a quicker run (or: npx node bench/queue.ts --quick)
//   BENCH_ENGINES=ours npx node bench/queue.ts
// Uses MONGO_URL when set, otherwise starts the offline server.
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { type Db, MongoClient } from 'mongodb';
import { startOfflineServer } from '../scripts/mongo/offline-server.ts';
import { ensureIndexes } from '../shared/db.ts';
import { Queue, queueIndexes, Worker } from '../shared/queue.ts';

type Engine = 'ours' | 'agenda';
type Counts = Record<string, number>;

const self = fileURLToPath(import.meta.url);
/** Agenda 6 keeps its MongoDB backend in a separate package (a devDependency). */
async function loadAgendaBackend(): Promise<new (config: { mongo: Db; collection?: string }) => unknown> {
  return (await import('@agendajs/mongo-backend')).MongoBackend;
}

function countingClient(url: string, counts: Counts, poolSize: number): MongoClient {
  const client = new MongoClient(url, { monitorCommands: true, maxPoolSize: poolSize });
  client.on('commandStarted', (event) => {
    counts[event.commandName] = (counts[event.commandName] ?? 0) + 1;
  });
  return client;
}

// ---- child: one worker process ------------------------------------------------------------
async function child(): Promise<void> {
  const { BENCH_ENGINE, MONGO_URL, BENCH_DB, BENCH_CONCURRENCY } = process.env;
  const concurrency = Number(BENCH_CONCURRENCY);
  const counts: Counts = {};
  const client = countingClient(MONGO_URL!, counts, Math.max(10, concurrency + 5));
  await client.connect();
  const db = client.db(BENCH_DB!);
  let completed = 0;
  let stop: () => Promise<void>;
  let workerCounters: Counts = {};
  if (BENCH_ENGINE === 'ours') {
    const worker = new Worker(db, 'noop', async () => null, { concurrency });
    await worker.run();
    stop = () => worker.close(5_000);
    workerCounters = worker.counters as unknown as Counts;
    setInterval(() => {
      if (worker.counters.completed !== completed) {
        completed = worker.counters.completed;
        process.send?.({ completed });
      }
    }, 20).unref();
  } else {
    const { Agenda } = await import('agenda');
    const MongoBackend = await loadAgendaBackend();
    const agenda = new Agenda({
      backend: new MongoBackend({ mongo: db }) as never,
      processEvery: 100,
      maxConcurrency: concurrency,
      defaultConcurrency: concurrency,
      lockLimit: concurrency,
      defaultLockLimit: concurrency,
    });
    agenda.define('noop', async () => {});
    agenda.on('complete', () => {
      completed++;
    });
    await agenda.start();
    stop = () => agenda.stop();
    let sent = 0;
    setInterval(() => {
      if (completed !== sent) {
        sent = completed;
        process.send?.({ completed });
      }
    }, 20).unref();
  }
  process.on('message', async (message: { stop?: boolean; reset?: boolean }) => {
    if (message.reset) for (const key of Object.keys(counts)) delete counts[key];
    if (message.stop) {
      await stop();
      process.send?.({ commands: counts, workerCounters }, () => process.exit(0));
    }
  });
  process.send?.({ ready: true });
}

// ---- parent: the matrix -------------------------------------------------------------------
interface ChildMessage {
  ready?: boolean;
  completed?: number;
  commands?: Counts;
  workerCounters?: Counts;
}

interface Cell {
  engine: Engine;
  processes: number;
  concurrency: number;
  jobs: number;
  seconds: number;
  commands: Counts;
  /** Our workers' counters, summed (claim conflicts, empty server-side claims, ...). */
  workerCounters: Counts;
}

async function runCell(
  url: string,
  engine: Engine,
  processes: number,
  concurrency: number,
  jobs: number,
): Promise<Cell> {
  const dbName = `bench_queue_${engine}_${processes}x${concurrency}_${Date.now().toString(36)}`;
  const producerCounts: Counts = {};
  const client = countingClient(url, producerCounts, 30);
  await client.connect();
  const db = client.db(dbName);
  const children: ChildProcess[] = [];
  const completed: number[] = new Array(processes).fill(0);
  const commands: Counts[] = [];
  const workerCounters: Counts[] = [];
  let onProgress = () => {};
  try {
    let add: (i: number) => Promise<unknown>;
    let verify: () => Promise<number>;
    if (engine === 'ours') {
      await ensureIndexes(db, [queueIndexes]);
      const queue = new Queue(db);
      add = (i) => queue.add('noop', { i });
      verify = () => db.collection('jobs').countDocuments({ state: 'completed' });
    } else {
      const { Agenda } = await import('agenda');
      const MongoBackend = await loadAgendaBackend();
      const producer = new Agenda({ backend: new MongoBackend({ mongo: db }) as never });
      await producer.ready;
      add = (i) => producer.now('noop', { i });
      verify = () => db.collection('agendaJobs').countDocuments({ lastFinishedAt: { $ne: null } });
    }
    for (let p = 0; p < processes; p++) {
      const worker = fork(self, ['--child'], {
        env: {
          ...process.env,
          BENCH_ENGINE: engine,
          MONGO_URL: url,
          BENCH_DB: dbName,
          BENCH_CONCURRENCY: String(concurrency),
        },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      children.push(worker);
    }
    await Promise.all(
      children.map(
        (worker, p) =>
          new Promise<void>((resolve, reject) => {
            worker.on('message', (message: ChildMessage) => {
              if (message.ready) resolve();
              if (message.completed !== undefined) {
                completed[p] = message.completed;
                onProgress();
              }
              if (message.commands) commands[p] = message.commands;
              if (message.workerCounters) workerCounters[p] = message.workerCounters;
            });
            worker.once('exit', (code) => reject(new Error(`bench worker exited with ${code}`)));
          }),
      ),
    );
    for (const worker of children) worker.send({ reset: true });
    for (const key of Object.keys(producerCounts)) delete producerCounts[key];

    const started = performance.now();
    const allDone = new Promise<void>((resolve) => {
      onProgress = () => {
        if (completed.reduce((a, b) => a + b, 0) >= jobs) resolve();
      };
    });
    // The producer adds with 20 in flight, the same way for both engines.
    let next = 0;
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (next < jobs) await add(next++);
      }),
    );
    await allDone;
    const seconds = (performance.now() - started) / 1000;

    const stopped = children.map((worker) => new Promise<void>((resolve) => worker.once('exit', () => resolve())));
    for (const worker of children) worker.send({ stop: true });
    await Promise.all(stopped);
    const done = await verify();
    if (done !== jobs)
      throw new Error(`${engine} ${processes}x${concurrency}: ${done} of ${jobs} completed in the database`);
    const total: Counts = { ...producerCounts };
    for (const counts of commands) for (const [k, v] of Object.entries(counts ?? {})) total[k] = (total[k] ?? 0) + v;
    const summed: Counts = {};
    for (const counts of workerCounters)
      for (const [k, v] of Object.entries(counts ?? {})) summed[k] = (summed[k] ?? 0) + v;
    return { engine, processes, concurrency, jobs, seconds, commands: total, workerCounters: summed };
  } finally {
    for (const worker of children) if (worker.exitCode === null) worker.kill('SIGKILL');
    await db.dropDatabase().catch(() => {});
    await client.close();
  }
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const jobs = Number(process.env.BENCH_JOBS ?? (quick ? 500 : 2_000));
  const server = process.env.MONGO_URL ? null : await startOfflineServer({ heap: '3g' });
  const url = process.env.MONGO_URL ?? server!.url;
  const engines = (process.env.BENCH_ENGINES?.split(',') ?? ['ours', 'agenda']).filter(
    (engine): engine is Engine => engine === 'ours' || engine === 'agenda',
  );
  const cells: Cell[] = [];
  try {
    for (const processes of [1, 4]) {
      for (const concurrency of [1, 10, 50]) {
        for (const engine of engines) {
          const cell = await runCell(url, engine, processes, concurrency, jobs);
          cells.push(cell);
          console.error(`${engine} ${processes}x${concurrency}: ${(cell.jobs / cell.seconds).toFixed(1)} jobs/s`);
        }
      }
    }
  } finally {
    await server?.stop();
  }

  const rate = (cell: Cell) => cell.jobs / cell.seconds;
  const lines = [
    `Queue throughput, no-op jobs, ${jobs} per cell (${process.env.MONGO_URL ? 'MONGO_URL' : 'offline mongo-java-server'}, node ${process.version})`,
    '',
    '| engine | processes | concurrency | jobs | seconds | jobs/s | ratio vs agenda | commands/job |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const cell of cells) {
    const peer = cells.find(
      (c) => c.engine === 'agenda' && c.processes === cell.processes && c.concurrency === cell.concurrency,
    );
    const ratio = peer ? (rate(cell) / rate(peer)).toFixed(2) : 'n/a';
    const total = Object.values(cell.commands).reduce((a, b) => a + b, 0);
    lines.push(
      `| ${cell.engine} | ${cell.processes} | ${cell.concurrency} | ${cell.jobs} | ${cell.seconds.toFixed(2)} | ${rate(cell).toFixed(1)} | ${ratio} | ${(total / cell.jobs).toFixed(2)} |`,
    );
  }
  lines.push('', 'MongoDB commands per job, by command (producer + workers, while the cell ran):', '');
  for (const cell of cells) {
    const parts = Object.entries(cell.commands)
      .sort((a, b) => b[1] - a[1])
      .map(([name, n]) => `${name} ${(n / cell.jobs).toFixed(2)}`);
    const extra =
      cell.engine === 'ours'
        ? ` (claim conflicts ${cell.workerCounters.claimConflicts ?? 0}, empty server-side claims ${cell.workerCounters.emptyClaims ?? 0}, searches ${cell.workerCounters.searches ?? 0})`
        : '';
    lines.push(`- ${cell.engine} ${cell.processes}x${cell.concurrency}: ${parts.join(', ')}${extra}`);
  }
  lines.push('', `Rerun: npx node bench/queue.ts   (quick: BENCH_JOBS=500 npx node bench/queue.ts)`);
  console.log(lines.join('\n'));
}

if (process.argv.includes('--child')) await child();
else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
