// The OCR worker as a real process (workers/ocr/main.ts): SIGKILLed in the middle of reading a document,
// its job is taken over by another OCR process once the lease runs out, and completes there with one
// versioned write.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiIndexes } from '../../api/services.ts';
import { Queue } from '../../shared/concurrency/queue/index.ts';
import { ServerClock } from '../../shared/core/clock.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { APPLICATIONS_COLLECTION, Applications } from '../../shared/loans/applications.ts';
import { Documents, OCR_JOB, ocrJobOptions } from '../../shared/loans/documents.ts';
import type { ApplicationWithOcr, OcrResult } from '../../workers/ocr/handler.ts';
import { formPng } from '../fixtures/documents.ts';
import { mongoUrl, openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';

const main = fileURLToPath(new URL('../../workers/ocr/main.ts', import.meta.url));
const LEASE_MS = 2_000;

interface OcrProcess {
  child: ChildProcess;
  started: Promise<void>;
  output(): string;
}

function startOcrProcess(dbName: string): OcrProcess {
  const child = spawn(process.execPath, [main], {
    env: {
      ...process.env,
      MONGO_URL: mongoUrl(),
      MONGO_DB: dbName,
      QUEUE_LEASE_MS: String(LEASE_MS),
      HOST: '127.0.0.1',
      WORKER_PROBE_PORT: '0',
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const started = new Promise<void>((resolve, reject) => {
    const collect = (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('"worker started"')) resolve();
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    child.once('exit', (code, signal) => reject(new Error(`OCR worker exited (${code ?? signal}) early:\n${out}`)));
  });
  started.catch(() => {});
  return { child, started, output: () => out };
}

async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe(`OCR worker processes on ${target().kind}`, () => {
  let tdb: TestDatabase;
  const processes: OcrProcess[] = [];

  beforeAll(async () => {
    tdb = await openTestDatabase(import.meta.filename);
    await ensureIndexes(tdb.db, apiIndexes);
  });
  afterAll(async () => {
    for (const p of processes) p.child.kill('SIGKILL');
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
    processes.push(first);
    await first.started;
    await queue.add(OCR_JOB, { documentId: doc.id, applicationId: app._id }, ocrJobOptions(doc.id));
    const claimed = await waitFor(
      () => queue.getJob(jobId),
      (job) => job?.state === 'active',
      30_000,
    );
    const exited = new Promise((resolve) => first.child.once('exit', resolve));
    first.child.kill('SIGKILL');
    await exited;
    const afterKill = await queue.getJob(jobId);
    // Killed mid-job: nothing completed and nothing written yet.
    expect(afterKill?.state).toBe('active');
    expect((await tdb.db.collection<ApplicationWithOcr>(APPLICATIONS_COLLECTION).findOne({ _id: app._id }))?.ocr).toBe(
      undefined,
    );

    const second = startOcrProcess(tdb.name);
    processes.push(second);
    await second.started;
    const done = await waitFor(
      () => queue.getJob<unknown, OcrResult>(jobId),
      (job) => job?.state === 'completed' || job?.state === 'failed',
      60_000,
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
    const code = new Promise((resolve) => second.child.once('exit', (c) => resolve(c)));
    second.child.kill('SIGTERM');
    expect(await code).toBe(0);
  });
});
