// Preconditions of an update: the version in the body (409 on a miss) and If-Match (412 on a miss).
import type { VersionCondition } from './queries.ts';

export interface Precondition {
  /** The version in the body: a mismatch is a 409 with the current document. */
  version?: number;
  /** From If-Match: '*' (any existing document) or the versions its strong entity tags name; a miss is a 412. */
  ifMatch?: '*' | number[];
}

/** The version condition of the happy path's filter; null when no version can satisfy both preconditions. */
export function versionCondition(pre: Precondition): VersionCondition | null {
  const list = pre.ifMatch === '*' ? undefined : pre.ifMatch;
  if (pre.version !== undefined) return list && !list.includes(pre.version) ? null : pre.version;
  if (list) return list.length === 1 ? list[0] : { $in: list };
  return undefined;
}
