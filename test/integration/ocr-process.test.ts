// The OCR worker as a real process (workers/ocr/main.ts): SIGKILLed in the middle of reading a document,
// its job is taken over by another OCR process once the lease runs out, and completes there with one
// versioned write.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiIndexes } from '../../api/services.ts';
import { Queue } from '../../shared/concurrency/queue/index.ts';
import { ServerClock } from '../../shared/core/clock.ts';
import { APPLICATIONS_COLLECTION, Applications } from '../../shared/loans/applications.ts';
import { Documents, OCR_JOB, ocrJobOptions } from '../../shared/loans/documents.ts';
import type { ApplicationWithOcr, OcrResult } from '../../workers/ocr/handler.ts';
import { formPng } from '../fixtures/documents.ts';
import { mongoUrl, openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';
import { killStarted, startNode } from '../support/processes.ts';
import { waitForValue } from '../support/wait.ts';

const main = fileURLToPath(new URL('../../workers/ocr/main.ts', import.meta.url));
const LEASE_MS = 2_000;

const startOcrProcess = (dbName: string) =>
  startNode(main, {
    env: {
      MONGO_URL: mongoUrl(),
      MONGO_DB: dbName,
      QUEUE_LEASE_MS: String(LEASE_MS),
      HOST: '127.0.0.1',
      WORKER_PROBE_PORT: '0',
      LOG_LEVEL: 'info',
    },
  });

describe(`OCR worker processes on ${target().kind}`, () => {
  let tdb: TestDatabase;

  beforeAll(async () => {
    tdb = await openTestDatabase(import.meta.filename, { indexes: apiIndexes });
  });
  afterAll(async () => {
    await killStarted();
    await tdb?.close();
  });

  it('SIGKILL mid-job: the job completes in another worker process after the lease', async () => {
    const clock = new ServerClock(tdb.db);
    const queue = new Queue(tdb.db, { clock });
    const app = await new Applications(tdb.db, { clock, queue }).create(
      { applicantName: 'Maria Jensen', monthlyIncome: 4250, loanAmount: 18_500, termMonths: 36 },
      { id: 'test' },
    );
    // A long page, so that the first worker is surely still reading it when it is killed.
    const doc = await new Documents(tdb.db).store(
      { applicationId: app._id, filename: 'long.png', bytes: formPng(undefined, 30), uploadedBy: 'test' },
      'image/png',
    );
    const { jobId } = ocrJobOptions(doc.id);

    const first = startOcrProcess(tdb.name);
    await first.printed('"worker started"', 'all');
    await queue.add(OCR_JOB, { documentId: doc.id, applicationId: app._id }, ocrJobOptions(doc.id));
    const claimed = await waitForValue(
      () => queue.getJob(jobId),
      (job) => job?.state === 'active',
      { timeoutMs: 30_000 },
    );
    await first.kill();
    const afterKill = await queue.getJob(jobId);
    // Killed mid-job: nothing completed and nothing written yet.
    expect(afterKill?.state).toBe('active');
    expect((await tdb.db.collection<ApplicationWithOcr>(APPLICATIONS_COLLECTION).findOne({ _id: app._id }))?.ocr).toBe(
      undefined,
    );

    const second = startOcrProcess(tdb.name);
    await second.printed('"worker started"', 'all');
    const done = await waitForValue(
      () => queue.getJob<unknown, OcrResult>(jobId),
      (job) => job?.state === 'completed' || job?.state === 'failed',
      { timeoutMs: 60_000 },
    );
    expect(done?.state, JSON.stringify(done?.lastError)).toBe('completed');
    expect(done?.stalledCount).toBe(1);
    expect(done?.lockedBy).not.toBe(claimed?.lockedBy);
    expect(done?.result?.fields.monthlyIncome?.value).toBe(4250);
    const stored = await tdb.db.collection<ApplicationWithOcr>(APPLICATIONS_COLLECTION).findOne({ _id: app._id });
    expect(stored?.version).toBe(app.version + 1);
    expect(stored?.ocr?.documentId).toBe(doc.id);
    expect(stored?.ocr?.fields.identityNumber?.value).toBe('ID-48213075');
    expect(await queue.getJob(`application.score:${app._id}:${doc.id}`)).not.toBeNull();

    // Drains on SIGTERM and exits 0.
    await second.stop();
    expect(second.child.exitCode).toBe(0);
  });
});
