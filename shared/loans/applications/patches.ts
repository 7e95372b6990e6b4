// PATCH: a JSON Merge Patch applied over the changes made since its base version, field by field. One
// read (the document with its change log) judges it; one conditional findOneAndUpdate writes it. The
// write's filter does not pin the version: it says "nothing this patch touches changed since what I
// read, the log still reaches back to what I read, and the status rules still hold", so admins who
// patch disjoint fields from one base never retry each other. A miss is read again and judged again.
import type { Collection, Db, Filter, UpdateFilter } from 'mongodb';
import type { Queue } from '../../concurrency/queue/index.ts';
import { retryOnConflict, writeMissed } from '../../concurrency/versions.ts';
import { backoffDelay, type Clock, sleep } from '../../core/clock.ts';
import { ConflictError, NotFoundError, PreconditionFailedError } from '../../core/errors.ts';
import { fourEyesFilter } from '../../identity/rbac.ts';
import { AuditLog } from '../audit.ts';
import { recordEffects, withoutUndefined, writtenChange } from './effects.ts';
import {
  ancestorsOrSelf,
  type ChangeEntry,
  changeEntry,
  changesSince,
  DEFAULT_HISTORY_VERSIONS,
  isConsistentLog,
  oldestMergeableBase,
  type PathChange,
  versionedLog,
  withChange,
} from './history.ts';
import type { ApplicationListCache } from './list-cache.ts';
import {
  type ApplicationPatch,
  type CollisionTarget,
  checkBounds,
  collisionTargets,
  findConflicts,
  type Leaf,
  leafUpdates,
  leavesOf,
  overlapsAny,
  storedValue,
  valueAt,
} from './merge.ts';
import { APPLICATIONS_COLLECTION, applicationQueries, approvalOf } from './queries.ts';
import { planUpdate, refuseUpdate, type UpdatePlan } from './repository.ts';
import type { Actor, Application, ApplicationDoc, LastChange } from './schemas.ts';

export interface PatchBase {
  version: number;
  /** If-Match answers a base newer than the document with 412, baseVersion with 409 (as PUT does). */
  from: 'if-match' | 'body';
}

/** A change the patch was merged over: made after its base, on other paths. */
export interface MergedChange {
  version: number;
  by: string;
  at: Date;
  paths: string[];
}

export interface PatchResult {
  app: Application;
  mergedOver: MergedChange[];
}

export interface PatchOptions {
  clock: Clock;
  queue: Queue;
  audit?: AuditLog;
  fourEyes?: boolean;
  /** MERGE_HISTORY_VERSIONS. */
  historyVersions?: number;
  /** This instance's list pages: a written patch drops those it may change, as every write does. */
  listCache?: ApplicationListCache;
  /** Rounds (read, judge, write) before giving up with a 409; misses come only from real races. */
  attempts?: number;
}

/** What a round knows once it has judged the patch on the version it read. */
interface Judged {
  current: ApplicationDoc;
  since: (ChangeEntry & { version: number })[];
  targets: CollisionTarget[];
}

/** The filters of a merge write, named in one place. */
export const patchQueries = {
  /**
   * Still in a state the plan may leave, the log still holds the newest entry read (so every change since
   * is in it; a document without a log is pinned to its version instead), and no entry but the allowed
   * ones (older than the base) overlaps a target: an entry's keys hold each of its paths' ancestors.
   */
  mergeable: (judged: Judged, plan: UpdatePlan, allowed: string[], actorId: string): Filter<ApplicationDoc> => {
    const { current, targets } = judged;
    const matches = [...new Set(targets.map((target) => target.match))];
    const around = [...new Set(targets.flatMap((target) => ancestorsOrSelf(target.match)))];
    const newest = versionedLog(current).at(-1)?.id;
    return {
      ...applicationQueries.writable(current._id, plan.states, newest ? undefined : current.version),
      ...(plan.approving ? fourEyesFilter('approve', actorId) : {}),
      ...(newest ? { 'changes.id': newest } : {}),
      changes: {
        $not: {
          $elemMatch: {
            id: { $nin: allowed },
            $or: [{ keys: { $in: matches } }, { 'paths.path': { $in: around } }],
          },
        },
      },
    } as Filter<ApplicationDoc>;
  },
  /** The written document: its log tells what the patch merged over; the rest of the bookkeeping is dropped. */
  writtenProjection: { lastChange: 0, approvalTrace: 0 } as const,
};

