// The OCR job handler in-process with real tesseract and pdf.js: fields from a generated image and from
// a text-layer PDF, a versioned write that a re-run does not repeat, unreadable documents that fail and
// end dead-lettered with the reason, and proof that recognition makes no network request.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Job, Worker } from '../../shared/concurrency/queue/index.ts';
import { UnreadableDocumentError } from '../../shared/core/errors.ts';
import { APPLICATIONS_COLLECTION, type Applications } from '../../shared/loans/applications.ts';
import {
  type Documents,
  type DocumentType,
  OCR_JOB,
  ocrJobOptions,
  sniffDocumentType,
} from '../../shared/loans/documents.ts';
import { type ApplicationWithOcr, createOcrHandler, type OcrContext, scoreJobId } from '../../workers/ocr/handler.ts';
import { Recognizer } from '../../workers/ocr/recognize.ts';
import { formJpeg, formPdf, formPng, pdfWithoutText, unreadablePng } from '../fixtures/documents.ts';
import { type TestDatabase, target } from '../support/mongo.ts';
import { waitForValue } from '../support/wait.ts';
import { openOcrDatabase } from '../support/worker.ts';

const run = promisify(execFile);
let tdb: TestDatabase;
let ctx: OcrContext;
let applications: Applications;
let documents: Documents;
const recognizer = new Recognizer();
const handle = createOcrHandler(recognizer);
const actor = { id: 'test-admin' };

beforeAll(async () => {
  ({ tdb, ctx, applications, documents } = await openOcrDatabase(import.meta.filename));
  await recognizer.start();
});

afterAll(async () => {
  await recognizer.close();
  await tdb?.close();
});

async function newApplication() {
  return applications.create(
    { applicantName: 'Declared Name', monthlyIncome: 4000, loanAmount: 18_000, termMonths: 36 },
    actor,
  );
}

async function upload(applicationId: string, bytes: Uint8Array) {
  const type = sniffDocumentType(bytes) as DocumentType;
  return documents.store({ applicationId, filename: 'doc', bytes, uploadedBy: actor.id }, type);
}

function jobFor(documentId: string, applicationId: string): Job<unknown> {
  const now = new Date();
  return {
    id: `document.ocr:${documentId}`,
    name: OCR_JOB,
    data: { documentId, applicationId },
    priority: 0,
    attemptsMade: 0,
    attemptsStarted: 1,
    stalledCount: 0,
    runAt: now,
    createdAt: now,
  };
}

const readApplication = (id: string) =>
  tdb.db.collection<ApplicationWithOcr>(APPLICATIONS_COLLECTION).findOne({ _id: id });

