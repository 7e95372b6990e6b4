// The repository of applications. Every write is one conditional findOneAndUpdate/updateOne whose
// filter carries the whole check (id, version, allowed source states); only a miss costs a second read,
// to tell the caller which check failed. After a write succeeds, its audit entry and its job follow
// (recordEffects); each document carries its lastChange so replayChanges can redo them after a crash.
import type { Collection, Db } from 'mongodb';
import type { Queue } from '../../concurrency/queue/index.ts';
import { retryOnConflict, writeMissed } from '../../concurrency/versions.ts';
import type { Clock } from '../../core/clock.ts';
import { ConflictError, NotFoundError, PreconditionFailedError, ValidationError } from '../../core/errors.ts';
import { fourEyesError, fourEyesFilter, fourEyesRefusal } from '../../identity/rbac.ts';
import { AuditLog } from '../audit.ts';
import { encodeCursor, listPlan } from './cursors.ts';
import { recordEffects, type WrittenChange, withoutUndefined, writtenChange } from './effects.ts';
import { changeEntry, DEFAULT_HISTORY_VERSIONS, type PathChange } from './history.ts';
import type { ApplicationListCache, StatusCounts } from './list-cache.ts';
import { type Precondition, versionCondition } from './preconditions.ts';
import { APPLICATIONS_COLLECTION, applicationQueries, approvalOf, type VersionCondition } from './queries.ts';
import { type ReplayResult, replayChanges } from './replay.ts';
import {
  type Actor,
  type Application,
  type ApplicationDoc,
  type ApplicationInput,
  financialFields,
  type LastChange,
  newApplicationId,
  parseSort,
  type SortOption,
} from './schemas.ts';
import {
  type ApplicationStatus,
  canMove,
  editableStatuses,
  evidenceStatuses,
  invalidTransition,
  sourcesOf,
  statuses,
  type TargetStatus,
} from './status.ts';

export interface ListQuery {
  status?: ApplicationStatus;
  sort?: SortOption;
  /** A search: an application id, or a case-insensitive prefix of the applicant's name. */
  q?: string;
  limit: number;
  /** Page mode (skip); ignored with a cursor. */
  page?: number;
  /** Cursor mode (keyset): continue after the position the cursor names. */
  cursor?: string;
  withTotal?: boolean;
  /** Aborts the reads when the caller has gone (e.g. the HTTP client disconnected). */
  signal?: AbortSignal;
}

export interface ListResult {
  items: Application[];
  total?: number;
  nextCursor: string | null;
  /** When the oldest part of the answer was sent for (the page query, or a reused total): its age. */
  readAt: number;
}

export type BatchOutcome = 'updated' | 'conflict' | 'not_found' | 'invalid' | 'forbidden';

export interface BatchItemResult {
  id: string;
  outcome: BatchOutcome;
  /** The version after the update (updated), or the version the batch read (invalid). */
  version?: number;
  error?: string;
  /** forbidden: the rule that refused it (four_eyes_...). */
  code?: string;
}

export interface BatchResult {
  results: BatchItemResult[];
  counts: Record<BatchOutcome, number>;
}

export interface ApplicationsOptions {
  clock: Clock;
  queue: Queue;
  audit?: AuditLog;
  /** Item writes of a batch in flight at once. */
  batchConcurrency?: number;
  /**
   * This instance's list pages and totals: totals are reused from it, and every write through this
   * repository drops the entries it may change. Without it every list counts.
   */
  listCache?: ApplicationListCache;
  /** Enforce four eyes on approvals (FOUR_EYES); on unless turned off. */
  fourEyes?: boolean;
  /** Versions each application keeps in its change log (MERGE_HISTORY_VERSIONS). */
  historyVersions?: number;
}

