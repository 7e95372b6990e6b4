// End-to-end queue throughput: add -> claim -> complete of a no-op job, ours (shared/concurrency/queue)
// beside Agenda 6 (@agendajs/mongo-backend) on the same MongoDB server, a fresh database per cell,
// at concurrency 1, 10, 50 with 1 and 4 worker processes. Counts our MongoDB commands per job
// exactly with the driver's command monitoring.
//
//   npx node bench/queue.ts                 # 2,000 jobs per cell
//   BENCH_JOBS=500 npx node bench/queue.ts  # a quicker run (or: npx node bench/queue.ts --quick)
//   BENCH_ENGINES=ours npx node bench/queue.ts
// Uses MONGO_URL when set, otherwise starts the offline server.
import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { type Db, MongoClient } from 'mongodb';
import { startOfflineServer } from '../scripts/mongo/offline-server.ts';
import { Queue, queueIndexes, Worker } from '../shared/concurrency/queue/index.ts';
import { ensureIndexes } from '../shared/core/db.ts';

type Engine = 'ours' | 'agenda';
type Counts = Record<string, number>;

const self = fileURLToPath(import.meta.url);
/** Agenda 6 keeps its MongoDB backend in a separate package (a devDependency). */
async function loadAgendaBackend(): Promise<new (config: { mongo: Db; collection?: string }) => unknown> {
  return (await import('@agendajs/mongo-backend')).MongoBackend;
}

function countingClient(url: string, counts: Counts, poolSize: number, latencyMs?: Counts): MongoClient {
  const client = new MongoClient(url, { monitorCommands: true, maxPoolSize: poolSize });
  client.on('commandStarted', (event) => {
    counts[event.commandName] = (counts[event.commandName] ?? 0) + 1;
  });
  if (latencyMs) {
    const add = (event: { commandName: string; duration: number }) => {
      latencyMs[event.commandName] = (latencyMs[event.commandName] ?? 0) + event.duration;
    };
    client.on('commandSucceeded', add);
    client.on('commandFailed', add);
  }
  return client;
}

// ---- child: one worker process ------------------------------------------------------------
async function child(): Promise<void> {
  const { BENCH_ENGINE, MONGO_URL, BENCH_DB, BENCH_CONCURRENCY } = process.env;
  const concurrency = Number(BENCH_CONCURRENCY);
  const counts: Counts = {};
  const latencyMs: Counts = {};
  const client = countingClient(MONGO_URL!, counts, Math.max(10, concurrency + 5), latencyMs);
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
  let cpuAtReset = process.cpuUsage();
  process.on('message', async (message: { stop?: boolean; reset?: boolean }) => {
    if (message.reset) for (const map of [counts, latencyMs]) for (const key of Object.keys(map)) delete map[key];
    if (message.reset) cpuAtReset = process.cpuUsage();
    if (message.stop) {
      const cpu = process.cpuUsage(cpuAtReset);
      await stop();
      const cpuMs = (cpu.user + cpu.system) / 1000;
      process.send?.({ commands: counts, workerCounters, cpuMs, latencyMs }, () => process.exit(0));
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
  cpuMs?: number;
  latencyMs?: Counts;
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
  /** Seconds until the producer's last add was acknowledged. */
  addSeconds: number;
  /** CPU milliseconds per worker process while the cell ran. */
  workerCpuMs: number[];
  /** CPU milliseconds of the producer (this process) and of the offline server (null with MONGO_URL). */
  producerCpuMs: number;
  serverCpuMs: number | null;
  /** Round-trip milliseconds summed by command name, workers only. */
  latencyMs: Counts;
}

/** CPU time of a local process in ms from /proc (Linux), or null where it cannot be read. */
function processCpuMs(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime in clock ticks (USER_HZ 100)
  } catch {
    return null;
  }
}

async function runCell(
  url: string,
  engine: Engine,
  processes: number,
  concurrency: number,
  jobs: number,
  serverPid: number | undefined,
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
  const workerCpuMs: number[] = [];
  const latencyMs: Counts[] = [];
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
              if (message.cpuMs !== undefined) workerCpuMs[p] = message.cpuMs;
              if (message.latencyMs) latencyMs[p] = message.latencyMs;
            });
            worker.once('exit', (code) => reject(new Error(`bench worker exited with ${code}`)));
          }),
      ),
    );
    for (const worker of children) worker.send({ reset: true });
    for (const key of Object.keys(producerCounts)) delete producerCounts[key];

    const started = performance.now();
    const producerCpu = process.cpuUsage();
    const serverCpuBefore = processCpuMs(serverPid);
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
    const addSeconds = (performance.now() - started) / 1000;
    await allDone;
    const seconds = (performance.now() - started) / 1000;
    const producerCpuUsed = process.cpuUsage(producerCpu);
    const producerCpuMs = (producerCpuUsed.user + producerCpuUsed.system) / 1000;
    const serverCpuAfter = processCpuMs(serverPid);
    const serverCpuMs = serverCpuBefore !== null && serverCpuAfter !== null ? serverCpuAfter - serverCpuBefore : null;

    const stopped = children.map((worker) => new Promise<void>((resolve) => worker.once('exit', () => resolve())));
    for (const worker of children) worker.send({ stop: true });
    await Promise.all(stopped);
    const done = await verify();
    if (done !== jobs)
      throw new Error(`${engine} ${processes}x${concurrency}: ${done} of ${jobs} completed in the database`);
    const total: Counts = { ...producerCounts };
    for (const counts of commands) for (const [k, v] of Object.entries(counts ?? {})) total[k] = (total[k] ?? 0) + v;
    const sum = (maps: Counts[]) => {
      const summed: Counts = {};
      for (const map of maps) for (const [k, v] of Object.entries(map ?? {})) summed[k] = (summed[k] ?? 0) + v;
      return summed;
    };
    const summed = sum(workerCounters);
    return {
      engine,
      processes,
      concurrency,
      jobs,
      seconds,
      commands: total,
      workerCounters: summed,
      addSeconds,
      workerCpuMs,
      producerCpuMs,
      serverCpuMs,
      latencyMs: sum(latencyMs),
    };
  } finally {
    for (const worker of children) if (worker.exitCode === null) worker.kill('SIGKILL');
    await db.dropDatabase().catch(() => {});
    await client.close();
  }
}

