// The header parsers of api/headers.ts: entity tags for ETag / If-Match, and Idempotency-Key.
import { describe, expect, it } from 'vitest';
import { etagOf, parseIdempotencyKey, parseIfMatch } from '../../api/headers.ts';

describe('etagOf', () => {
  it('is the version as a strong, quoted entity tag', () => {
    expect(etagOf(7)).toBe('"7"');
  });
});

describe('parseIfMatch', () => {
  it('reads *, one tag, or a list of our versions', () => {
    expect(parseIfMatch(' * ')).toBe('*');
    expect(parseIfMatch('"3"')).toEqual([3]);
    expect(parseIfMatch('"3", "5",,"8"')).toEqual([3, 5, 8]);
  });

  it('drops weak tags and tags that are not one of our versions, which never match', () => {
    expect(parseIfMatch('W/"3", "abc", "0", "01", "4"')).toEqual([4]);
    expect(parseIfMatch('W/"3"')).toEqual([]);
  });

  it('is null for a header that is not an entity-tag list', () => {
    for (const header of ['3', '"3', 'W/3', '"a"b"', '"3" "4"', '*, "3"', '"sp ace"']) {
      expect(parseIfMatch(header), header).toBeNull();
    }
  });
});

describe('parseIdempotencyKey', () => {
  it('accepts a key bare or quoted, without the quotes', () => {
    const uuid = '8e03978e-40d5-43e8-bc93-6894a57f9324';
    expect(parseIdempotencyKey(uuid)).toBe(uuid);
    expect(parseIdempotencyKey(` "${uuid}" `)).toBe(uuid);
    expect(parseIdempotencyKey('a.b_c:d-e')).toBe('a.b_c:d-e');
  });

  it('is null for a key too short, too long, with other characters, or half quoted', () => {
    for (const header of ['short', 'x'.repeat(129), 'has space in it', 'slash/not/ok', '"unterminated-key', '""']) {
      expect(parseIdempotencyKey(header), header).toBeNull();
    }
  });
});
