// The applications collection: its indexes, and every filter and update the repository sends.
import type { Filter, Sort, UpdateFilter } from 'mongodb';
import type { IndexPlan } from '../../core/db.ts';
import { currentTrace } from '../../core/tracing.ts';
import { type ChangeEntry, withChange } from './history.ts';
import { type ApplicationDoc, applicationIdSchema, type SortField } from './schemas.ts';
import { type ApplicationStatus, evidenceStatuses } from './status.ts';

export const APPLICATIONS_COLLECTION = 'applications';

/**
 * Each list order is served by an index that also yields the order of the _id tie-breaker, with and
 * without the status filter; {status, createdAt, _id} also serves the filtered total as a count of index
 * keys (COUNT_SCAN). The writes' filters start with _id.
 */
export const applicationIndexes: IndexPlan = {
  collection: APPLICATIONS_COLLECTION,
  indexes: [
    { key: { status: 1, createdAt: 1, _id: 1 }, name: 'status_createdAt' },
    { key: { status: 1, updatedAt: 1, _id: 1 }, name: 'status_updatedAt' },
    { key: { createdAt: 1, _id: 1 }, name: 'createdAt' },
    { key: { updatedAt: 1, _id: 1 }, name: 'updatedAt' },
    { key: { 'lastChange.at': 1, _id: 1 }, name: 'lastChange_at' },
  ],
};

/** A string matched literally inside a regular expression. */
/**
 * What a write that approves sets besides the status: the approver, and (while tracing is on) the trace it
 * ran in, which the disbursement continues.
 */
export function approvalOf(actorId: string): Pick<ApplicationDoc, 'approvedBy' | 'approvalTrace'> {
  const trace = currentTrace();
  return trace ? { approvedBy: actorId, approvalTrace: trace } : { approvedBy: actorId };
}

export const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * What a search (q) matches: an application id that one application; anything else applicant names that
 * start with it, whatever the case. Anchored (^), but a case-insensitive regex cannot bound an index scan,
 * and no index holds applicantName: a search reads the list's index in its sort order and checks each
 * document until the page is full (the whole collection, or the status's part of it, when few match), and
 * its total counts every document (or the status's). See README.md, Search.
 */
export function searchFilter(q: string): Filter<ApplicationDoc> {
  return applicationIdSchema.safeParse(q).success
    ? { _id: q }
    : { applicantName: { $regex: `^${escapeRegex(q)}`, $options: 'i' } };
}

export type VersionCondition = number | { $in: number[] } | undefined;

export interface KeysetPosition {
  field: SortField;
  dir: 1 | -1;
  value: Date;
  id: string;
}

export const applicationQueries = {
  byId: (id: string): Filter<ApplicationDoc> => ({ _id: id }),
  byIds: (ids: string[]): Filter<ApplicationDoc> => ({ _id: { $in: ids } }),
  /** The whole check of a write: still this version (if one is named) and in a state the change may leave. */
  writable: (id: string, states: readonly ApplicationStatus[], version: VersionCondition): Filter<ApplicationDoc> => ({
    _id: id,
    status: states.length === 1 ? states[0]! : { $in: [...states] },
    ...(version === undefined ? {} : { version }),
  }),
  /** Every write that bumps the version also appends its entry to the change log (history.ts). */
  change: (set: Partial<ApplicationDoc>, entry: ChangeEntry, keep: number): UpdateFilter<ApplicationDoc> =>
    withChange({ $set: set, $inc: { version: 1 } }, entry, keep),
  /** A change by a preparer: it joins preparedBy; a financial change also drops the stale recommendation. */
  prepare: (
    set: Partial<ApplicationDoc>,
    preparer: string,
    financial: boolean,
    entry: ChangeEntry,
    keep: number,
  ): UpdateFilter<ApplicationDoc> =>
    withChange(
      {
        $set: set,
        $addToSet: { preparedBy: preparer },
        ...(financial ? { $unset: { recommendation: '' } } : {}),
        $inc: { version: 1 },
      },
      entry,
      keep,
    ),
  /** Still open to evidence (a document upload records its uploader as a preparer through this filter). */
  openToEvidence: (id: string): Filter<ApplicationDoc> => ({ _id: id, status: { $in: [...evidenceStatuses] } }),
  /**
   * The page's filter; after a cursor, everything strictly past (value, id) in the sort order. The range
   * on the sort field bounds the index scan, the $or only drops the ties already seen.
   */
  list: (status: ApplicationStatus | undefined, after?: KeysetPosition, q?: string): Filter<ApplicationDoc> => {
    const filter: Filter<ApplicationDoc> = {
      ...(status ? { status } : {}),
      ...(q === undefined ? {} : searchFilter(q)),
    };
    if (!after) return filter;
    const strict = after.dir === 1 ? '$gt' : '$lt';
    const inclusive = after.dir === 1 ? '$gte' : '$lte';
    return {
      ...filter,
      [after.field]: { [inclusive]: after.value },
      $or: [{ [after.field]: { [strict]: after.value } }, { _id: { [strict]: after.id } }],
    } as Filter<ApplicationDoc>;
  },
  listOrder: (field: SortField, dir: 1 | -1): Sort => ({ [field]: dir, _id: dir }),
  countByStatus: (status: ApplicationStatus): Filter<ApplicationDoc> => ({ status }),
  /**
   * Every status's count in one pass: a group on status. MongoDB can answer it from the {status, ...}
   * indexes (DISTINCT_SCAN is not used for $sum, so it walks the status_createdAt keys: O(applications),
   * no documents fetched); the offline server scans the collection.
   */
  countsByStatus: [{ $group: { _id: '$status', count: { $sum: 1 } } }] as const,
  /** Changes stamped at or after the checkpoint, past (at, id) when paging through them. */
  changedFrom: (from: Date, after?: { at: Date; id: string }): Filter<ApplicationDoc> =>
    after
      ? {
          'lastChange.at': { $gte: after.at },
          $or: [{ 'lastChange.at': { $gt: after.at } }, { _id: { $gt: after.id } }],
        }
      : { 'lastChange.at': { $gte: from } },
  replayOrder: { 'lastChange.at': 1, _id: 1 } as Sort,
  /** What a replay needs of a document: its latest change and the state it left. */
  replayProjection: { status: 1, version: 1, lastChange: 1, 'changes.id': 1, changeHead: 1 } as const,
  /** Responses never show the bookkeeping (the last change, the change log and its head). */
  publicProjection: { lastChange: 0, changes: 0, changeHead: 0, approvalTrace: 0 } as const,
};
