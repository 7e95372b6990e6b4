// The OCR field extractor on sample texts: clean forms, OCR noise, label variants, values on the next
// line, word confidences, and lines that must not be taken for fields.
import { describe, expect, it } from 'vitest';
import {
  extractFields,
  type Line,
  linesFromText,
  matchLabel,
  parseAmount,
  parseIdentity,
} from '../../workers/ocr/extract.ts';
import { formLines } from '../fixtures/documents.ts';

const fromText = (text: string) => extractFields(linesFromText(text));

describe('extractFields', () => {
  it('reads every field of a clean form at the text layer confidence', () => {
    const fields = extractFields(linesFromText(formLines().join('\n')));
    expect(fields.applicantName).toMatchObject({ value: 'Maria Jensen', label: 'Applicant name' });
    expect(fields.identityNumber?.value).toBe('ID-48213075');
    expect(fields.monthlyIncome?.value).toBe(4250);
    expect(fields.loanAmount?.value).toBe(18_500);
    for (const field of Object.values(fields)) expect(field.confidence).toBeCloseTo(0.99, 3);
  });

  it('tolerates OCR noise in labels and values, at a lower confidence', () => {
    const clean = fromText('Applicant name: Maria Jensen\nIdentity number: ID-48213075\nMonthly income: $4,250.00');
    const noisy = fromText(
      [
        'Appl1cant narne: Maria Jensen',
        'Identlty number: ID-48213O75',
        'Monthly lncome; $4,25O.00',
        'Loan arnount: USD 18 500',
      ].join('\n'),
    );
    expect(noisy.applicantName?.value).toBe('Maria Jensen');
    expect(noisy.identityNumber?.value).toBe('ID-48213075');
    expect(noisy.monthlyIncome?.value).toBe(4250);
    expect(noisy.loanAmount?.value).toBe(18_500);
    expect(noisy.applicantName!.confidence).toBeLessThan(clean.applicantName!.confidence);
    expect(noisy.identityNumber!.confidence).toBeLessThan(clean.identityNumber!.confidence);
    expect(noisy.monthlyIncome!.confidence).toBeLessThan(clean.monthlyIncome!.confidence);
  });

  it('knows label variants, European and spaced number formats, and currency signs', () => {
    const fields = fromText(
      [
        "Full name: Jean-Luc O'Neil",
        'National ID: AB-123456',
        'Net monthly income: 3.200,50 EUR',
        'Amount requested: £12,000',
      ].join('\n'),
    );
    expect(fields.applicantName?.value).toBe("Jean-Luc O'Neil");
    expect(fields.identityNumber?.value).toBe('AB-123456');
    expect(fields.monthlyIncome?.value).toBe(3201);
    expect(fields.loanAmount?.value).toBe(12_000);
    expect(fromText('Income per month 2 500').monthlyIncome?.value).toBe(2500);
    expect(fromText('Monthly income:$1,999').monthlyIncome?.value).toBe(1999);
  });

  it('takes the value from the next line when the label stands alone', () => {
    const fields = fromText('Monthly income:\n$4,250\nLoan amount:\n18,500');
    expect(fields.monthlyIncome?.value).toBe(4250);
    expect(fields.loanAmount?.value).toBe(18_500);
  });

  it("combines the value words' recognition confidence with the label match", () => {
    const line = (confidence: number): Line[] => [
      {
        words: [
          { text: 'Monthly', confidence: 95 },
          { text: 'income:', confidence: 95 },
          { text: '$4,250', confidence },
        ],
      },
    ];
    const sure = extractFields(line(96)).monthlyIncome!;
    const unsure = extractFields(line(40)).monthlyIncome!;
    expect(sure.value).toBe(4250);
    expect(unsure.value).toBe(4250);
    expect(sure.confidence).toBeCloseTo(0.96, 3);
    expect(unsure.confidence).toBeCloseTo(0.4, 3);
  });

  it('keeps the more confident of two readings of one field', () => {
    const fields = extractFields([
      {
        words: [
          { text: 'Loan', confidence: 90 },
          { text: 'amount:', confidence: 90 },
          { text: '9,000', confidence: 50 },
        ],
      },
      {
        words: [
          { text: 'Loan', confidence: 90 },
          { text: 'amount:', confidence: 90 },
          { text: '18,500', confidence: 93 },
        ],
      },
    ]);
    expect(fields.loanAmount?.value).toBe(18_500);
  });

  it('ignores lines that only look like fields', () => {
    const fields = fromText(
      [
        'LOAN APPLICATION FORM',
        'Monthly payment: 500',
        'Loan term: 36 months',
        'Applicant signature: ________',
        'Reference: branch 12 / desk 4',
        'Monthly income: not declared',
      ].join('\n'),
    );
    expect(fields).toEqual({});
    expect(fromText('')).toEqual({});
    expect(fromText('   \n\n  ')).toEqual({});
  });
});

describe('parts', () => {
  it('matches labels fuzzily but not loosely', () => {
    expect(matchLabel('Monthly income')).toEqual({ field: 'monthlyIncome', score: 1 });
    expect(matchLabel('Monthy incorne')?.field).toBe('monthlyIncome');
    expect(matchLabel('Monthly payment')).toBeNull();
    expect(matchLabel('x')).toBeNull();
  });

  it('parses amounts and identity numbers, counting look-alike replacements against certainty', () => {
    expect(parseAmount('$4,250.00')).toEqual({ value: 4250, certainty: 1 });
    expect(parseAmount('1.234.567')).toEqual({ value: 1_234_567, certainty: 1 });
    expect(parseAmount('4,25O')?.value).toBe(4250);
    expect(parseAmount('4,25O')!.certainty).toBeLessThan(1);
    expect(parseAmount('none')).toBeNull();
    expect(parseIdentity('ID-48213075')).toEqual({ value: 'ID-48213075', certainty: 1 });
    expect(parseIdentity('lD-4821 3O75')?.value).toBe('LD-48213075');
    expect(parseIdentity('--')).toBeNull();
  });
});