/** Reads of a document before giving up on seeing its change log whole. */
const WHOLE_READS = 5;

const topLevel = (leaves: Leaf[]) => Object.fromEntries(leaves.map((leaf) => [leaf.path.split('.')[0]!, true]));
const publicOf = ({
  lastChange: _change,
  changes: _log,
  changeHead: _head,
  approvalTrace: _trace,
  ...app
}: ApplicationDoc): Application => app;

export class ApplicationPatches {
  readonly collection: Collection<ApplicationDoc>;
  private readonly audit: AuditLog;
  private readonly options: PatchOptions;
  private readonly keep: number;

  constructor(db: Db, options: PatchOptions) {
    this.collection = db.collection<ApplicationDoc>(APPLICATIONS_COLLECTION);
    this.audit = options.audit ?? new AuditLog(db);
    this.options = options;
    this.keep = options.historyVersions ?? DEFAULT_HISTORY_VERSIONS;
  }

  /**
   * Applies `patch` over the changes since `base`: NotFoundError; 412/409 for a base newer than the
   * document; 409 merge_base_too_old when the log no longer reaches back to it; 409 merge_conflict naming
   * each overlap; the status rules exactly as PUT (400 illegal move or frozen fields, 403 four eyes).
   */
  async patch(id: string, patch: ApplicationPatch, base: PatchBase, actor: Actor): Promise<PatchResult> {
    const leaves = leavesOf(patch);
    const fourEyes = this.options.fourEyes ?? true;
    const plan = planUpdate({ status: patch.status, fields: topLevel(leaves) }, { version: base.version }, fourEyes);
    let last: ApplicationDoc | null = null;
    return retryOnConflict(
      this.options.attempts ?? 5,
      async () => {
        const judged = await this.judge(id, leaves, plan, base, actor);
        last = judged.current;
        return this.write(judged, leaves, plan, base, actor);
      },
      () => new ConflictError(`application ${id} kept changing; retry`, last && publicOf(last)),
      (attempt) => sleep(backoffDelay(attempt, { base: 5, cap: 100 })),
    );
  }

  /** Reads the document and refuses the patch if its base, its overlaps or the status rules say no. */
  private async judge(id: string, leaves: Leaf[], plan: UpdatePlan, base: PatchBase, actor: Actor): Promise<Judged> {
    const current = await this.readWhole(id);
    if (current.version < base.version) {
      const message = `application ${id} is at version ${current.version}, not ${base.version}`;
      if (base.from === 'if-match') throw new PreconditionFailedError(message, publicOf(current));
      throw new ConflictError(message, publicOf(current));
    }
    const since = changesSince(current, base.version);
    if (!since) {
      const oldest = oldestMergeableBase(current);
      throw new ConflictError(
        `the changes since version ${base.version} are no longer kept (the oldest base that merges is ${oldest}); reload and patch again`,
        publicOf(current),
        'merge_base_too_old',
        { details: { baseVersion: base.version, oldestMergeableBase: oldest, version: current.version } },
      );
    }
    const targets = collisionTargets(leaves, plan.to);
    const conflicts = findConflicts(since, targets);
    if (conflicts.length > 0) {
      const fields = [...new Set(conflicts.map((conflict) => conflict.theirPath))].join(', ');
      throw new ConflictError(
        `changed since version ${base.version} by someone else: ${fields}`,
        publicOf(current),
        'merge_conflict',
        { details: { baseVersion: base.version, version: current.version, conflicts } },
      );
    }
    // The status rules as PUT applies them, on this version (the write's filter repeats them).
    refuseUpdate(id, current, plan, {}, actor.id);
    checkBounds(current, leaves);
    return { current, since, targets };
  }

