// Scoring rules for a loan application: a recommendation with its reasons, from the declared
// values, what OCR extracted from the documents, and thresholds from config. Pure: no I/O.
import type { Config } from '../../shared/core/config.ts';

export type Recommendation = 'auto_approve' | 'manual_review' | 'auto_reject';

export interface ExtractedField<T> {
  value: T;
  confidence: number;
}

export interface ScoringInput {
  applicantName: string;
  monthlyIncome: number;
  loanAmount: number;
  termMonths: number;
  ocr?: {
    fields: Partial<{
      applicantName: ExtractedField<string>;
      monthlyIncome: ExtractedField<number>;
      loanAmount: ExtractedField<number>;
      identityNumber: ExtractedField<string>;
    }>;
  } | null;
}

export type Thresholds = Pick<
  Config,
  | 'APPROVAL_AUTO_APPROVE_MAX_DTI'
  | 'APPROVAL_AUTO_REJECT_MIN_DTI'
  | 'APPROVAL_MAX_AMOUNT_TO_ANNUAL_INCOME'
  | 'APPROVAL_MIN_OCR_CONFIDENCE'
  | 'APPROVAL_MAX_MISMATCH'
  | 'APPROVAL_ANNUAL_RATE'
>;

export interface Score {
  recommendation: Recommendation;
  reasons: string[];
  metrics: { monthlyPayment: number; debtToIncome: number; amountToAnnualIncome: number; ocrConfidence: number | null };
  thresholds: Thresholds;
}

/** The monthly payment of an amortised loan (whole currency units, rounded up). */
export function monthlyPayment(amount: number, termMonths: number, annualRate: number): number {
  const r = annualRate / 12;
  const payment = r === 0 ? amount / termMonths : (amount * r) / (1 - (1 + r) ** -termMonths);
  return Math.ceil(payment);
}

const normalizeName = (name: string) => name.toLowerCase().replace(/[^a-z]/g, '');
const relativeGap = (a: number, b: number) => Math.abs(a - b) / Math.max(1, Math.abs(a), Math.abs(b));
const round = (value: number) => Math.round(value * 1000) / 1000;

/** What the document read by OCR says against the declared figures: reasons to reject or to look. */
function checkDocument(
  input: ScoringInput,
  fields: NonNullable<ScoringInput['ocr']>['fields'],
  t: Thresholds,
  rejects: string[],
  reviews: string[],
): void {
  for (const name of ['applicantName', 'monthlyIncome', 'loanAmount', 'identityNumber'] as const) {
    const field = fields[name];
    if (!field) reviews.push(`${name} was not found in the document`);
    else if (field.confidence < t.APPROVAL_MIN_OCR_CONFIDENCE) {
      reviews.push(`${name} was read with confidence ${round(field.confidence)} (< ${t.APPROVAL_MIN_OCR_CONFIDENCE})`);
    }
  }
  if (fields.monthlyIncome && relativeGap(fields.monthlyIncome.value, input.monthlyIncome) > t.APPROVAL_MAX_MISMATCH) {
    const gap = relativeGap(fields.monthlyIncome.value, input.monthlyIncome);
    // Declaring much more income than the document shows is a reason to refuse, not only to look.
    (fields.monthlyIncome.value < input.monthlyIncome && gap > 0.5 ? rejects : reviews).push(
      `declared income ${input.monthlyIncome} differs from the document's ${fields.monthlyIncome.value}`,
    );
  }
  if (fields.loanAmount && relativeGap(fields.loanAmount.value, input.loanAmount) > t.APPROVAL_MAX_MISMATCH) {
    reviews.push(`declared amount ${input.loanAmount} differs from the document's ${fields.loanAmount.value}`);
  }
  if (fields.applicantName && normalizeName(fields.applicantName.value) !== normalizeName(input.applicantName)) {
    reviews.push(`declared name "${input.applicantName}" differs from the document's "${fields.applicantName.value}"`);
  }
}

export function score(input: ScoringInput, t: Thresholds): Score {
  const payment = monthlyPayment(input.loanAmount, input.termMonths, t.APPROVAL_ANNUAL_RATE);
  const dti = input.monthlyIncome > 0 ? payment / input.monthlyIncome : Number.POSITIVE_INFINITY;
  const amountRatio =
    input.monthlyIncome > 0 ? input.loanAmount / (input.monthlyIncome * 12) : Number.POSITIVE_INFINITY;
  const fields = input.ocr?.fields ?? {};
  const confidences = Object.values(fields).map((field) => field?.confidence ?? 0);
  const ocrConfidence = confidences.length > 0 ? Math.min(...confidences) : null;

  const rejects: string[] = [];
  const reviews: string[] = [];
  if (dti > t.APPROVAL_AUTO_REJECT_MIN_DTI) {
    rejects.push(`debt-to-income ${round(dti)} is above ${t.APPROVAL_AUTO_REJECT_MIN_DTI}`);
  } else if (dti > t.APPROVAL_AUTO_APPROVE_MAX_DTI) {
    reviews.push(`debt-to-income ${round(dti)} is above ${t.APPROVAL_AUTO_APPROVE_MAX_DTI}`);
  }
  if (amountRatio > t.APPROVAL_MAX_AMOUNT_TO_ANNUAL_INCOME) {
    reviews.push(`amount is ${round(amountRatio)} x yearly income (at most ${t.APPROVAL_MAX_AMOUNT_TO_ANNUAL_INCOME})`);
  }
  if (!input.ocr) reviews.push('no document has been read yet');
  else checkDocument(input, fields, t, rejects, reviews);

  const recommendation: Recommendation =
    rejects.length > 0 ? 'auto_reject' : reviews.length > 0 ? 'manual_review' : 'auto_approve';
  const reasons =
    recommendation === 'auto_approve'
      ? [`debt-to-income ${round(dti)} and amount ${round(amountRatio)} x yearly income within limits; documents agree`]
      : [...rejects, ...reviews];
  return {
    recommendation,
    reasons,
    metrics: {
      monthlyPayment: payment,
      debtToIncome: round(dti),
      amountToAnnualIncome: round(amountRatio),
      ocrConfidence,
    },
    thresholds: t,
  };
}

/**
 * What the worker may do by itself with its recommendation while automatic decisions are on: reject, or
 * approve a loan of at most APPROVAL_AUTO_APPROVE_MAX_AMOUNT; anything larger is held for an approver.
 * Null for a manual review.
 */
export function automaticDecision(
  recommendation: Recommendation,
  loanAmount: number,
  limits: Pick<Config, 'APPROVAL_AUTO_APPROVE_MAX_AMOUNT'>,
): { decide: 'approved' | 'rejected' } | { held: string } | null {
  if (recommendation === 'auto_reject') return { decide: 'rejected' };
  if (recommendation !== 'auto_approve') return null;
  const max = limits.APPROVAL_AUTO_APPROVE_MAX_AMOUNT;
  if (loanAmount > max) {
    return {
      held: `loan amount ${loanAmount} is above APPROVAL_AUTO_APPROVE_MAX_AMOUNT (${max}): an approver decides`,
    };
  }
  return { decide: 'approved' };
}
