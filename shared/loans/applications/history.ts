// The per-version change log kept inside each application (`changes`): one entry per version, pushed by
// the same atomic write that bumps the version, so a reader that sees a version also sees what it changed.
// Entries are trimmed from the front ($slice), and every write that bumps the version pushes exactly one,
// so the last entry is the document's version and the one before it the version before: an entry's
// version follows from its position even when its writer could not know it (a merge write does not pin
// the version it replaces).
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

/** The $push that appends `entry` and keeps the newest `keep` entries; add it to the write that bumps the version. */
export const pushChange = (entry: ChangeEntry, keep: number = DEFAULT_HISTORY_VERSIONS) => ({
  changes: { $each: [entry], $slice: -keep },
});

/** The log with each entry's version, from the document's version and the entries' positions. */
export function versionedLog(doc: { version: number; changes?: ChangeEntry[] }): (ChangeEntry & { version: number })[] {
  const changes = doc.changes ?? [];
  return changes.map((entry, index) => ({ ...entry, version: doc.version - (changes.length - 1 - index) }));
}

/**
 * The entries after `base`, oldest first; null when the log no longer reaches back to `base` (it was
 * trimmed, or the document predates the log): the changes since then cannot be told.
 */
export function changesSince(
  doc: { version: number; changes?: ChangeEntry[] },
  base: number,
): (ChangeEntry & { version: number })[] | null {
  const missing = doc.version - base;
  if (missing <= 0) return [];
  const log = versionedLog(doc);
  return log.length >= missing ? log.slice(log.length - missing) : null;
}

/** The oldest version whose changes the log still holds (the base a patch may be made against), if any. */
export function oldestMergeableBase(doc: { version: number; changes?: ChangeEntry[] }): number {
  return doc.version - (doc.changes?.length ?? 0);
}
