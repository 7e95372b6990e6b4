import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../shared/core/clock.ts';
import { isDuplicateKeyError, onlyDuplicateKeyErrors } from '../../shared/core/db.ts';

describe('backoffDelay', () => {
  it('doubles from base per retry up to the cap, without jitter', () => {
    const delays = [1, 2, 3, 4, 5, 6].map((retry) => backoffDelay(retry, { base: 5, cap: 100, jitter: 0 }));
    expect(delays).toEqual([5, 10, 20, 40, 80, 100]);
  });

  it('draws full jitter uniformly below the ceiling, and part of it with a jitter fraction', () => {
    expect(backoffDelay(3, { base: 5, cap: 100, random: () => 0.5 })).toBe(10);
    expect(backoffDelay(3, { base: 5, cap: 100, random: () => 0 })).toBe(0);
    expect(backoffDelay(3, { base: 5, cap: 100, jitter: 0.5, random: () => 0 })).toBe(10);
  });

  it('stays finite for a huge retry count and a zero base', () => {
    expect(backoffDelay(5000, { base: 1, cap: 250, jitter: 0 })).toBe(250);
    expect(backoffDelay(5000, { base: 0, cap: 250, jitter: 0 })).toBe(0);
  });
});

describe('duplicate-key errors', () => {
  it('recognises E11000 and nothing else', () => {
    expect(isDuplicateKeyError({ code: 11000 })).toBe(true);
    expect(isDuplicateKeyError({ code: 11001 })).toBe(false);
    expect(isDuplicateKeyError(null)).toBe(false);
    expect(isDuplicateKeyError('E11000')).toBe(false);
  });

  it('accepts a bulk write only when every failure was a duplicate key', () => {
    expect(onlyDuplicateKeyErrors({ code: 11000, writeErrors: [{ code: 11000 }, { code: 11000 }] })).toBe(true);
    expect(onlyDuplicateKeyErrors({ code: 11000, writeErrors: [{ code: 11000 }, { code: 121 }] })).toBe(false);
    expect(onlyDuplicateKeyErrors({ code: 11000, writeErrors: { code: 11000 } })).toBe(true);
    expect(onlyDuplicateKeyErrors({ code: 11000, writeErrors: [] })).toBe(false);
    expect(onlyDuplicateKeyErrors({ code: 11000 })).toBe(true);
    expect(onlyDuplicateKeyErrors(new Error('network'))).toBe(false);
  });
});