/** What an update asks for, worked out once before its rounds (PUT and PATCH). */
export interface UpdatePlan {
  fields: Partial<ApplicationInput>;
  /** The applicant fields it edits, sorted. */
  edited: string[];
  to?: TargetStatus;
  /** The statuses the write may leave: sources of `to`, narrowed to editable ones when fields change. */
  states: readonly ApplicationStatus[];
  financial: boolean;
  approving: boolean;
  /** Changing the figures while approving them makes the approver a preparer: never written. */
  selfPrepared: boolean;
  /** The write's version condition; null when no version satisfies both preconditions. */
  version: VersionCondition | null;
}

export function planUpdate(
  change: { status?: TargetStatus; fields: Partial<ApplicationInput> | Record<string, unknown> },
  pre: Precondition,
  fourEyes: boolean,
): UpdatePlan {
  const fields = withoutUndefined(change.fields);
  const edited = Object.keys(fields).sort();
  const to = change.status;
  if (!to && edited.length === 0) throw new ValidationError('nothing to change: send a status or applicant fields');
  let states: readonly ApplicationStatus[] = to ? sourcesOf(to) : statuses;
  if (edited.length > 0) states = states.filter((state) => editableStatuses.includes(state));
  const financial = edited.some((field) => financialFields.includes(field));
  const approving = to === 'approved' && fourEyes;
  const selfPrepared = approving && financial;
  return { fields, edited, to, states, financial, approving, selfPrepared, version: versionCondition(pre) };
}

/** After a missed write, throws the reason the application refuses the update, in the documented order. */
export function refuseUpdate(
  id: string,
  current: Application | null,
  plan: UpdatePlan,
  pre: Precondition,
  actorId: string,
): void {
  if (!current) throw new NotFoundError(`application ${id} not found`);
  if (pre.ifMatch !== undefined && pre.ifMatch !== '*' && !pre.ifMatch.includes(current.version)) {
    throw new PreconditionFailedError(`If-Match failed: application ${id} is at version ${current.version}`, current);
  }
  if (pre.version !== undefined && pre.version !== current.version) {
    throw new ConflictError(`application ${id} is at version ${current.version}, not ${pre.version}`, current);
  }
  const { to, edited } = plan;
  if (to && !canMove(current.status, to)) {
    throw new ValidationError(invalidTransition(current.status, to), {
      reason: 'invalid_transition',
      from: current.status,
      to,
    });
  }
  if (edited.length > 0 && !editableStatuses.includes(current.status)) {
    throw new ValidationError(`application ${id} is ${current.status}: its applicant fields can no longer change`, {
      reason: 'not_editable',
      status: current.status,
      fields: edited,
    });
  }
  if (plan.approving) {
    const rule = plan.selfPrepared ? 'four_eyes_preparer_cannot_approve' : fourEyesRefusal('approve', current, actorId);
    if (rule) throw fourEyesError(rule, id);
  }
}

export class Applications {
  readonly collection: Collection<ApplicationDoc>;
  readonly audit: AuditLog;
  private readonly clock: Clock;
  private readonly queue: Queue;
  private readonly batchConcurrency: number;
  private readonly listCache: ApplicationListCache | undefined;
  private readonly fourEyes: boolean;
  private readonly keep: number;

  constructor(db: Db, options: ApplicationsOptions) {
    this.collection = db.collection<ApplicationDoc>(APPLICATIONS_COLLECTION);
    this.audit = options.audit ?? new AuditLog(db);
    this.clock = options.clock;
    this.queue = options.queue;
    this.batchConcurrency = options.batchConcurrency ?? 8;
    this.listCache = options.listCache;
    this.fourEyes = options.fourEyes ?? true;
    this.keep = options.historyVersions ?? DEFAULT_HISTORY_VERSIONS;
  }

  private now(): Date {
    return new Date(this.clock.now());
  }

