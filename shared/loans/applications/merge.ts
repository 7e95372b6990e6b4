// Field-level merge of a JSON Merge Patch (RFC 7396) into an application: the pure part. A patch is cut
// into leaf paths (applicant fields, contact.<field>, notes.<id>, checklist.<item>); it merges over the
// changes made since its base version unless one of its paths overlaps a path one of them changed.
import { z } from 'zod';
import { ValidationError } from '../../core/errors.ts';
import { type ChangeEntry, overlaps } from './history.ts';
import {
  type Application,
  applicationInputSchema,
  checklistInputSchema,
  contactShape,
  editableFields,
  entryKeySchema,
  MAX_CHECKLIST_ITEMS,
  MAX_NOTES,
  noteInputSchema,
} from './schemas.ts';
import { adminTargetStatuses, type TargetStatus } from './status.ts';

const input = applicationInputSchema.shape;
const keyed = <T extends z.ZodType>(value: T, max: number) =>
  z
    .record(entryKeySchema, value.nullable())
    .refine((entries) => Object.keys(entries).length <= max, `at most ${max} entries in one patch`);

/**
 * The body of PATCH: RFC 7396 over the editable parts of an application. null deletes (only what may be
 * absent); notes and checklist are objects keyed by id, so each entry merges on its own.
 */
export const applicationPatchShape = {
  baseVersion: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  status: z.enum(adminTargetStatuses).optional(),
  applicantName: input.applicantName.optional(),
  email: input.email.nullable(),
  monthlyIncome: input.monthlyIncome.optional(),
  loanAmount: input.loanAmount.optional(),
  termMonths: input.termMonths.optional(),
  purpose: input.purpose.nullable(),
  identityNumber: input.identityNumber.nullable(),
  contact: z
    .object({
      phone: contactShape.phone.nullable().optional(),
      email: contactShape.email.nullable().optional(),
      address: contactShape.address.nullable().optional(),
    })
    .strict()
    .nullable()
    .optional(),
  notes: keyed(noteInputSchema, MAX_NOTES).nullable().optional(),
  checklist: keyed(checklistInputSchema, MAX_CHECKLIST_ITEMS).nullable().optional(),
};
export const applicationPatchSchema = z.object(applicationPatchShape).strict();
export type ApplicationPatch = z.infer<typeof applicationPatchSchema>;

/** One path a patch writes: a value to set, or null to delete it. */
export interface Leaf {
  path: string;
  value: unknown;
}

const keyedCollections = ['contact', 'notes', 'checklist'] as const;

/** The patch's leaf paths, sorted (status and baseVersion are not data: see statusOf). */
export function leavesOf(patch: ApplicationPatch): Leaf[] {
  const leaves: Leaf[] = [];
  for (const [key, value] of Object.entries(patch)) {
    if (key === 'baseVersion' || key === 'status' || value === undefined) continue;
    if ((keyedCollections as readonly string[]).includes(key) && value !== null) {
      for (const [entry, entryValue] of Object.entries(value as Record<string, unknown>)) {
        if (entryValue !== undefined) leaves.push({ path: `${key}.${entry}`, value: entryValue });
      }
      continue;
    }
    leaves.push({ path: key, value });
  }
  return leaves.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** The value stored for a leaf: a note or checklist item records who wrote it and when. */
export function storedValue(leaf: Leaf, actor: string, at: Date): unknown {
  if (leaf.value === null) return null;
  if (leaf.path.startsWith('notes.') || leaf.path.startsWith('checklist.')) {
    return { ...(leaf.value as object), by: actor, at };
  }
  return leaf.value;
}

/** The value at a dotted path of a document (undefined when absent). */
export function valueAt(doc: unknown, path: string): unknown {
  let value: unknown = doc;
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/**
 * What a patch may not merge over, as (the patch path to name, a path to compare, the patch's value). A
 * status move is never merged blindly: it collides with a status change since its base, and with any
 * change to the applicant fields or the evidence (documents, OCR, recommendation) the move was judged on.
 */
export function collisionTargets(leaves: Leaf[], status: TargetStatus | undefined) {
  const targets = leaves.map((leaf) => ({ path: leaf.path, match: leaf.path, yours: leaf.value }));
  if (status) {
    for (const match of ['status', ...editableFields, 'documents', 'ocr', 'recommendation']) {
      targets.push({ path: 'status', match, yours: status });
    }
  }
  return targets;
}
export type CollisionTarget = ReturnType<typeof collisionTargets>[number];

/** Whether a logged change touched a path some target overlaps. */
export const overlapsAny = (entry: ChangeEntry, targets: CollisionTarget[]) =>
  entry.paths.some((change) => targets.some((target) => overlaps(target.match, change.path)));

/** One field two admins both changed: enough for a three-way view. */
export interface MergeConflict {
  /** The path the patch sets. */
  path: string;
  /** The path the other change set (the same, or one inside or around it). */
  theirPath: string;
  /** Its value at the patch's base version, when the change log knows it. */
  base?: unknown;
  /** Its value now (absent: deleted). */
  theirs?: unknown;
  by: string;
  at: Date;
  version: number;
  yours: unknown;
}

/** Every overlap between the patch and the changes since its base; the latest change of each path names it. */
export function findConflicts(
  since: (ChangeEntry & { version: number })[],
  targets: CollisionTarget[],
): MergeConflict[] {
  const found = new Map<string, MergeConflict>();
  for (const entry of since) {
    for (const change of entry.paths) {
      for (const target of targets) {
        if (!overlaps(target.match, change.path)) continue;
        const key = `${target.path}\u0000${change.path}`;
        const earlier = found.get(key);
        const conflict: MergeConflict = {
          path: target.path,
          theirPath: change.path,
          by: entry.by,
          at: entry.at,
          version: entry.version,
          yours: target.yours,
        };
        const base = earlier ? earlier.base : change.old;
        if (base !== undefined) conflict.base = base;
        if (change.new !== undefined) conflict.theirs = change.new;
        found.set(key, conflict);
      }
    }
  }
  return [...found.values()];
}

/** The keyed collections stay within their bounds on the version the patch is judged against. */
export function checkBounds(current: Application, leaves: Leaf[]): void {
  for (const [collection, max] of [
    ['notes', MAX_NOTES],
    ['checklist', MAX_CHECKLIST_ITEMS],
  ] as const) {
    const entries = new Set(Object.keys(current[collection] ?? {}));
    for (const leaf of leaves) {
      if (leaf.path === collection) entries.clear();
      if (!leaf.path.startsWith(`${collection}.`)) continue;
      const id = leaf.path.slice(collection.length + 1);
      if (leaf.value === null) entries.delete(id);
      else entries.add(id);
    }
    if (entries.size > max) {
      throw new ValidationError(`an application holds at most ${max} ${collection}`, [
        { path: collection, message: `at most ${max} entries` },
      ]);
    }
  }
}

/** The $set and $unset of the patch's leaves. */
export function leafUpdates(leaves: Leaf[], actor: string, at: Date) {
  const set: Record<string, unknown> = {};
  const unset: Record<string, ''> = {};
  for (const leaf of leaves) {
    if (leaf.value === null) unset[leaf.path] = '';
    else set[leaf.path] = storedValue(leaf, actor, at);
  }
  return { set, unset };
}
