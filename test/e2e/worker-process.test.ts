// A worker as an operator runs it: a real process with probes, clear exits, and a drain on SIGTERM.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { freePort } from '../../scripts/mongo/offline-server.ts';
import { Queue } from '../../shared/concurrency/queue/index.ts';
import { Applications } from '../../shared/loans/applications.ts';
import type { WorkerContext } from '../../workers/runtime.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { startNode } from '../support/processes.ts';
import { waitFor, waitForValue } from '../support/wait.ts';
import { workerContext } from '../support/worker.ts';

let database: TestDatabase;
let ctx: WorkerContext;
beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ctx = await workerContext(database.db);
});
afterAll(() => database.close());

const startApproval = (env: Record<string, string>) =>
  startNode('workers/approval/main.ts', { env: { LOG_LEVEL: 'warn', ...env } });

describe('a worker process', () => {
  it('exits 2 with one message on a bad configuration', async () => {
    const worker = startApproval({ MONGO_URL: 'nope', QUEUE_CONCURRENCY: '0' });
    expect(await worker.exited).toBe(2);
    expect(worker.output()).toMatch(/Invalid configuration:[\s\S]*MONGO_URL[\s\S]*QUEUE_CONCURRENCY/);
  });

  it('exits 1 with a clear message when the database cannot be reached', async () => {
    const worker = startApproval({ MONGO_URL: 'mongodb://127.0.0.1:1', DB_TIMEOUT_MS: '300' });
    expect(await worker.exited).toBe(1);
    expect(worker.output()).toContain('cannot reach MongoDB at start');
  });

  it('answers its probes, does its work, and drains on SIGTERM', async () => {
    const port = await freePort();
    const worker = startApproval({
      MONGO_URL: mongoUrl(),
      MONGO_DB: database.name,
      WORKER_PROBE_PORT: String(port),
      HOST: '127.0.0.1',
    });
    const probe = (path: string) =>
      fetch(`http://127.0.0.1:${port}${path}`).then(
        (r) => r.status,
        () => 0,
      );
    await waitFor(async () => (await probe('/ready')) === 200, {
      timeoutMs: 20_000,
      intervalMs: 100,
      what: 'the worker ready',
      detail: worker.output,
    });
    expect(await probe('/health')).toBe(200);

    const applications = new Applications(database.db, { clock: ctx.clock, queue: ctx.queue });
    const app = await applications.create(
      { applicantName: 'Grace Hopper', monthlyIncome: 9000, loanAmount: 5000, termMonths: 12 },
      { id: 'admin' },
    );
    // Moving to under_review publishes 'application.review'; without OCR the worker recommends review.
    await applications.update(app._id, { status: 'under_review', fields: {} }, { version: 1 }, { id: 'admin' });
    const stored = await waitForValue(
      () => database.db.collection('applications').findOne({ _id: app._id as never }),
      (found) => Boolean(found?.recommendation),
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    expect(stored).toMatchObject({ status: 'under_review', recommendation: { recommendation: 'manual_review' } });

    worker.child.kill('SIGTERM');
    expect(await worker.exited).toBe(0);
    expect(await probe('/health')).toBe(0);
  }, 60_000);

  it('redoes the audit entry of a change whose process died before writing it, 10 minutes before the worker started', async () => {
    // A database no worker has seen yet, and a change stamped 10 minutes ago: no time window can matter.
    const fresh = await openTestDatabase(import.meta.filename);
    let worker: ReturnType<typeof startApproval> | undefined;
    try {
      const tenMinutesAgo = { now: () => ctx.clock.now() - 10 * 60_000 };
      const applications = new Applications(fresh.db, { clock: tenMinutesAgo, queue: new Queue(fresh.db) });
      const app = await applications.create(
        { applicantName: 'Ada Lovelace', monthlyIncome: 9000, loanAmount: 5000, termMonths: 12 },
        { id: 'admin' },
      );
      const edited = await applications.update(
        app._id,
        { fields: { purpose: 'a car' } },
        { version: 1 },
        { id: 'admin' },
      );
      // As if the API process had died right after the versioned write.
      const lostId = `${app._id}:${edited.version}`;
      await fresh.db.collection('audit').deleteOne({ _id: lostId as never });

      worker = startApproval({
        MONGO_URL: mongoUrl(),
        MONGO_DB: fresh.name,
        HOST: '127.0.0.1',
        // Ten minutes: only the run at start can redo it within this test.
        REPLAY_INTERVAL_MS: '600000',
      });
      // Only as long as a slow start of the process may take; the replay itself has no deadline.
      const entry = await vi.waitFor(
        async () => {
          const found = await fresh.db.collection('audit').findOne({ _id: lostId as never });
          if (!found) throw new Error(`no audit entry yet:\n${worker?.output()}`);
          return found;
        },
        { timeout: 45_000, interval: 100 },
      );
      expect(entry).toMatchObject({ actor: 'admin', action: 'update', fields: ['purpose'] });
      worker.child.kill('SIGTERM');
      expect(await worker.exited).toBe(0);
    } finally {
      if (worker?.child.exitCode === null) worker.child.kill('SIGKILL');
      await fresh.close();
    }
  }, 60_000);
});