  async create(input: ApplicationInput, actor: Actor): Promise<Application> {
    const at = this.now();
    const app: Application = {
      _id: newApplicationId(),
      ...withoutUndefined(input),
      status: 'pending',
      version: 1,
      createdAt: at,
      updatedAt: at,
      createdBy: actor.id,
      updatedBy: actor.id,
      preparedBy: [actor.id],
    };
    const lastChange = withoutUndefined<LastChange>({
      version: 1,
      at,
      actor: actor.id,
      action: 'create',
      requestId: actor.requestId,
    });
    const entry = changeEntry({ version: 1, at, by: actor.id, action: 'create', paths: [] });
    await this.collection.insertOne({ ...app, lastChange, changes: [entry], changeHead: entry.id });
    await this.afterChange([{ app, from: null, at, actor: actor.id, action: 'create', requestId: actor.requestId }]);
    return app;
  }

  async get(id: string, signal?: AbortSignal): Promise<Application | null> {
    return this.collection.findOne(applicationQueries.byId(id), {
      projection: applicationQueries.publicProjection,
      ...(signal ? { signal } : {}),
    });
  }

  /** Whether the application exists (reads its _id only). */
  async exists(id: string, signal?: AbortSignal): Promise<boolean> {
    const found = await this.collection.findOne(applicationQueries.byId(id), {
      projection: { _id: 1 },
      ...(signal ? { signal } : {}),
    });
    return found !== null;
  }

  /**
   * Applies `change` if the preconditions hold and the change is legal, in one findOneAndUpdate. On a miss,
   * one read tells why, in this order: NotFoundError, PreconditionFailedError (If-Match), ConflictError
   * (body version), ValidationError (illegal move or frozen fields).
   */
  async update(
    id: string,
    change: { status?: TargetStatus; fields: Partial<ApplicationInput> },
    pre: Precondition,
    actor: Actor,
  ): Promise<Application> {
    const plan = planUpdate(change, pre, this.fourEyes);
    return retryOnConflict(
      3,
      async () => {
        if (plan.version !== null && plan.states.length > 0 && !plan.selfPrepared) {
          const written = await this.writeUpdate(id, plan, plan.version, actor);
          if (written) return written;
        }
        refuseUpdate(id, await this.get(id), plan, pre, actor.id);
        // Every check passes now: the document moved into a state our write accepts after it missed. Again.
        return writeMissed;
      },
      async () => new ConflictError(`application ${id} kept changing; retry`, await this.get(id)),
    );
  }

  /** The update's conditional write; null when its filter missed. */
  private async writeUpdate(
    id: string,
    plan: UpdatePlan,
    version: VersionCondition,
    actor: Actor,
  ): Promise<Application | null> {
    const { fields, to, states, financial } = plan;
    const pinned = await this.pinVersion(id, version);
    const at = this.now();
    const lastChange = withoutUndefined<LastChange>({
      version: pinned === undefined ? undefined : pinned + 1,
      at,
      actor: actor.id,
      action: 'update',
      from: to && states.length === 1 ? states[0] : undefined,
      fields: plan.edited.length > 0 ? plan.edited : undefined,
      requestId: actor.requestId,
    });
    const set: Partial<ApplicationDoc> = { ...fields, updatedAt: at, updatedBy: actor.id, lastChange };
    if (to) set.status = to;
    if (to === 'approved') Object.assign(set, approvalOf(actor.id));
    const filter = applicationQueries.writable(id, states, pinned ?? version);
    // The rule is part of the write's filter: it holds on exactly the version the write replaces.
    if (plan.approving) Object.assign(filter, fourEyesFilter('approve', actor.id));
    // A PUT reads nothing before it writes: its log entry knows the new values, and the old status only.
    const paths: PathChange[] = plan.edited.map((path) => ({ path, new: (fields as Record<string, unknown>)[path] }));
    if (to) paths.push(withoutUndefined({ path: 'status', old: lastChange.from, new: to }));
    const entry = changeEntry({ version: lastChange.version, at, by: actor.id, action: 'update', paths });
    const before = await this.collection.findOneAndUpdate(
      filter,
      financial
        ? applicationQueries.prepare(set, actor.id, true, entry, this.keep)
        : applicationQueries.change(set, entry, this.keep),
      { returnDocument: 'before', projection: applicationQueries.publicProjection },
    );
    if (!before) return null;
    const app: Application & { recommendation?: unknown } = {
      ...before,
      ...fields,
      status: to ?? before.status,
      version: before.version + 1,
      updatedAt: at,
      updatedBy: actor.id,
    };
    if (to === 'approved') app.approvedBy = actor.id;
    if (financial) {
      app.preparedBy = [...new Set([...(before.preparedBy ?? []), actor.id])];
      delete app.recommendation;
    }
    await this.afterChange([writtenChange(app, before.status, lastChange)]);
    return app;
  }

