// Preconditions of an update: the version in the body (409 on a miss) and If-Match (412 on a miss).
import type { VersionCondition } from './queries.ts';

export interface Precondition {
  /** The version in the body: a mismatch is a 409 with the current document. */
  version?: number;
  /** From If-Match: '*' (any existing document) or the versions its strong entity tags name; a miss is a 412. */
  ifMatch?: '*' | number[];
}

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

/** The version condition of the happy path's filter; null when no version can satisfy both preconditions. */
export function versionCondition(pre: Precondition): VersionCondition | null {
  const list = pre.ifMatch === '*' ? undefined : pre.ifMatch;
  if (pre.version !== undefined) return list && !list.includes(pre.version) ? null : pre.version;
  if (list) return list.length === 1 ? list[0] : { $in: list };
  return undefined;
}
