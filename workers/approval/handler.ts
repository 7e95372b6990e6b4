// The approval worker's jobs:
// - 'application.review' / 'application.score': score the application, store the recommendation,
//   and where config allows, decide (under_review -> approved | rejected) through the versioned
//   update; it approves only loans up to APPROVAL_AUTO_APPROVE_MAX_AMOUNT and only recommends larger
//   ones. On a conflict it re-reads and re-evaluates; once an admin has decided, it stops.
// - 'application.approved': store the repayment plan of an approved loan.
// Every write is versioned and skipped when it would change nothing, so a re-run has no effect.
import type { Collection } from 'mongodb';
import type { Job } from '../../shared/concurrency/queue/index.ts';
import { retryOnConflict, updateWithVersion, writeMissed } from '../../shared/concurrency/versions.ts';
import { ConflictError, ValidationError } from '../../shared/core/errors.ts';
import {
  APPLICATIONS_COLLECTION,
  type Application,
  Applications,
  type ChangeEntry,
  changeEntry,
  withChange,
} from '../../shared/loans/applications.ts';
import type { WorkerContext } from '../runtime.ts';
import { automaticDecision, monthlyPayment, type Score, type ScoringInput, score } from './score.ts';

export const approvalJobNames = ['application.review', 'application.score', 'application.approved'];

export const APPROVAL_ACTOR = 'approval-worker';

interface ScoredApplication extends Application {
  ocr?: ScoringInput['ocr'];
  recommendation?: Score & { at: Date };
  repaymentPlan?: { monthlyPayment: number; termMonths: number; annualRate: number; total: number };
}

export interface ApprovalResult {
  applicationId: string;
  recommendation?: Score['recommendation'];
  decided?: 'approved' | 'rejected';
  /** Why an approval it recommends is left to an approver. */
  held?: string;
  skipped?: string;
}

const MAX_ROUNDS = 5;

function sameScore(a: Score | undefined, b: Score): boolean {
  if (!a) return false;
  const strip = ({ recommendation, reasons, metrics, thresholds }: Score) =>
    JSON.stringify({ recommendation, reasons, metrics, thresholds });
  return strip(a) === strip(b);
}

export async function handleApproval(
  job: Job<{ applicationId: string }>,
  _signal: AbortSignal,
  ctx: WorkerContext,
): Promise<ApprovalResult> {
  const applicationId = job.data?.applicationId;
  if (typeof applicationId !== 'string') throw new ValidationError(`job ${job.id} has no applicationId`);
  const collection = ctx.db.collection<ScoredApplication>(APPLICATIONS_COLLECTION);
  if (job.name === 'application.approved') return storeRepaymentPlan(collection, applicationId, ctx);

  const applications = new Applications(ctx.db, {
    clock: ctx.clock,
    queue: ctx.queue,
    fourEyes: ctx.config.FOUR_EYES,
    historyVersions: ctx.config.MERGE_HISTORY_VERSIONS,
  });
  const rounds = keptChanging(applicationId);
  return retryOnConflict(
    MAX_ROUNDS,
    () => scoreAndDecide(collection, applications, applicationId, ctx).catch(rounds.miss),
    rounds.giveUp,
  );
}

/**
 * The two loops below read, judge and write at the version read; a conflict (someone changed it between
 * our read and our write) means another round on what is there now, and the last one is the cause
 * when they give up.
 */
function keptChanging(applicationId: string) {
  let lastConflict: ConflictError | undefined;
  return {
    miss(error: unknown): typeof writeMissed {
      if (!(error instanceof ConflictError)) throw error;
      lastConflict = error;
      return writeMissed;
    },
    giveUp: () =>
      new ConflictError(`application ${applicationId} kept changing over ${MAX_ROUNDS} reads`, null, 'conflict', {
        cause: lastConflict,
      }),
  };
}