  /**
   * The one version the write pins, so that its lastChange can name the version it produces. Only
   * If-Match: * (or a list of tags) needs a read first to learn which version that is.
   */
  private async pinVersion(id: string, version: VersionCondition): Promise<number | undefined> {
    if (typeof version === 'number') return version;
    const current = await this.collection.findOne(applicationQueries.byId(id), { projection: { version: 1 } });
    const allowed = typeof version === 'object' ? version.$in : undefined;
    if (current && (!allowed || allowed.includes(current.version))) return current.version;
    return undefined;
  }

  /**
   * Before a document is stored: records its uploader as a preparer, in a versioned write whose filter
   * also requires the application to be open to evidence. NotFoundError; ConflictError with the code
   * evidence_frozen once it is decided (approved, rejected, disbursed).
   */
  async recordUploader(id: string, actor: Actor): Promise<Application> {
    return retryOnConflict(
      5,
      async () => {
        const current = await this.assertOpenToEvidence(id);
        const at = this.now();
        const lastChange = withoutUndefined<LastChange>({
          version: current.version + 1,
          at,
          actor: actor.id,
          action: 'update',
          fields: ['documents'],
          requestId: actor.requestId,
        });
        const entry = changeEntry({
          version: current.version + 1,
          at,
          by: actor.id,
          action: 'update',
          paths: [{ path: 'documents' }],
        });
        const written = await this.collection.updateOne(
          { ...applicationQueries.openToEvidence(id), version: current.version },
          applicationQueries.prepare(
            { updatedAt: at, updatedBy: actor.id, lastChange },
            actor.id,
            false,
            entry,
            this.keep,
          ),
        );
        if (written.matchedCount === 1) {
          const app: Application = {
            ...current,
            version: current.version + 1,
            updatedAt: at,
            updatedBy: actor.id,
            preparedBy: [...new Set([...(current.preparedBy ?? []), actor.id])],
          };
          await this.afterChange([writtenChange(app, current.status, lastChange)]);
          return app;
        }
        // Changed since the read: read again, and refuse if it was decided meanwhile.
        return writeMissed;
      },
      async () => new ConflictError(`application ${id} kept changing; retry`, await this.get(id)),
    );
  }

  /** The application, if evidence may still be added to it; otherwise NotFoundError or ConflictError (evidence_frozen). */
  async assertOpenToEvidence(id: string): Promise<Application> {
    const current = await this.get(id);
    if (!current) throw new NotFoundError(`application ${id} not found`);
    if (!evidenceStatuses.includes(current.status)) {
      throw new ConflictError(
        `application ${id} is ${current.status}: its evidence is frozen, no document can be added`,
        current,
        'evidence_frozen',
      );
    }
    return current;
  }

