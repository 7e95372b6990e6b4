// The OCR worker's handler with real tesseract, through the queue: a tiny image whose header declares
// 100000x100000 pixels is refused unread and dead-lettered with the reason, and the same recognizer goes
// on reading real documents (before, tesseract allocated for the declared size and never answered).
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Worker } from '../../shared/concurrency/queue/index.ts';
import { APPLICATIONS_COLLECTION, type Applications } from '../../shared/loans/applications.ts';
import {
  type Documents,
  type DocumentType,
  OCR_JOB,
  ocrJobOptions,
  sniffDocumentType,
} from '../../shared/loans/documents.ts';
import { type ApplicationWithOcr, createOcrHandler, type OcrContext } from '../../workers/ocr/handler.ts';
import { Recognizer } from '../../workers/ocr/recognize.ts';
import { formPng } from '../fixtures/documents.ts';
import { jpegDeclaring, pngDeclaring } from '../fixtures/image-headers.ts';
import type { TestDatabase } from '../support/mongo.ts';
import { openOcrDatabase } from '../support/worker.ts';

let tdb: TestDatabase;
let ctx: OcrContext;
let applications: Applications;
let documents: Documents;
let worker: Worker;
const recognizer = new Recognizer();
const handle = createOcrHandler(recognizer);

beforeAll(async () => {
  ({ tdb, ctx, applications, documents } = await openOcrDatabase(import.meta.filename));
  await recognizer.start();
  // One job at a time, as the OCR worker process runs: a stuck image would hold up the next one.
  worker = new Worker(tdb.db, OCR_JOB, (job, signal) => handle(job, signal, ctx), {
    clock: ctx.clock,
    pollMs: 50,
    concurrency: 1,
  });
  await worker.run();
}, 60_000);

afterAll(async () => {
  await worker?.close(1_000);
  await recognizer.close();
  await tdb?.close();
});

async function queued(bytes: Uint8Array) {
  const app = await applications.create(
    { applicantName: 'Maria Jensen', monthlyIncome: 4250, loanAmount: 18_500, termMonths: 36 },
    { id: 'test-admin' },
  );
  const type = sniffDocumentType(bytes) as DocumentType;
  const doc = await documents.store({ applicationId: app._id, filename: 'doc', bytes, uploadedBy: 'test-admin' }, type);
  const options = { ...ocrJobOptions(doc.id), backoff: { type: 'fixed' as const, delay: 50 } };
  await ctx.queue.add(OCR_JOB, { documentId: doc.id, applicationId: app._id }, options);
  return { jobId: options.jobId, applicationId: app._id };
}

async function settled(jobId: string) {
  return vi.waitFor(
    async () => {
      const job = await ctx.queue.getJob(jobId);
      if (job?.state !== 'failed' && job?.state !== 'completed') throw new Error(`job is ${job?.state}`);
      return job;
    },
    { timeout: 30_000, interval: 100 },
  );
}

describe('OCR of an image declaring huge dimensions', () => {
  it('dead-letters a PNG declaring 100000x100000 and a JPEG declaring 65000x64000 with the reason, then reads a real form', async () => {
    const png = await queued(pngDeclaring(100_000, 100_000));
    const jpeg = await queued(jpegDeclaring(65_000, 64_000));
    const form = await queued(formPng());
    for (const [{ jobId }, size] of [
      [png, '100000x100000'],
      [jpeg, '65000x64000'],
    ] as const) {
      const job = await settled(jobId);
      expect(job.state).toBe('failed');
      expect(job.attemptsMade).toBe(3);
      expect(job.lastError).toMatchObject({ name: 'UnreadableDocumentError' });
      expect(job.lastError?.message).toContain(`declares ${size} pixels`);
    }
    const read = await settled(form.jobId);
    expect(read.state).toBe('completed');
    const app = await tdb.db
      .collection<ApplicationWithOcr>(APPLICATIONS_COLLECTION)
      .findOne({ _id: form.applicationId });
    expect(app?.ocr?.fields).toHaveProperty('applicantName');
  }, 90_000);
});