  /** The document with a whole change log (see isConsistentLog): read again, briefly, while it is not. */
  private async readWhole(id: string): Promise<ApplicationDoc> {
    for (let attempt = 1; attempt <= WHOLE_READS; attempt++) {
      const current = await this.collection.findOne(applicationQueries.byId(id));
      if (!current) throw new NotFoundError(`application ${id} not found`);
      if (isConsistentLog(current)) return current;
      await sleep(backoffDelay(attempt, { base: 2, cap: 20 }));
    }
    throw new ConflictError(`application ${id} kept changing while it was read; retry`, null);
  }

  /** The conditional write; writeMissed when a change landed since the read that the filter refuses. */
  private async write(
    judged: Judged,
    leaves: Leaf[],
    plan: UpdatePlan,
    base: PatchBase,
    actor: Actor,
  ): Promise<PatchResult | typeof writeMissed> {
    const { current, targets } = judged;
    const at = new Date(this.options.clock.now());
    const paths: PathChange[] = leaves.map((leaf) =>
      withoutUndefined({
        path: leaf.path,
        old: valueAt(current, leaf.path),
        new: storedValue(leaf, actor.id, at) ?? undefined,
      }),
    );
    if (plan.to) paths.push({ path: 'status', old: current.status, new: plan.to });
    const entry = changeEntry({ at, by: actor.id, action: 'update', paths });
    const lastChange = withoutUndefined<LastChange>({
      at,
      actor: actor.id,
      action: 'update',
      from: plan.to ? current.status : undefined,
      fields: leaves.length > 0 ? leaves.map((leaf) => leaf.path) : undefined,
      requestId: actor.requestId,
      change: entry.id,
    });
    const allowed = versionedLog(current)
      .filter((logged) => logged.version <= base.version && overlapsAny(logged, targets))
      .map((logged) => logged.id);
    const written = await this.collection.findOneAndUpdate(
      patchQueries.mergeable(judged, plan, allowed, actor.id),
      this.update(leaves, plan, entry, lastChange, actor.id),
      { returnDocument: 'after', projection: patchQueries.writtenProjection },
    );
    if (!written) return writeMissed;
    const app = publicOf(written);
    const from = plan.to ? current.status : app.status;
    this.options.listCache?.changed({ status: app.status, from });
    await recordEffects([writtenChange(app, from, lastChange)], this.audit, this.options.queue);
    // Merged over: the changes since the base that the read saw, then those that landed between the
    // read and this write (the write's own trim may have dropped the oldest from the log it returns).
    const landed = versionedLog(written).filter((c) => c.version > current.version && c.version < app.version);
    const mergedOver = [...judged.since, ...landed].map((change) => ({
      version: change.version,
      by: change.by,
      at: change.at,
      paths: change.paths.map((path) => path.path),
    }));
    return { app, mergedOver };
  }

  private update(
    leaves: Leaf[],
    plan: UpdatePlan,
    entry: ChangeEntry,
    lastChange: LastChange,
    actorId: string,
  ): UpdateFilter<ApplicationDoc> {
    const { set, unset } = leafUpdates(leaves, actorId, lastChange.at);
    Object.assign(set, { updatedAt: lastChange.at, updatedBy: actorId, lastChange });
    if (plan.to) set.status = plan.to;
    if (plan.to === 'approved') Object.assign(set, approvalOf(actorId));
    if (plan.financial) unset.recommendation = '';
    const update = {
      $set: set,
      ...(Object.keys(unset).length > 0 ? { $unset: unset } : {}),
      ...(plan.financial ? { $addToSet: { preparedBy: actorId } } : {}),
      $inc: { version: 1 },
    };
    return withChange(update, entry, this.keep) as UpdateFilter<ApplicationDoc>;
  }
}
