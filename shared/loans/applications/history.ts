// The per-version change log kept inside each application (`changes`): one entry per version, pushed by
// the same atomic write that bumps the version, so a reader that sees a version also sees what it changed.
// Entries are trimmed from the front ($slice), and every write that bumps the version pushes exactly one,
// so the last entry is the document's version and the one before it the version before: an entry's
// version follows from its position even when its writer could not know it (a merge write does not pin
// the version it replaces). The same write sets `changeHead` to its entry's id. A reader checks the log it
// got (isConsistentLog) and reads again when it is not whole: the offline server appends to an array in
// place, so a read that overlaps a write can see the new entry beside the old version, or a list without
// its head (both measured in the property test); a real MongoDB never shows either.
import type { AuditAction } from '../audit.ts';

/** The default of MERGE_HISTORY_VERSIONS: how many versions each application keeps in its change log. */
export const DEFAULT_HISTORY_VERSIONS = 100;

/** One changed path: its value before (when the writer knew it) and after (absent: deleted). */
export interface PathChange {
  path: string;
  old?: unknown;
  new?: unknown;
}

export interface ChangeEntry {
  /** Random: names the entry in a write's filter (the newest one seen, the older ones allowed). */
  id: string;
  /** The version this change produced, when its writer pinned it; otherwise its position tells it. */
  version?: number;
  at: Date;
  by: string;
  action: AuditAction | 'ocr' | 'recommendation' | 'repayment-plan' | 'disbursement';
  paths: PathChange[];
  /** Every path and each of its ancestors ("contact", "contact.phone"): what an overlap query matches. */
  keys: string[];
}

/** "notes.n1.text" -> ["notes", "notes.n1", "notes.n1.text"]. */
export function ancestorsOrSelf(path: string): string[] {
  const parts = path.split('.');
  return parts.map((_, index) => parts.slice(0, index + 1).join('.'));
}

/** Two paths overlap when one is the other or lies inside it (setting `contact` whole touches `contact.phone`). */
export const overlaps = (a: string, b: string) => a === b || a.startsWith(`${b}.`) || b.startsWith(`${a}.`);

export function changeEntry(fields: Omit<ChangeEntry, 'id' | 'keys'>): ChangeEntry {
  const keys = [...new Set(fields.paths.flatMap((change) => ancestorsOrSelf(change.path)))];
  const entry: ChangeEntry = { id: crypto.randomUUID(), ...fields, keys };
  if (entry.version === undefined) delete entry.version;
  return entry;
}

/** A document that carries a change log. */
export interface Logged {
  version: number;
  changes?: ChangeEntry[];
  /** The id of the newest entry, set by the write that pushed it. */
  changeHead?: string;
}

/**
 * `update` (operators) plus the log entry: appended, the newest `keep` kept (a writer that does not know
 * MERGE_HISTORY_VERSIONS passes none and trims nothing: the next write that knows it trims), and named the head. Every
 * write that bumps an application's version goes through this, so version and log move together.
 */
export function withChange<U extends Record<string, unknown>>(
  update: U,
  entry: ChangeEntry,
  keep?: number,
): U & { $set: Record<string, unknown>; $push: Record<string, unknown> } {
  const set = (update.$set ?? {}) as Record<string, unknown>;
  const push = (update.$push ?? {}) as Record<string, unknown>;
  return {
    ...update,
    $set: { ...set, changeHead: entry.id },
    $push: { ...push, changes: keep === undefined ? { $each: [entry] } : { $each: [entry], $slice: -keep } },
  };
}

/**
 * Whether a log read with its document is whole: its head is its last entry, no entry appears twice, it
 * is no longer than the version, and each entry that names its version sits where that version belongs.
 */
export function isConsistentLog(doc: Logged): boolean {
  const changes = doc.changes ?? [];
  if (changes.length === 0) return doc.changeHead === undefined;
  if (doc.changeHead !== undefined && changes.at(-1)?.id !== doc.changeHead) return false;
  if (changes.length > doc.version || new Set(changes.map((entry) => entry.id)).size !== changes.length) return false;
  return changes.every(
    (entry, index) => entry.version === undefined || entry.version === doc.version - (changes.length - 1 - index),
  );
}

/**
 * The log with each entry's version, from the document's version and the entries' positions; entries
 * past the head belong to a later version than the one read, and are left out (a log whose head is
 * missing is not to be trusted: it reads as empty).
 */
export function versionedLog(doc: Logged): (ChangeEntry & { version: number })[] {
  let changes = doc.changes ?? [];
  if (doc.changeHead !== undefined) {
    const head = changes.findIndex((entry) => entry.id === doc.changeHead);
    changes = head === -1 ? [] : changes.slice(0, head + 1);
  }
  return changes.map((entry, index) => ({ ...entry, version: doc.version - (changes.length - 1 - index) }));
}

/**
 * The entries after `base`, oldest first; null when the log no longer reaches back to `base` (it was
 * trimmed, or the document predates the log): the changes since then cannot be told.
 */
export function changesSince(doc: Logged, base: number): (ChangeEntry & { version: number })[] | null {
  const missing = doc.version - base;
  if (missing <= 0) return [];
  const log = versionedLog(doc);
  return log.length >= missing ? log.slice(log.length - missing) : null;
}

/** The oldest version whose changes the log still holds (the base a patch may be made against), if any. */
export function oldestMergeableBase(doc: Logged): number {
  return doc.version - versionedLog(doc).length;
}
