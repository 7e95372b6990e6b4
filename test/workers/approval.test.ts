// The approval worker's handler, in-process against the test database.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JOBS_COLLECTION, queueIndexes } from '../../shared/concurrency/queue/index.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { APPLICATIONS_COLLECTION, Applications } from '../../shared/loans/applications.ts';
import { AUDIT_COLLECTION } from '../../shared/loans/audit.ts';
import { APPROVAL_ACTOR, handleApproval } from '../../workers/approval/handler.ts';
import type { WorkerContext } from '../../workers/runtime.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { jobOf, workerContext } from '../support/worker.ts';

let database: TestDatabase;
let ctx: WorkerContext;
let applications: Applications;
const admin = { id: 'admin-1' };

const agreeingOcr = (income: number, amount: number, name: string) => ({
  documentId: 'doc-1',
  fields: {
    applicantName: { value: name, confidence: 0.93 },
    monthlyIncome: { value: income, confidence: 0.91 },
    loanAmount: { value: amount, confidence: 0.92 },
    identityNumber: { value: 'ID-42', confidence: 0.9 },
  },
});

/** An application under review (version 2), with OCR results that agree with what was declared. */
async function underReview(input: { monthlyIncome: number; loanAmount: number; withOcr?: boolean }) {
  const created = await applications.create(
    { applicantName: 'Ada Lovelace', monthlyIncome: input.monthlyIncome, loanAmount: input.loanAmount, termMonths: 48 },
    admin,
  );
  if (input.withOcr !== false) {
    await database.db
      .collection(APPLICATIONS_COLLECTION)
      .updateOne(
        { _id: created._id as never },
        { $set: { ocr: agreeingOcr(input.monthlyIncome, input.loanAmount, 'Ada Lovelace') } },
      );
  }
  return applications.update(created._id, { status: 'under_review', fields: {} }, { version: 1 }, admin);
}

const review = (applicationId: string, context = ctx) =>
  handleApproval(jobOf('application.review', { applicationId }), new AbortController().signal, context);

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  await ensureIndexes(database.db, [queueIndexes]);
  // These loans are small enough for the worker to approve them by itself.
  ctx = await workerContext(database.db, { APPROVAL_AUTO_APPROVE_MAX_AMOUNT: '50000' });
  applications = new Applications(database.db, { clock: ctx.clock, queue: ctx.queue });
});
afterAll(() => database.close());

describe('approval worker', () => {
  it('approves a sound application through the versioned update, with an audit entry and the next job', async () => {
    const app = await underReview({ monthlyIncome: 6000, loanAmount: 20_000 });
    expect(await review(app._id)).toMatchObject({ recommendation: 'auto_approve', decided: 'approved' });
    const stored = await applications.get(app._id);
    expect(stored).toMatchObject({ status: 'approved', updatedBy: APPROVAL_ACTOR, version: 4 });
    const audit = await database.db.collection(AUDIT_COLLECTION).findOne({ _id: `${app._id}:4` as never });
    expect(audit).toMatchObject({ actor: APPROVAL_ACTOR, from: 'under_review', to: 'approved' });
    expect(
      await database.db
        .collection(JOBS_COLLECTION)
        .countDocuments({ name: 'application.approved', 'data.applicationId': app._id }),
    ).toBe(1);
  });

  it('a re-run changes nothing', async () => {
    const app = await underReview({ monthlyIncome: 6000, loanAmount: 20_000 });
    await review(app._id);
    const effects = async () => ({
      application: await applications.get(app._id),
      audit: await database.db.collection(AUDIT_COLLECTION).countDocuments({ applicationId: app._id }),
      jobs: await database.db.collection(JOBS_COLLECTION).countDocuments({ 'data.applicationId': app._id }),
    });
    const before = await effects();
    expect(before.application?.status).toBe('approved');
    expect(await review(app._id)).toMatchObject({ skipped: 'status approved' });
    expect(await effects()).toEqual(before);
  });

  it('rejects an unaffordable loan and only recommends review when a document is missing', async () => {
    const unaffordable = await underReview({ monthlyIncome: 1500, loanAmount: 200_000 });
    expect(await review(unaffordable._id)).toMatchObject({ decided: 'rejected' });
    const unread = await underReview({ monthlyIncome: 6000, loanAmount: 20_000, withOcr: false });
    expect(await review(unread._id)).toMatchObject({ recommendation: 'manual_review' });
    const stored = await database.db.collection(APPLICATIONS_COLLECTION).findOne({ _id: unread._id as never });
    expect(stored).toMatchObject({ status: 'under_review', recommendation: { recommendation: 'manual_review' } });
    // The same recommendation again is not written again.
    await review(unread._id);
    expect((await applications.get(unread._id))?.version).toBe(stored?.version);
  });

  it('with APPROVAL_AUTO_DECIDE=false only recommends', async () => {
    const app = await underReview({ monthlyIncome: 6000, loanAmount: 20_000 });
    const cautious = await workerContext(database.db, {
      APPROVAL_AUTO_DECIDE: 'false',
      APPROVAL_AUTO_APPROVE_MAX_AMOUNT: '50000',
    });
    expect(await review(app._id, cautious)).toEqual({ applicationId: app._id, recommendation: 'auto_approve' });
    expect((await applications.get(app._id))?.status).toBe('under_review');
  });

  it('never overwrites a decision an admin made: racing an admin, exactly one decision lands', async () => {
    for (let trial = 0; trial < 15; trial++) {
      const app = await underReview({ monthlyIncome: 6000, loanAmount: 20_000 });
      const [worker, human] = await Promise.allSettled([
        review(app._id),
        applications.update(app._id, { status: 'rejected', fields: {} }, { version: app.version }, admin),
      ]);
      expect(worker.status).toBe('fulfilled');
      const final = await applications.get(app._id);
      const decisions = await database.db
        .collection(AUDIT_COLLECTION)
        .find({ applicationId: app._id, to: { $in: ['approved', 'rejected'] } })
        .toArray();
      expect(decisions).toHaveLength(1);
      if (human.status === 'fulfilled') {
        expect(final?.status).toBe('rejected');
        expect(decisions[0]).toMatchObject({ actor: admin.id });
      } else {
        expect(final).toMatchObject({ status: 'approved', updatedBy: APPROVAL_ACTOR });
      }
    }
  });

  it("stores an approved loan's repayment plan once", async () => {
    const app = await underReview({ monthlyIncome: 6000, loanAmount: 20_000 });
    await review(app._id);
    const job = () =>
      handleApproval(jobOf('application.approved', { applicationId: app._id }), new AbortController().signal, ctx);
    expect(await job()).toEqual({ applicationId: app._id });
    const stored = await database.db.collection(APPLICATIONS_COLLECTION).findOne({ _id: app._id as never });
    expect(stored?.repaymentPlan).toEqual({ monthlyPayment: 527, termMonths: 48, annualRate: 0.12, total: 527 * 48 });
    expect(await job()).toMatchObject({ skipped: 'plan already stored' });
    expect((await applications.get(app._id))?.version).toBe(stored?.version);
  });
});
