// The workers under the decision rules, in-process against the test database: the approval worker approves
// by itself only up to APPROVAL_AUTO_APPROVE_MAX_AMOUNT (0 by default: never) and otherwise only recommends;
// the OCR worker's write is pinned to the statuses that still take evidence, so a decided application
// keeps the evidence it was decided on.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiIndexes } from '../../api/services.ts';
import { JOBS_COLLECTION } from '../../shared/concurrency/queue/index.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { APPLICATIONS_COLLECTION, Applications } from '../../shared/loans/applications.ts';
import { Documents, OCR_JOB } from '../../shared/loans/documents.ts';
import { APPROVAL_ACTOR, handleApproval } from '../../workers/approval/handler.ts';
import { linesFromText } from '../../workers/ocr/extract.ts';
import { createOcrHandler, SCORE_JOB } from '../../workers/ocr/handler.ts';
import type { Recognizer } from '../../workers/ocr/recognize.ts';
import type { WorkerContext } from '../../workers/runtime.ts';
import { formLines, formPng } from '../fixtures/documents.ts';
import { openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';
import { jobOf, workerContext } from '../support/worker.ts';

let database: TestDatabase;
let ctx: WorkerContext;
let applications: Applications;
const creator = { id: 'creator-1' };
const reviewer = { id: 'reviewer-1' };
const approver = { id: 'approver-1' };

// Reads the sample form's text without tesseract: these tests are about where the result may be written.
const text = formLines().join('\n');
const fakeRecognizer = {
  recognize: async () => ({ source: 'ocr' as const, text, lines: linesFromText(text, 95), pages: 1 }),
} as unknown as Recognizer;
const ocr = createOcrHandler(fakeRecognizer);

const raw = () => database.db.collection(APPLICATIONS_COLLECTION);

/** Under review with OCR results that agree with what was declared (the worker would recommend approval). */
async function underReview(loanAmount: number) {
  const app = await applications.create(
    { applicantName: 'Ada Lovelace', monthlyIncome: 6000, loanAmount, termMonths: 48 },
    creator,
  );
  const field = <T>(value: T) => ({ value, confidence: 0.95 });
  await raw().updateOne(
    { _id: app._id as never },
    {
      $set: {
        ocr: {
          documentId: 'doc-1',
          uploadedAt: new Date(0),
          fields: {
            applicantName: field('Ada Lovelace'),
            monthlyIncome: field(6000),
            loanAmount: field(loanAmount),
            identityNumber: field('ID-42'),
          },
        },
      },
    },
  );
  return applications.update(app._id, { status: 'under_review', fields: {} }, { version: 1 }, reviewer);
}

const review = (applicationId: string, context: WorkerContext) =>
  handleApproval(jobOf('application.review', { applicationId }), new AbortController().signal, context);

async function uploaded(applicationId: string) {
  return new Documents(database.db).store(
    { applicationId, filename: 'form.png', bytes: formPng(), uploadedBy: reviewer.id },
    'image/png',
  );
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  await ensureIndexes(database.db, apiIndexes);
  ctx = await workerContext(database.db);
  applications = new Applications(database.db, { clock: ctx.clock, queue: ctx.queue });
});
afterAll(() => database.close());

describe(`approval worker: automatic approval only up to a configured amount, on ${target().kind}`, () => {
  it('by default (APPROVAL_AUTO_APPROVE_MAX_AMOUNT=0) it recommends approval but leaves the decision to an approver', async () => {
    const app = await underReview(20_000);
    expect(await review(app._id, ctx)).toEqual({
      applicationId: app._id,
      recommendation: 'auto_approve',
      held: 'loan amount 20000 is above APPROVAL_AUTO_APPROVE_MAX_AMOUNT (0): an approver decides',
    });
    const stored = await raw().findOne({ _id: app._id as never });
    expect(stored).toMatchObject({ status: 'under_review', recommendation: { recommendation: 'auto_approve' } });
    expect(stored!.approvedBy).toBeUndefined();
  });

  it('approves by itself at or below the limit (approvedBy the worker), only recommends above it', async () => {
    const limited = await workerContext(database.db, { APPROVAL_AUTO_APPROVE_MAX_AMOUNT: '20000' });
    const small = await underReview(20_000);
    expect(await review(small._id, limited)).toMatchObject({ decided: 'approved' });
    expect(await raw().findOne({ _id: small._id as never })).toMatchObject({
      status: 'approved',
      approvedBy: APPROVAL_ACTOR,
    });
    const large = await underReview(20_001);
    expect(await review(large._id, limited)).toMatchObject({
      recommendation: 'auto_approve',
      held: expect.any(String),
    });
    expect(await raw().findOne({ _id: large._id as never })).toMatchObject({ status: 'under_review' });
    // An automatic rejection moves no money: it needs no limit.
    const unaffordable = await underReview(2_000_000);
    expect(await review(unaffordable._id, ctx)).toMatchObject({ decided: 'rejected' });
  });
});

describe(`OCR worker: no evidence written onto a decided application, on ${target().kind}`, () => {
  for (const decided of ['approved', 'rejected'] as const) {
    it(`a document read after the application was ${decided}: nothing written, no score job`, async () => {
      const app = await underReview(18_500);
      const doc = await uploaded(app._id);
      const current = await applications.update(app._id, { status: decided, fields: {} }, {}, approver);
      const before = await raw().findOne({ _id: app._id as never });
      const result = await ocr(
        jobOf(OCR_JOB, { documentId: doc.id, applicationId: app._id }),
        new AbortController().signal,
        ctx,
      );
      expect(result).toMatchObject({ outcome: 'frozen', version: current.version });
      expect(await raw().findOne({ _id: app._id as never })).toEqual(before);
      expect(
        await database.db
          .collection(JOBS_COLLECTION)
          .countDocuments({ name: SCORE_JOB, 'data.applicationId': app._id }),
      ).toBe(0);
    });
  }

  it('while under review the same job writes the fields and asks for a score', async () => {
    const app = await underReview(18_500);
    const doc = await uploaded(app._id);
    const result = await ocr(
      jobOf(OCR_JOB, { documentId: doc.id, applicationId: app._id }),
      new AbortController().signal,
      ctx,
    );
    expect(result).toMatchObject({ outcome: 'written', version: app.version + 1 });
    expect(await raw().findOne({ _id: app._id as never })).toMatchObject({
      status: 'under_review',
      ocr: { documentId: doc.id, fields: { loanAmount: { value: 18_500 } } },
    });
    expect(
      await database.db.collection(JOBS_COLLECTION).countDocuments({ name: SCORE_JOB, 'data.applicationId': app._id }),
    ).toBe(1);
  });
});
