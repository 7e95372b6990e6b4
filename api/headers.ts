// HTTP header values the API reads or writes: entity tags (ETag, If-Match) and Idempotency-Key.
import { idempotencyKeyPattern } from '../shared/loans/disbursements.ts';

/** The ETag of a version: strong, quoted. */
export const etagOf = (version: number) => `"${version}"`;

/**
 * Parses an If-Match header (RFC 9110 §13.1.1): '*' or a list of entity tags. Weak tags never match under
 * the strong comparison If-Match uses, nor do tags that are not one of our versions. Null when malformed.
 */
export function parseIfMatch(header: string): '*' | number[] | null {
  const value = header.trim();
  if (value === '*') return '*';
  const versions: number[] = [];
  for (const part of value.split(',')) {
    const tag = part.trim();
    if (tag === '') continue;
    const match = /^(W\/)?"([\x21\x23-\x7e]*)"$/.exec(tag);
    if (!match) return null;
    if (!match[1] && /^[1-9][0-9]{0,15}$/.test(match[2]!)) versions.push(Number(match[2]));
  }
  return versions;
}

/** The Idempotency-Key's value without the optional quotes, or null when it is not one we accept. */
export function parseIdempotencyKey(header: string): string | null {
  const trimmed = header.trim();
  const value =
    trimmed.length >= 2 && trimmed.startsWith('"') && trimmed.endsWith('"') ? trimmed.slice(1, -1) : trimmed;
  return idempotencyKeyPattern.test(value) ? value : null;
}