/** One round of the review job: score, store the recommendation, and decide where allowed. */
async function scoreAndDecide(
  collection: Collection<ScoredApplication>,
  applications: Applications,
  applicationId: string,
  ctx: WorkerContext,
): Promise<ApprovalResult> {
  let app = (await collection.findOne(
    { _id: applicationId },
    { projection: { lastChange: 0 } },
  )) as ScoredApplication | null;
  if (!app) return { applicationId, skipped: 'not found' };
  // Once decided, by an admin or by us, there is nothing left to recommend.
  if (app.status !== 'pending' && app.status !== 'under_review')
    return { applicationId, skipped: `status ${app.status}` };
  const result = score(app, ctx.config);
  if (!sameScore(app.recommendation, result)) {
    const at = new Date(ctx.clock.now());
    const entry = workerChange(app.version + 1, at, 'recommendation', result.recommendation);
    app = (await updateWithVersion(
      collection,
      applicationId,
      app.version,
      // updatedAt too: list order and the change feed (GET /api/events) read every write by it.
      withChange(
        { $set: { recommendation: { ...result, at }, updatedAt: at } },
        entry,
        ctx.config.MERGE_HISTORY_VERSIONS,
      ),
    )) as ScoredApplication;
  }
  const decision = automaticDecision(result.recommendation, app.loanAmount, ctx.config);
  if (!ctx.config.APPROVAL_AUTO_DECIDE || app.status !== 'under_review' || !decision) {
    return { applicationId, recommendation: result.recommendation };
  }
  if ('held' in decision) {
    ctx.logger.info('approval left to an approver', { applicationId, reason: decision.held });
    return { applicationId, recommendation: result.recommendation, held: decision.held };
  }
  const to = decision.decide;
  await applications.update(
    applicationId,
    { status: to, fields: {} },
    { version: app.version },
    { id: APPROVAL_ACTOR },
  );
  ctx.logger.info('application decided', { applicationId, to, reasons: result.reasons });
  return { applicationId, recommendation: result.recommendation, decided: to };
}

/** The change-log entry of the worker's own writes (every version bump pushes one). */
function workerChange(
  version: number,
  at: Date,
  path: 'recommendation' | 'repaymentPlan',
  value: unknown,
): ChangeEntry {
  const action = path === 'recommendation' ? 'recommendation' : 'repayment-plan';
  return changeEntry({ version, at, by: APPROVAL_ACTOR, action, paths: [{ path, new: value }] });
}

async function storeRepaymentPlan(
  collection: Collection<ScoredApplication>,
  applicationId: string,
  ctx: WorkerContext,
): Promise<ApprovalResult> {
  const rounds = keptChanging(applicationId);
  const round = async (): Promise<ApprovalResult> => {
    const app = await collection.findOne({ _id: applicationId }, { projection: { lastChange: 0 } });
    if (!app) return { applicationId, skipped: 'not found' };
    if (app.status !== 'approved' && app.status !== 'disbursed')
      return { applicationId, skipped: `status ${app.status}` };
    const payment = monthlyPayment(app.loanAmount, app.termMonths, ctx.config.APPROVAL_ANNUAL_RATE);
    const plan = {
      monthlyPayment: payment,
      termMonths: app.termMonths,
      annualRate: ctx.config.APPROVAL_ANNUAL_RATE,
      total: payment * app.termMonths,
    };
    if (JSON.stringify(app.repaymentPlan) === JSON.stringify(plan))
      return { applicationId, skipped: 'plan already stored' };
    const at = new Date(ctx.clock.now());
    const entry = workerChange(app.version + 1, at, 'repaymentPlan', plan.monthlyPayment);
    await updateWithVersion(
      collection,
      applicationId,
      app.version,
      withChange({ $set: { repaymentPlan: plan, updatedAt: at } }, entry, ctx.config.MERGE_HISTORY_VERSIONS),
    );
    return { applicationId };
  };
  return retryOnConflict(MAX_ROUNDS, () => round().catch(rounds.miss), rounds.giveUp);
}
