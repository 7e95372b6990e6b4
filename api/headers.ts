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

/**
 * Parses an If-None-Match header (RFC 9110 §13.1.2): '*' or the opaque tags of a list of entity tags, weak
 * or not (If-None-Match compares weakly). Null when malformed.
 */
export function parseIfNoneMatch(header: string): '*' | string[] | null {
  const value = header.trim();
  if (value === '*') return '*';
  const tags: string[] = [];
  for (const part of value.split(',')) {
    const tag = part.trim();
    if (tag === '') continue;
    const match = /^(?:W\/)?("[\x21\x23-\x7e]*")$/.exec(tag);
    if (!match) return null;
    tags.push(match[1]!);
  }
  return tags;
}

/** Whether If-None-Match names `etag` (weak comparison: a W/ prefix on either side does not matter). */
export function noneMatchHits(parsed: '*' | string[], etag: string): boolean {
  return parsed === '*' || parsed.includes(etag.replace(/^W\//, ''));
}

/**
 * A strong entity tag for a body: base64url of the first 16 bytes of its SHA-256, quoted. WebCrypto, so it
 * runs alike on Node, workerd and Deno; computed once per cached list page.
 */
export async function bodyEtag(body: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(body)));
  const b64 = btoa(String.fromCharCode(...digest.subarray(0, 16)));
  return `"${b64.replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '')}"`;
}