describe(`OCR handler on ${target().kind}`, () => {
  it('reads a generated PNG: the four fields with their values and confidences, stored with a version bump', async () => {
    const app = await newApplication();
    const doc = await upload(app._id, formPng());
    const result = await handle(jobFor(doc.id, app._id), new AbortController().signal, ctx);
    expect(result.outcome).toBe('written');
    expect(result.source).toBe('ocr');
    const { fields } = result;
    expect(fields.applicantName?.value).toBe('Maria Jensen');
    expect(fields.monthlyIncome?.value).toBe(4250);
    expect(fields.loanAmount?.value).toBe(18_500);
    expect(fields.identityNumber?.value).toBe('ID-48213075');
    for (const field of Object.values(fields)) {
      expect(field.confidence).toBeGreaterThan(0.6);
      expect(field.confidence).toBeLessThanOrEqual(1);
    }
    const stored = await readApplication(app._id);
    expect(stored?.version).toBe(app.version + 1);
    expect(result.version).toBe(stored?.version);
    expect(stored?.ocr).toMatchObject({ documentId: doc.id, source: 'ocr', sha256: doc.metadata.sha256 });
    expect(stored?.ocr?.fields).toEqual(fields);
    expect(stored?.ocr?.textExcerpt).toContain('Monthly income');
    const score = await ctx.queue.getJob(scoreJobId(app._id, doc.id));
    expect(score).toMatchObject({ name: 'application.score', data: { applicationId: app._id, documentId: doc.id } });
  });

  it('gives the same result on a re-run with no second effect: version and score jobs unchanged', async () => {
    const app = await newApplication();
    const doc = await upload(app._id, formJpeg({ ...sampleOther }));
    const first = await handle(jobFor(doc.id, app._id), new AbortController().signal, ctx);
    const afterFirst = await readApplication(app._id);
    const second = await handle(jobFor(doc.id, app._id), new AbortController().signal, ctx);
    const afterSecond = await readApplication(app._id);
    expect(first.outcome).toBe('written');
    expect(second.outcome).toBe('unchanged');
    expect(second.fields).toEqual(first.fields);
    expect(first.fields.applicantName?.value).toBe('Omar Haddad');
    expect(first.fields.monthlyIncome?.value).toBe(3150);
    expect(first.fields.loanAmount?.value).toBe(9800);
    expect(first.fields.identityNumber?.value).toBe('NX-7730215');
    expect(afterSecond?.version).toBe(afterFirst?.version);
    expect(afterSecond?.ocr).toEqual(afterFirst?.ocr);
    const scores = await ctx.queue.collection.countDocuments({
      name: 'application.score',
      'data.applicationId': app._id,
    });
    expect(scores).toBe(1);
  });

  it('reads a PDF text layer with pdf.js (no OCR) at the text-layer confidence', async () => {
    const app = await newApplication();
    const doc = await upload(app._id, await formPdf());
    const result = await handle(jobFor(doc.id, app._id), new AbortController().signal, ctx);
    expect(result.source).toBe('pdf-text');
    expect(result.fields).toMatchObject({
      applicantName: { value: 'Maria Jensen', confidence: 0.99 },
      monthlyIncome: { value: 4250, confidence: 0.99 },
      loanAmount: { value: 18_500, confidence: 0.99 },
      identityNumber: { value: 'ID-48213075', confidence: 0.99 },
    });
  });

  it('keeps the fields of a newer document when an older one is read after it', async () => {
    const app = await newApplication();
    const older = await upload(app._id, await formPdf());
    await new Promise((resolve) => setTimeout(resolve, 20));
    const newer = await upload(app._id, await formPdf({ ...sampleOther }));
    await handle(jobFor(newer.id, app._id), new AbortController().signal, ctx);
    const before = await readApplication(app._id);
    const late = await handle(jobFor(older.id, app._id), new AbortController().signal, ctx);
    expect(late.outcome).toBe('superseded');
    const after = await readApplication(app._id);
    expect(after?.version).toBe(before?.version);
    expect(after?.ocr?.documentId).toBe(newer.id);
    expect(await ctx.queue.getJob(scoreJobId(app._id, older.id))).toBeNull();
  });

  it('fails an unreadable image and a PDF without text layer with the reason, leaving the application alone', async () => {
    const app = await newApplication();
    const image = await upload(app._id, unreadablePng());
    const scan = await upload(app._id, await pdfWithoutText());
    const signal = new AbortController().signal;
    await expect(handle(jobFor(image.id, app._id), signal, ctx)).rejects.toThrow(UnreadableDocumentError);
    await expect(handle(jobFor(image.id, app._id), signal, ctx)).rejects.toThrow(/no text found/);
    await expect(handle(jobFor(scan.id, app._id), signal, ctx)).rejects.toThrow(/no text layer/);
    const stored = await readApplication(app._id);
    expect(stored?.version).toBe(app.version);
    expect(stored?.ocr).toBeUndefined();
  });

  it('through the queue: an unreadable document is retried, then dead-lettered with the reason', async () => {
    const app = await newApplication();
    const doc = await upload(app._id, unreadablePng());
    const options = { ...ocrJobOptions(doc.id), backoff: { type: 'fixed' as const, delay: 50 } };
    await ctx.queue.add(OCR_JOB, { documentId: doc.id, applicationId: app._id }, options);
    const worker = new Worker(tdb.db, OCR_JOB, (job, signal) => handle(job, signal, ctx), {
      clock: ctx.clock,
      pollMs: 50,
    });
    await worker.run();
    try {
      const job = await waitForValue(
        () => ctx.queue.getJob(options.jobId),
        (found) => found?.state === 'failed',
        { timeoutMs: 30_000, intervalMs: 100 },
      );
      expect(job?.state).toBe('failed');
      expect(job?.attemptsMade).toBe(3);
      expect(job?.lastError).toMatchObject({ name: 'UnreadableDocumentError' });
      expect(job?.lastError?.message).toMatch(/no text found/);
    } finally {
      await worker.close();
    }
  });
});

describe('no network at run time', () => {
  const fixture = fileURLToPath(new URL('../fixtures/ocr-offline.ts', import.meta.url));
  const guard = fileURLToPath(new URL('../fixtures/no-network.ts', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'ocr-offline-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const runGuarded = async (name: string, args: string[] = []) => {
    const log = join(dir, `${name}.log`);
    const { stdout } = await run(process.execPath, ['--import', guard, fixture, ...args], {
      env: { ...process.env, NETWORK_GUARD_LOG: log },
      timeout: 60_000,
    });
    let attempts: { kind: string; target: string; threadId: number }[] = [];
    try {
      attempts = readFileSync(log, 'utf8')
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line));
    } catch {
      attempts = [];
    }
    return { output: JSON.parse(stdout.trim().split('\n').at(-1)!), attempts };
  };

  it('reads an image and a PDF while every non-loopback connection is refused; only the control was tried', async () => {
    const { output, attempts } = await runGuarded('offline');
    expect(output.image.monthlyIncome.value).toBe(4250);
    expect(output.pdf.identityNumber.value).toBe('ID-48213075');
    // The control fetch from a worker thread shows the guard reaches threads like tesseract's.
    expect(output.control).toMatch(/^refused: network refused by the test guard/);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({ kind: 'fetch' });
    expect(attempts[0]!.threadId).toBeGreaterThan(0);
  });

  it('control: without langPath tesseract reaches for the CDN from its own thread, and the guard sees it', async () => {
    const { output, attempts } = await runGuarded('cdn', ['cdn-control']);
    expect(output.control).not.toBe('started');
    expect(attempts.length).toBeGreaterThan(0);
    expect(attempts[0]!.target).toMatch(/^https:\/\/cdn\.jsdelivr\.net\//);
    expect(attempts[0]!.threadId).toBeGreaterThan(0);
  });
});

const sampleOther = {
  applicantName: 'Omar Haddad',
  monthlyIncome: '3,150',
  loanAmount: 'USD 9,800',
  identityNumber: 'NX-7730215',
};
