// The queue across worker PROCESSES: exactly-once effects under load, and a job whose worker is
// SIGKILLed mid-run completes in another worker once the lease runs out.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type JobDocument, Queue, queueIndexes } from '../../shared/concurrency/queue/index.ts';
import { mongoUrl, openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';
import { killStarted, type NodeProcess, startNode } from '../support/processes.ts';
import { waitFor } from '../support/wait.ts';

const fixture = fileURLToPath(new URL('../fixtures/queue-worker.ts', import.meta.url));

const spawnWorker = (dbName: string, env: Record<string, string>) =>
  startNode(fixture, { env: { MONGO_URL: mongoUrl(), QUEUE_DB: dbName, ...env } });

/** SIGTERM; the fixture then prints its counters as one JSON line. */
async function stopWorker(worker: NodeProcess): Promise<Record<string, number> | null> {
  if (worker.child.exitCode !== null || worker.child.signalCode !== null) return null;
  await worker.stop();
  return (worker.events()[0] as Record<string, number> | undefined) ?? null;
}

describe(`queue across worker processes on ${target().kind}`, () => {
  let tdb: TestDatabase;

  beforeAll(async () => {
    tdb = await openTestDatabase(import.meta.filename, { indexes: [queueIndexes] });
  });
  afterAll(async () => {
    await killStarted();
    await tdb.close();
  });

  it('5 processes x concurrency 10 run 5,000 jobs: every effect exactly once, none lost', async () => {
    const started = Date.now();
    const pool = Array.from({ length: 5 }, () =>
      spawnWorker(tdb.name, { QUEUE_NAME: 'effect', QUEUE_CONCURRENCY: '10', QUEUE_LEASE_MS: '30000' }),
    );
    await Promise.all(pool.map((w) => w.printed('ready')));
    const queue = new Queue(tdb.db);
    const jobs = tdb.db.collection<JobDocument>('jobs');
    const addStarted = Date.now();
    for (let chunk = 0; chunk < 10; chunk++) {
      await queue.addBulk(Array.from({ length: 500 }, (_, i) => ({ name: 'effect', data: { n: chunk * 500 + i } })));
    }
    await waitFor(async () => (await jobs.countDocuments({ state: 'completed' })) === 5_000, {
      timeoutMs: 120_000,
      intervalMs: 1_000,
    });
    const processedMs = Date.now() - addStarted;
    const counters = await Promise.all(pool.map(stopWorker));

    expect(await jobs.countDocuments({})).toBe(5_000);
    expect(await jobs.countDocuments({ state: 'completed' })).toBe(5_000);
    const effects = await tdb.db
      .collection('effects')
      .find({}, { projection: { _id: 1 } })
      .toArray();
    expect(effects).toHaveLength(5_000);
    expect(new Set(effects.map((e) => e._id)).size).toBe(5_000);
    const completedByWorkers = counters.reduce((sum, c) => sum + (c?.completed ?? 0), 0);
    expect(completedByWorkers).toBe(5_000);
    // Every process took part.
    for (const c of counters) expect(c?.completed ?? 0).toBeGreaterThan(0);
    console.log(
      `5 x 10 x 5000: processed in ${processedMs} ms (${Math.round(5_000 / (processedMs / 1000))} jobs/s), ` +
        `test ${Date.now() - started} ms; per process completed ${counters.map((c) => c?.completed).join(', ')}; ` +
        `claim conflicts ${counters.reduce((s, c) => s + (c?.claimConflicts ?? 0), 0)}, searches ${counters.reduce((s, c) => s + (c?.searches ?? 0), 0)}`,
    );
  }, 150_000);

  it('a job whose worker is SIGKILLed mid-run completes in another worker after the lease', async () => {
    const env = { QUEUE_NAME: 'fragile', QUEUE_CONCURRENCY: '1', QUEUE_LEASE_MS: '1500' };
    const doomed = spawnWorker(tdb.name, { ...env, QUEUE_MODE: 'hang' });
    await doomed.printed('ready');
    const queue = new Queue(tdb.db);
    const job = await queue.add('fragile', { payload: 1 }, { attempts: 1 });
    const markers = tdb.db.collection<{ _id: string; pid: number }>('markers');
    await waitFor(async () => (await markers.findOne({ _id: job.id }))?.pid === doomed.pid, {
      timeoutMs: 15_000,
      intervalMs: 100,
    });
    await doomed.kill();
    const killedAt = Date.now();

    const rescuer = spawnWorker(tdb.name, { ...env, QUEUE_MODE: 'effects' });
    await rescuer.printed('ready');
    await waitFor(async () => (await queue.getJob(job.id))?.state === 'completed', {
      timeoutMs: 20_000,
      intervalMs: 100,
    });
    const done = await queue.getJob<unknown, { pid: number }>(job.id);
    expect(done?.result?.pid).toBe(rescuer.pid);
    expect(done?.stalledCount).toBe(1);
    expect(done?.attemptsMade).toBe(0); // a stall is not a failed attempt
    expect(done?.attemptsStarted).toBe(2);
    const effect = await tdb.db.collection<{ _id: string; pid: number }>('effects').findOne({ _id: job.id });
    expect(effect?.pid).toBe(rescuer.pid);
    console.log(`SIGKILLed job completed by another worker ${Date.now() - killedAt} ms after the kill (lease 1500 ms)`);
    await stopWorker(rescuer);
  }, 60_000);
});