  async list(query: ListQuery): Promise<ListResult> {
    const { sort, status, q, after, skip } = listPlan(query);
    const { field, dir } = parseSort(sort);
    const sentAt = this.clock.now();
    // One more than asked tells whether a next page exists, without a count.
    const page = this.collection
      .find(applicationQueries.list(status, after, q), {
        projection: applicationQueries.publicProjection,
        ...(query.signal ? { signal: query.signal } : {}),
      })
      .sort(applicationQueries.listOrder(field, dir))
      .skip(skip)
      .limit(query.limit + 1)
      .toArray();
    const total = query.withTotal
      ? q === undefined
        ? this.countRead(status)
        : this.countSearch(status, q)
      : undefined;
    const [docs, counted] = await Promise.all([page, total]);
    const items = docs.slice(0, query.limit);
    const last = items.at(-1);
    const nextCursor =
      docs.length > query.limit && last
        ? encodeCursor({ s: sort, st: status ?? null, v: last[field].getTime(), i: last._id, ...(q ? { q } : {}) })
        : null;
    const readAt = counted ? Math.min(sentAt, counted.sentAt) : sentAt;
    return { items, nextCursor, readAt, ...(counted === undefined ? {} : { total: counted.value }) };
  }

  /**
   * The list's total. With a status: a count of {status, ...} index keys (O(matching), no documents
   * fetched). Without: the collection's size from its metadata (O(1); exact except after an unclean
   * shutdown of mongod, until it is validated). Reused from the list cache's totals when there is one.
   */
  async count(status?: ApplicationStatus): Promise<number> {
    return (await this.countRead(status)).value;
  }

  /** A search's total: counted with its page (never from the totals, which are per status only); a scan. */
  private async countSearch(
    status: ApplicationStatus | undefined,
    q: string,
  ): Promise<{ value: number; sentAt: number }> {
    const sentAt = this.clock.now();
    return { value: await this.collection.countDocuments(applicationQueries.list(status, undefined, q)), sentAt };
  }

  /** How many applications are in each status (every status named, 0 when none) and their sum: one aggregate. */
  async countsByStatus(signal?: AbortSignal): Promise<StatusCounts> {
    const groups = await this.collection
      .aggregate<{ _id: unknown; count: number }>([...applicationQueries.countsByStatus], signal ? { signal } : {})
      .toArray();
    const counts = Object.fromEntries(statuses.map((status) => [status, 0])) as Record<ApplicationStatus, number>;
    let total = 0;
    for (const { _id, count } of groups) {
      // A status this code does not know (none is written) still counts in the total.
      if (typeof _id === 'string' && _id in counts) counts[_id as ApplicationStatus] = count;
      total += count;
    }
    return { counts, total };
  }

  private countRead(status?: ApplicationStatus): Promise<{ value: number; sentAt: number }> {
    const load = () =>
      status
        ? this.collection.countDocuments(applicationQueries.countByStatus(status))
        : this.collection.estimatedDocumentCount();
    if (this.listCache) return this.listCache.total(status, load);
    const sentAt = this.clock.now();
    return load().then((value) => ({ value, sentAt }));
  }

