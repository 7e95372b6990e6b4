// Every job type is published with retries and backoff: a handler that fails once is run again and
// completes; one that keeps failing is dead-lettered with its error after its attempts. The jobs are
// published the way their producers publish them; time is an injected clock that the test moves past
// each backoff, so no test waits for one.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  JOBS_COLLECTION,
  type Job,
  type JobDocument,
  Queue,
  queueIndexes,
  Worker,
} from '../../shared/concurrency/queue/index.ts';
import { ServerClock } from '../../shared/core/clock.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { Applications } from '../../shared/loans/applications.ts';
import { OCR_JOB, ocrJobOptions } from '../../shared/loans/documents.ts';
import { SCORE_JOB, scoreJobOptions } from '../../workers/ocr/handler.ts';
import { startWorker as startWorkerProcess } from '../../workers/runtime.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const HOUR = 3_600_000;
let database: TestDatabase;
const admin = { id: 'admin-1' };
/** Four eyes: whoever created an application may not approve it. */
const approver = { id: 'approver-1' };

/** The server's time as every party here sees it, moving only when the test says so. */
class ManualClock extends ServerClock {
  t = Date.now();
  override now() {
    return this.t;
  }
  override async sync() {
    return 0;
  }
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  await ensureIndexes(database.db, [queueIndexes]);
});
afterAll(() => database.close());

/** One job of each type, published by the code that publishes it in production. */
async function publishOneOfEach(clock: ManualClock): Promise<Map<string, string>> {
  const queue = new Queue(database.db, { clock });
  const applications = new Applications(database.db, { clock, queue });
  const input = { applicantName: 'Ada Lovelace', monthlyIncome: 9000, loanAmount: 5000, termMonths: 12 };
  const reviewed = await applications.create(input, admin);
  await applications.update(reviewed._id, { status: 'under_review', fields: {} }, { version: 1 }, admin);
  const approved = await applications.create(input, admin);
  await applications.update(approved._id, { status: 'under_review', fields: {} }, { version: 1 }, admin);
  await applications.update(approved._id, { status: 'approved', fields: {} }, { version: 2 }, approver);
  const documentId = `DOC-${crypto.randomUUID()}`;
  const score = await queue.add(
    SCORE_JOB,
    { applicationId: reviewed._id, documentId },
    scoreJobOptions(reviewed._id, documentId),
  );
  const ocr = await queue.add(OCR_JOB, { applicationId: reviewed._id, documentId }, ocrJobOptions(documentId));
  return new Map([
    ['application.review', `application.review:${reviewed._id}:2`],
    ['application.approved', `application.approved:${approved._id}:3`],
    [SCORE_JOB, score.id],
    [OCR_JOB, ocr.id],
  ]);
}

const jobDocs = (ids: string[]) =>
  database.db
    .collection<JobDocument>(JOBS_COLLECTION)
    .find({ _id: { $in: ids } })
    .toArray();

/**
 * Runs the jobs to their end: waits until none is running or due, then moves the clock past every
 * backoff, until each is completed or failed.
 */
async function runToTheEnd(clock: ManualClock, ids: string[]): Promise<JobDocument[]> {
  for (let round = 0; round < 20; round++) {
    const docs = await vi.waitFor(
      async () => {
        const found = await jobDocs(ids);
        const busy = found.filter(
          (doc) => doc.state === 'active' || (doc.state === 'waiting' && doc.runAt.getTime() <= clock.now()),
        );
        if (busy.length > 0) throw new Error(`still running or due: ${busy.map((doc) => doc._id).join(', ')}`);
        return found;
      },
      { timeout: 30_000, interval: 50 },
    );
    if (docs.every((doc) => doc.state === 'completed' || doc.state === 'failed')) return docs;
    clock.t += HOUR;
  }
  throw new Error('jobs did not finish in 20 rounds');
}

function startWorker(clock: ManualClock, handler: (job: Job) => Promise<unknown>) {
  const worker = new Worker(database.db, ['application.review', 'application.approved', SCORE_JOB, OCR_JOB], handler, {
    clock,
    wakeUp: 'poll',
    pollMs: 50,
    concurrency: 4,
  });
  return worker;
}

describe('job retries', () => {
  it('runs again, after its backoff, every job type whose handler failed once, and completes it', async () => {
    const clock = new ManualClock(database.db);
    const published = await publishOneOfEach(clock);
    const ids = [...published.values()];
    const runs = new Map<string, number>();
    const worker = startWorker(clock, async (job) => {
      const run = (runs.get(job.id) ?? 0) + 1;
      runs.set(job.id, run);
      if (run === 1) throw new Error(`transient failure of ${job.name}`);
      return { ok: true };
    });
    await worker.run();
    try {
      const docs = await runToTheEnd(clock, ids);
      for (const [name, id] of published) {
        const doc = docs.find((d) => d._id === id);
        expect(doc, name).toMatchObject({ state: 'completed', attemptsMade: 1, result: { ok: true } });
        expect(runs.get(id), name).toBe(2);
      }
    } finally {
      await worker.close(5_000);
    }
  });

  it('dead-letters every job type with its last error once its attempts are used up', async () => {
    const clock = new ManualClock(database.db);
    const published = await publishOneOfEach(clock);
    const ids = [...published.values()];
    const runs = new Map<string, number>();
    const worker = startWorker(clock, async (job) => {
      runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
      throw new Error(`${job.name} cannot be done (run ${runs.get(job.id)})`);
    });
    await worker.run();
    try {
      const docs = await runToTheEnd(clock, ids);
      for (const [name, id] of published) {
        const doc = docs.find((d) => d._id === id)!;
        expect(doc.attempts, name).toBeGreaterThan(1);
        expect(doc.backoff, name).toMatchObject({ type: 'exponential' });
        expect(doc, name).toMatchObject({
          state: 'failed',
          attemptsMade: doc.attempts,
          lastError: { message: `${name} cannot be done (run ${doc.attempts})` },
        });
        expect(runs.get(id), name).toBe(doc.attempts);
      }
    } finally {
      await worker.close(5_000);
    }
  });

  it("a worker process's log says whether a failed job runs again or is dead-lettered", async () => {
    const lines: Record<string, unknown>[] = [];
    const capture = (line: unknown) => {
      if (typeof line === 'string' && line.includes('"job failed')) lines.push(JSON.parse(line));
    };
    const log = vi.spyOn(console, 'log').mockImplementation(capture);
    const error = vi.spyOn(console, 'error').mockImplementation(capture);
    const running = await startWorkerProcess(
      { name: 'retry-log', jobNames: ['test.flaky'], handler: async () => Promise.reject(new Error('no luck')) },
      { MONGO_URL: mongoUrl(), MONGO_DB: database.name, HOST: '127.0.0.1', LOG_LEVEL: 'warn' },
    );
    try {
      const queue = new Queue(database.db);
      const job = await queue.add('test.flaky', {}, { attempts: 2, backoff: { type: 'fixed', delay: 0 } });
      await vi.waitFor(async () => expect((await queue.getJob(job.id))?.state).toBe('failed'), {
        timeout: 30_000,
        interval: 50,
      });
      expect(lines).toMatchObject([
        {
          level: 'warn',
          msg: 'job failed; it runs again after its backoff',
          attempt: 1,
          attempts: 2,
          error: 'no luck',
        },
        { level: 'error', msg: 'job failed on its last attempt; it is dead-lettered', attempt: 2, attempts: 2 },
      ]);
    } finally {
      await running.stop('test over');
      log.mockRestore();
      error.mockRestore();
    }
  });
});
