import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/core/config.ts';
import { monthlyPayment, type ScoringInput, score } from '../../workers/approval/score.ts';

const thresholds = loadConfig({ MONGO_URL: 'mongodb://x' });
const ocr = (income: number, amount: number, name = 'Ada Lovelace', confidence = 0.95): ScoringInput['ocr'] => ({
  fields: {
    applicantName: { value: name, confidence },
    monthlyIncome: { value: income, confidence },
    loanAmount: { value: amount, confidence },
    identityNumber: { value: 'ID-123456', confidence },
  },
});
const base = { applicantName: 'Ada Lovelace', monthlyIncome: 6000, loanAmount: 20_000, termMonths: 48 };

describe('approval scoring', () => {
  it('computes an amortised monthly payment', () => {
    expect(monthlyPayment(12_000, 12, 0)).toBe(1000);
    expect(monthlyPayment(20_000, 48, 0.12)).toBe(527); // 526.68 rounded up
  });

  it('approves a modest loan whose documents agree', () => {
    const result = score({ ...base, ocr: ocr(6000, 20_000) }, thresholds);
    expect(result.recommendation).toBe('auto_approve');
    expect(result.metrics).toMatchObject({ monthlyPayment: 527, debtToIncome: 0.088, ocrConfidence: 0.95 });
  });

  it('sends to manual review without a document, with a weakly read field, or on a mismatch', () => {
    expect(score(base, thresholds)).toMatchObject({
      recommendation: 'manual_review',
      reasons: ['no document has been read yet'],
    });
    expect(score({ ...base, ocr: ocr(6000, 20_000, 'Ada Lovelace', 0.5) }, thresholds).recommendation).toBe(
      'manual_review',
    );
    const mismatch = score({ ...base, ocr: ocr(6000, 30_000) }, thresholds);
    expect(mismatch.recommendation).toBe('manual_review');
    expect(mismatch.reasons.join()).toContain('declared amount 20000');
    expect(score({ ...base, ocr: ocr(6000, 20_000, 'Grace Hopper') }, thresholds).recommendation).toBe('manual_review');
  });

  it('rejects an unaffordable loan or income declared far above the document', () => {
    const unaffordable = score({ ...base, loanAmount: 200_000, termMonths: 24, ocr: ocr(6000, 200_000) }, thresholds);
    expect(unaffordable.recommendation).toBe('auto_reject');
    expect(unaffordable.reasons[0]).toMatch(/^debt-to-income .* is above 0.6$/);
    expect(score({ ...base, ocr: ocr(2000, 20_000) }, thresholds).recommendation).toBe('auto_reject');
  });

  it('uses the thresholds it is given', () => {
    const strict = { ...thresholds, APPROVAL_AUTO_APPROVE_MAX_DTI: 0.05 };
    expect(score({ ...base, ocr: ocr(6000, 20_000) }, strict).recommendation).toBe('manual_review');
  });
});