  /**
   * Moves every id to `to`; the caller holds the batch lease. Reads all documents once, then writes each
   * with a filter pinned to the version and status it read: a write that misses was beaten by a
   * concurrent edit (conflict). Items not yet written when `signal` aborts (lease lost) are conflicts.
   */
  async batchSetStatus(ids: string[], to: TargetStatus, actor: Actor, signal?: AbortSignal): Promise<BatchResult> {
    const read = new Map(
      (
        await this.collection
          .find(applicationQueries.byIds(ids), { projection: applicationQueries.publicProjection })
          .toArray()
      ).map((doc) => [doc._id, doc]),
    );
    const results: BatchItemResult[] = new Array(ids.length);
    const written: WrittenChange[] = [];
    let next = 0;
    const lane = async () => {
      while (next < ids.length) {
        const index = next++;
        const id = ids[index]!;
        const item = await this.setItemStatus(id, read.get(id), to, actor, signal);
        results[index] = item.result;
        if (item.change) written.push(item.change);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.batchConcurrency, ids.length) }, lane));
    await this.afterChange(written);
    const counts: Record<BatchOutcome, number> = { updated: 0, conflict: 0, not_found: 0, invalid: 0, forbidden: 0 };
    for (const result of results) counts[result.outcome]++;
    return { results, counts };
  }

  /** One item of a batch: checked on the version the batch read, written pinned to it. */
  private async setItemStatus(
    id: string,
    doc: Application | undefined,
    to: TargetStatus,
    actor: Actor,
    signal?: AbortSignal,
  ): Promise<{ result: BatchItemResult; change?: WrittenChange }> {
    if (!doc) return { result: { id, outcome: 'not_found' } };
    if (!canMove(doc.status, to)) {
      return { result: { id, outcome: 'invalid', version: doc.version, error: invalidTransition(doc.status, to) } };
    }
    // Checked on the version read; the write below pins that version, so the check holds for it.
    const rule = to === 'approved' && this.fourEyes ? fourEyesRefusal('approve', doc, actor.id) : null;
    if (rule) {
      const error = fourEyesError(rule, id).message;
      return { result: { id, outcome: 'forbidden', code: rule, version: doc.version, error } };
    }
    if (signal?.aborted) {
      return { result: { id, outcome: 'conflict', error: 'the batch lost its lease before this item' } };
    }
    const at = this.now();
    const lastChange = withoutUndefined<LastChange>({
      version: doc.version + 1,
      at,
      actor: actor.id,
      action: 'batch-update',
      from: doc.status,
      requestId: actor.requestId,
    });
    const set: Partial<ApplicationDoc> = { status: to, updatedAt: at, updatedBy: actor.id, lastChange };
    if (to === 'approved') Object.assign(set, approvalOf(actor.id));
    const entry = changeEntry({
      version: doc.version + 1,
      at,
      by: actor.id,
      action: 'batch-update',
      paths: [{ path: 'status', old: doc.status, new: to }],
    });
    const updated = await this.collection.updateOne(
      applicationQueries.writable(id, [doc.status], doc.version),
      applicationQueries.change(set, entry, this.keep),
    );
    if (updated.matchedCount === 0) {
      return { result: { id, outcome: 'conflict', error: `changed since the batch read version ${doc.version}` } };
    }
    const app: Application = { ...doc, status: to, version: doc.version + 1, updatedAt: at, updatedBy: actor.id };
    if (set.approvedBy) app.approvedBy = set.approvedBy;
    const change: WrittenChange = {
      app,
      from: doc.status,
      at,
      actor: actor.id,
      action: 'batch-update',
      requestId: actor.requestId,
    };
    return { result: { id, outcome: 'updated', version: app.version }, change };
  }

  /**
   * Redoes the audit entries and jobs of every change stamped at or after the durable checkpoint, from
   * each document's lastChange, then moves the checkpoint forward: run it after a crash (or
   * periodically) to close the gap between a write and its effects, however long after. Idempotent.
   *
   * Stamps (lastChange.at) come from each writer's ServerClock, i.e. the server's time as that instance
   * estimates it, taken just before its write is sent; writes of several instances can therefore land
   * out of stamp order. The checkpoint never passes now - marginMs (on this instance's estimate of the
   * same server time), so a write that lands later with an earlier stamp is still ahead of it, as long
   * as stamp error plus the write's delay stays under the margin. Changes within the margin are
   * replayed again on the next run: harmless, both effects are keyed by version.
   * Only a document's latest change is kept, so an earlier change lost in a crash before another one
   * landed on the same document is not recovered.
   */
  replayChanges(options: { marginMs: number; batchSize?: number }): Promise<ReplayResult> {
    return replayChanges(this.collection, this.clock, (changes) => this.afterChange(changes), options);
  }

  private afterChange(changes: WrittenChange[]): Promise<void> {
    // This instance's own lists show the write at once; other instances learn it within their bound.
    for (const change of changes) this.listCache?.changed({ status: change.app.status, from: change.from });
    return recordEffects(changes, this.audit, this.queue);
  }
}