/**
 * The same untimed work for either engine on a fresh server, so that neither cell pays for the
 * JVM's just-in-time compilation: inserts, updates and claims by _id, and sorted searches.
 */
async function warmUp(url: string): Promise<void> {
  const client = new MongoClient(url, { maxPoolSize: 20 });
  await client.connect();
  const db = client.db('bench_warmup');
  const docs = db.collection<{ _id: number; state: string; priority: number; runAt: Date }>('docs');
  let next = 0;
  await Promise.all(
    Array.from({ length: 20 }, async () => {
      while (next < 500) {
        const _id = next++;
        await docs.insertOne({ _id, state: 'waiting', priority: _id % 3, runAt: new Date() });
        await docs.findOneAndUpdate({ _id }, { $set: { state: 'active' } }, { returnDocument: 'after' });
        await docs.updateOne({ _id }, { $set: { state: 'completed' } });
        if (_id % 10 === 0)
          await docs.find({ state: 'completed' }, { sort: { priority: 1, runAt: 1 }, limit: 20 }).toArray();
      }
    }),
  );
  await db.dropDatabase();
  await client.close();
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const jobs = Number(process.env.BENCH_JOBS ?? (quick ? 500 : 2_000));
  const engines = (process.env.BENCH_ENGINES?.split(',') ?? ['ours', 'agenda']).filter(
    (engine): engine is Engine => engine === 'ours' || engine === 'agenda',
  );
  // BENCH_CELLS=4x10,4x50 runs only those cells (processes x concurrency); the default is all six.
  const only = process.env.BENCH_CELLS?.split(',').map((cell) => cell.trim());
  const cells: Cell[] = [];
  for (const processes of [1, 4]) {
    for (const concurrency of [1, 10, 50]) {
      if (only && !only.includes(`${processes}x${concurrency}`)) continue;
      for (const engine of engines) {
        // A fresh offline server per cell: it never truncates its oplog, and each change-stream
        // getMore scans all of it, so a shared server would charge later cells for earlier ones.
        const server = process.env.MONGO_URL ? null : await startOfflineServer({ heap: '3g' });
        try {
          const url = process.env.MONGO_URL ?? server!.url;
          if (server) await warmUp(url);
          const cell = await runCell(url, engine, processes, concurrency, jobs, server?.pid);
          cells.push(cell);
          console.error(`${engine} ${processes}x${concurrency}: ${(cell.jobs / cell.seconds).toFixed(1)} jobs/s`);
        } finally {
          await server?.stop();
        }
      }
    }
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
  lines.push('', 'Where the time went (CPU ms per job; the machine has other load too):', '');
  for (const cell of cells) {
    const perJob = (ms: number) => (ms / cell.jobs).toFixed(2);
    const workers = cell.workerCpuMs.map(perJob).join(' + ');
    const server = cell.serverCpuMs === null ? 'n/a' : perJob(cell.serverCpuMs);
    lines.push(
      `- ${cell.engine} ${cell.processes}x${cell.concurrency}: server ${server}, workers ${workers}, producer ${perJob(cell.producerCpuMs)}; all adds acknowledged after ${cell.addSeconds.toFixed(2)} s`,
    );
    const latency = Object.entries(cell.latencyMs)
      .sort((a, b) => b[1] - a[1])
      .map(([name, ms]) => `${name} ${(ms / (cell.commands[name] || 1)).toFixed(2)}`);
    lines.push(`  worker round trips, mean ms: ${latency.join(', ')}`);
  }
  lines.push('', `Rerun: npx node bench/queue.ts   (quick: BENCH_JOBS=500 npx node bench/queue.ts)`);
  console.log(lines.join('\n'));
}

if (process.argv.includes('--child')) await child();
else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
