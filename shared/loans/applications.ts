// Loan applications: schemas, the status machine, and the repository. Every write is one conditional
// findOneAndUpdate/updateOne whose filter carries the whole check (id, version, allowed source states);
// only a miss costs a second read, to tell the caller which check failed. After a write succeeds, its
// audit entry (keyed <id>:<version>) and its job (keyed by jobId) are written; both are idempotent, and
// each document carries its lastChange so replayChanges can redo them after a crash in between.
import type { Collection, Db, Filter, Sort, UpdateFilter } from 'mongodb';
import { z } from 'zod';
import type { Queue } from '../concurrency/queue/queue.ts';
import type { Clock } from '../core/clock.ts';
import type { IndexPlan } from '../core/db.ts';
import { ConflictError, NotFoundError, PreconditionFailedError, ValidationError } from '../core/errors.ts';
import { fourEyesError, fourEyesFilter, fourEyesRefusal } from '../identity/rbac.ts';
import { type AuditAction, type AuditEntry, AuditLog, auditId } from './audit.ts';

export const APPLICATIONS_COLLECTION = 'applications';
/** How far replayChanges has got, durably: one document per replayed collection. */
export const REPLAY_CHECKPOINTS_COLLECTION = 'replay_checkpoints';
const REPLAY_CHECKPOINT_ID = 'applications.lastChange';

// ---- The status machine -----------------------------------------------------------------------------

export const statuses = ['pending', 'under_review', 'approved', 'rejected', 'disbursed'] as const;
export type ApplicationStatus = (typeof statuses)[number];

/** Legal moves. A same-status "move" is not a move: it is refused like any other illegal one. */
export const transitions: Record<ApplicationStatus, readonly ApplicationStatus[]> = {
  pending: ['under_review'],
  under_review: ['approved', 'rejected'],
  approved: ['disbursed'],
  rejected: [],
  disbursed: [],
};

/** Statuses a move can lead to (nothing leads back to pending). */
export const targetStatuses = ['under_review', 'approved', 'rejected', 'disbursed'] as const;
export type TargetStatus = (typeof targetStatuses)[number];
/**
 * What PUT and batch-update may set. 'disbursed' is reached only through POST .../disburse, which
 * writes the ledger entry first: a status change alone must never move money on paper.
 */
export const adminTargetStatuses = ['under_review', 'approved', 'rejected'] as const;

/** Applicant fields can be edited until a decision is made; after that the application is frozen. */
export const editableStatuses: readonly ApplicationStatus[] = ['pending', 'under_review'];

export const canMove = (from: ApplicationStatus, to: ApplicationStatus) => transitions[from].includes(to);
export const sourcesOf = (to: ApplicationStatus) => statuses.filter((from) => canMove(from, to));

/** The job published when an application enters a status: the work that follows it. */
export const jobOnEntering: Partial<Record<ApplicationStatus, string>> = {
  under_review: 'application.review',
  approved: 'application.approved',
};
/** One job per (application, version): a retried request or a replay publishes nothing new. */
export const jobIdFor = (name: string, applicationId: string, version: number) => `${name}:${applicationId}:${version}`;
/**
 * Retries of the jobs that follow a change: a failure is mostly transient (a database hiccup, a
 * conflict storm), and the handlers are idempotent. Runs after 1, 2, 4 and 8 s, then dead-lettered.
 */
export const jobRetry = { attempts: 5, backoff: { type: 'exponential' as const, delay: 1_000 } };

// ---- Schemas ----------------------------------------------------------------------------------------

export const applicationIdSchema = z.string().regex(/^APP-[0-9A-Za-z-]{8,64}$/, 'not an application id');
export const newApplicationId = () => `APP-${crypto.randomUUID()}`;

/** Whole currency units: no floats for money. */
const applicantShape = {
  applicantName: z.string().trim().min(1).max(200),
  email: z.email().max(254).optional(),
  monthlyIncome: z.number().int().min(0).max(10_000_000),
  loanAmount: z.number().int().min(100).max(10_000_000),
  termMonths: z.number().int().min(1).max(480),
  purpose: z.string().trim().min(1).max(500).optional(),
  identityNumber: z
    .string()
    .regex(/^[A-Za-z0-9-]{4,32}$/, 'letters, digits and dashes, 4 to 32')
    .optional(),
};
export const editableFields = Object.keys(applicantShape) as (keyof typeof applicantShape)[];
/** The fields that set the money: whoever changes one prepares the loan, and the score must be redone. */
export const financialFields: readonly string[] = ['monthlyIncome', 'loanAmount', 'termMonths'];
/** Statuses in which evidence (documents, OCR results) may still be added: the decision is not taken. */
export const evidenceStatuses: readonly ApplicationStatus[] = ['pending', 'under_review'];

export const applicationInputSchema = z.object(applicantShape).strict();
export type ApplicationInput = z.infer<typeof applicationInputSchema>;

/** PUT: a target status and/or applicant fields to edit, plus the version the writer read. */
export const applicationUpdateSchema = applicationInputSchema
  .partial()
  .extend({
    status: z.enum(adminTargetStatuses).optional(),
    version: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  })
  .strict();
export type ApplicationUpdate = z.infer<typeof applicationUpdateSchema>;

export const sortOptions = ['-createdAt', 'createdAt', '-updatedAt', 'updatedAt'] as const;
export type SortOption = (typeof sortOptions)[number];
type SortField = 'createdAt' | 'updatedAt';

function parseSort(sort: SortOption): { field: SortField; dir: 1 | -1 } {
  return sort.startsWith('-') ? { field: sort.slice(1) as SortField, dir: -1 } : { field: sort as SortField, dir: 1 };
}

// ---- Documents --------------------------------------------------------------------------------------

/** What the last write did, stored in the same atomic write, so its audit entry and job can be redone. */
export interface LastChange {
  /**
   * The version this change produced. Other writers (OCR results, recommendations) bump the version
   * without a lastChange, so the replay must not take the document's current version for this one.
   */
  version?: number;
  at: Date;
  actor: string;
  action: AuditAction;
  /** Present when the write changed the status (the filter pinned the one source state). */
  from?: ApplicationStatus;
  fields?: string[];
  requestId?: string;
}

export interface Application extends ApplicationInput {
  _id: string;
  status: ApplicationStatus;
  version: number;
  createdAt: Date;
  updatedAt: Date;
  createdBy: string;
  updatedBy: string;
  /** The creator, financial-field editors and document uploaders (four eyes: see shared/identity/rbac.ts). */
  preparedBy?: string[];
  approvedBy?: string;
}

export interface ApplicationDoc extends Application {
  lastChange: LastChange;
}

export interface Actor {
  /** The admin's id. */
  id: string;
  requestId?: string;
}

// ---- Indexes, filters and updates -------------------------------------------------------------------

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

type VersionCondition = number | { $in: number[] } | undefined;

interface KeysetPosition {
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
  change: (set: Partial<ApplicationDoc>): UpdateFilter<ApplicationDoc> => ({ $set: set, $inc: { version: 1 } }),
  /** A change by a preparer: it joins preparedBy; a financial change also drops the stale recommendation. */
  prepare: (set: Partial<ApplicationDoc>, preparer: string, financial: boolean): UpdateFilter<ApplicationDoc> => ({
    $set: set,
    $addToSet: { preparedBy: preparer },
    ...(financial ? { $unset: { recommendation: '' } } : {}),
    $inc: { version: 1 },
  }),
  /** Still open to evidence (a document upload records its uploader as a preparer through this filter). */
  openToEvidence: (id: string): Filter<ApplicationDoc> => ({ _id: id, status: { $in: [...evidenceStatuses] } }),
  /**
   * The page's filter; after a cursor, everything strictly past (value, id) in the sort order. The range
   * on the sort field bounds the index scan, the $or only drops the ties already seen.
   */
  list: (status: ApplicationStatus | undefined, after?: KeysetPosition): Filter<ApplicationDoc> => {
    const filter: Filter<ApplicationDoc> = status ? { status } : {};
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
  replayProjection: { status: 1, version: 1, lastChange: 1 } as const,
  /** Responses never show the bookkeeping. */
  publicProjection: { lastChange: 0 } as const,
};

// ---- Cursors ----------------------------------------------------------------------------------------

const cursorSchema = z
  .object({
    s: z.enum(sortOptions),
    st: z.enum(statuses).nullable(),
    v: z.number().int(),
    i: applicationIdSchema,
  })
  .strict();
export type CursorPosition = z.infer<typeof cursorSchema>;

/** Opaque to clients: base64url of the sort, the status filter and the last (sort value, _id) seen. */
export function encodeCursor(position: CursorPosition): string {
  return btoa(JSON.stringify(position)).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

export function decodeCursor(cursor: string): CursorPosition {
  let parsed: unknown;
  try {
    parsed = JSON.parse(atob(cursor.replaceAll('-', '+').replaceAll('_', '/')));
  } catch {
    parsed = undefined;
  }
  const result = cursorSchema.safeParse(parsed);
  if (!result.success) throw new ValidationError('cursor is not valid', [{ path: 'cursor', message: 'not a cursor' }]);
  return result.data;
}

// ---- Preconditions ----------------------------------------------------------------------------------

export interface Precondition {
  /** The version in the body: a mismatch is a 409 (the seed's contract). */
  version?: number;
  /** From If-Match: '*' (any existing document) or the versions its strong entity tags name; a miss is a 412. */
  ifMatch?: '*' | number[];
}

/** The version condition of the happy path's filter; null when no version can satisfy both preconditions. */
function versionCondition(pre: Precondition): VersionCondition | null {
  const list = pre.ifMatch === '*' ? undefined : pre.ifMatch;
  if (pre.version !== undefined) return list && !list.includes(pre.version) ? null : pre.version;
  if (list) return list.length === 1 ? list[0] : { $in: list };
  return undefined;
}

// ---- The repository ---------------------------------------------------------------------------------

export interface ListQuery {
  status?: ApplicationStatus;
  sort?: SortOption;
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

interface Applied {
  app: Application;
  from: ApplicationStatus | null;
  at: Date;
  actor: string;
  action: AuditAction;
  fields?: string[];
  requestId?: string;
}

export interface ApplicationsOptions {
  clock: Clock;
  queue: Queue;
  audit?: AuditLog;
  /** Item writes of a batch in flight at once. */
  batchConcurrency?: number;
  /**
   * How long a list total may be reused by this instance (ms); 0 counts on every request. Admins
   * paging through a list see a total at most this old, and the database counts each status at
   * most once per period per instance, however many lists are served.
   */
  countCacheMs?: number;
  /** Enforce four eyes on approvals (FOUR_EYES); on unless turned off. */
  fourEyes?: boolean;
}

export interface ReplayResult {
  /** Documents whose latest change was replayed (changes within the margin count on every run). */
  replayed: number;
  /** Every change stamped before this has been replayed. */
  checkpoint: Date;
}

interface ReplayCheckpoint {
  _id: string;
  at: Date;
}

/** The change a document's lastChange describes, under the version it produced (later writes may have bumped it). */
function replayedChange({ lastChange, ...app }: ApplicationDoc): Applied {
  return {
    app: { ...app, version: lastChange.version ?? app.version },
    from: lastChange.action === 'create' ? null : (lastChange.from ?? app.status),
    at: lastChange.at,
    actor: lastChange.actor,
    action: lastChange.action,
    fields: lastChange.fields,
    requestId: lastChange.requestId,
  };
}

function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

function invalidTransition(from: ApplicationStatus, to: ApplicationStatus): string {
  const allowed = transitions[from];
  return `cannot move an application from ${from} to ${to} (allowed from ${from}: ${allowed.length ? allowed.join(', ') : 'none'})`;
}

export class Applications {
  readonly collection: Collection<ApplicationDoc>;
  readonly audit: AuditLog;
  private readonly clock: Clock;
  private readonly queue: Queue;
  private readonly batchConcurrency: number;
  private readonly countCacheMs: number;
  private readonly fourEyes: boolean;
  private readonly counts = new Map<string, { at: number; value: Promise<number> }>();

  constructor(db: Db, options: ApplicationsOptions) {
    this.collection = db.collection<ApplicationDoc>(APPLICATIONS_COLLECTION);
    this.audit = options.audit ?? new AuditLog(db);
    this.clock = options.clock;
    this.queue = options.queue;
    this.batchConcurrency = options.batchConcurrency ?? 8;
    this.countCacheMs = options.countCacheMs ?? 0;
    this.fourEyes = options.fourEyes ?? true;
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
    await this.collection.insertOne({ ...app, lastChange });
    await this.afterChange([{ app, from: null, at, actor: actor.id, action: 'create', requestId: actor.requestId }]);
    return app;
  }

  async get(id: string, signal?: AbortSignal): Promise<Application | null> {
    return this.collection.findOne(applicationQueries.byId(id), {
      projection: applicationQueries.publicProjection,
      ...(signal ? { signal } : {}),
    });
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
    const fields = withoutUndefined(change.fields);
    const edited = Object.keys(fields).sort();
    const to = change.status;
    if (!to && edited.length === 0) throw new ValidationError('nothing to change: send a status or applicant fields');
    let states: readonly ApplicationStatus[] = to ? sourcesOf(to) : statuses;
    if (edited.length > 0) states = states.filter((state) => editableStatuses.includes(state));
    const financial = edited.some((field) => financialFields.includes(field));
    const approving = to === 'approved' && this.fourEyes;
    // Changing the figures while approving them makes the approver a preparer: never written.
    const selfPrepared = approving && financial;
    const version = versionCondition(pre);
    for (let attempt = 0; attempt < 3; attempt++) {
      if (version !== null && states.length > 0 && !selfPrepared) {
        // The write pins one version, so that its lastChange can name the version it produces. Only
        // If-Match: * (or a list of tags) needs a read first to learn which version that is.
        let pinned = typeof version === 'number' ? version : undefined;
        if (pinned === undefined) {
          const current = await this.collection.findOne(applicationQueries.byId(id), { projection: { version: 1 } });
          const allowed = typeof version === 'object' ? version.$in : undefined;
          if (current && (!allowed || allowed.includes(current.version))) pinned = current.version;
        }
        const at = this.now();
        const lastChange = withoutUndefined<LastChange>({
          version: pinned === undefined ? undefined : pinned + 1,
          at,
          actor: actor.id,
          action: 'update',
          from: to && states.length === 1 ? states[0] : undefined,
          fields: edited.length > 0 ? edited : undefined,
          requestId: actor.requestId,
        });
        const set: Partial<ApplicationDoc> = { ...fields, updatedAt: at, updatedBy: actor.id, lastChange };
        if (to) set.status = to;
        if (to === 'approved') set.approvedBy = actor.id;
        const filter = applicationQueries.writable(id, states, pinned ?? version);
        // The rule is part of the write's filter: it holds on exactly the version the write replaces.
        if (approving) Object.assign(filter, fourEyesFilter('approve', actor.id));
        const before = await this.collection.findOneAndUpdate(
          filter,
          financial ? applicationQueries.prepare(set, actor.id, true) : applicationQueries.change(set),
          { returnDocument: 'before', projection: applicationQueries.publicProjection },
        );
        if (before) {
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
          await this.afterChange([
            {
              app,
              from: before.status,
              at,
              actor: actor.id,
              action: 'update',
              fields: lastChange.fields,
              requestId: actor.requestId,
            },
          ]);
          return app;
        }
      }
      const current = await this.get(id);
      if (!current) throw new NotFoundError(`application ${id} not found`);
      if (pre.ifMatch !== undefined && pre.ifMatch !== '*' && !pre.ifMatch.includes(current.version)) {
        throw new PreconditionFailedError(
          `If-Match failed: application ${id} is at version ${current.version}`,
          current,
        );
      }
      if (pre.version !== undefined && pre.version !== current.version) {
        throw new ConflictError(`application ${id} is at version ${current.version}, not ${pre.version}`, current);
      }
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
      if (approving) {
        const rule = selfPrepared ? 'four_eyes_preparer_cannot_approve' : fourEyesRefusal('approve', current, actor.id);
        if (rule) throw fourEyesError(rule, id);
      }
      // Every check passes now: the document moved into a state our write accepts after it missed. Again.
    }
    const current = await this.get(id);
    throw new ConflictError(`application ${id} kept changing; retry`, current);
  }

  /**
   * Before a document is stored: records its uploader as a preparer, in a versioned write whose filter
   * also requires the application to be open to evidence. NotFoundError; ConflictError with the code
   * evidence_frozen once it is decided (approved, rejected, disbursed).
   */
  async recordUploader(id: string, actor: Actor): Promise<Application> {
    for (let attempt = 0; attempt < 5; attempt++) {
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
      const written = await this.collection.updateOne(
        { ...applicationQueries.openToEvidence(id), version: current.version },
        applicationQueries.prepare({ updatedAt: at, updatedBy: actor.id, lastChange }, actor.id, false),
      );
      if (written.matchedCount === 1) {
        const app: Application = {
          ...current,
          version: current.version + 1,
          updatedAt: at,
          updatedBy: actor.id,
          preparedBy: [...new Set([...(current.preparedBy ?? []), actor.id])],
        };
        await this.afterChange([
          {
            app,
            from: current.status,
            at,
            actor: actor.id,
            action: 'update',
            fields: lastChange.fields,
            requestId: actor.requestId,
          },
        ]);
        return app;
      }
      // Changed since the read: read again, and refuse if it was decided meanwhile.
    }
    throw new ConflictError(`application ${id} kept changing; retry`, await this.get(id));
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
    let sort = query.sort ?? '-createdAt';
    let status = query.status;
    let after: KeysetPosition | undefined;
    if (query.cursor !== undefined) {
      const position = decodeCursor(query.cursor);
      if ((query.sort && query.sort !== position.s) || (query.status && query.status !== position.st)) {
        throw new ValidationError('the cursor was made for another sort or status filter', [
          { path: 'cursor', message: 'sort and status must match the cursor, or be left out' },
        ]);
      }
      sort = position.s;
      status = position.st ?? undefined;
      after = { ...parseSort(sort), value: new Date(position.v), id: position.i };
    }
    const { field, dir } = parseSort(sort);
    const skip = after || !query.page ? 0 : (query.page - 1) * query.limit;
    // One more than asked tells whether a next page exists, without a count.
    const page = this.collection
      .find(applicationQueries.list(status, after), {
        projection: applicationQueries.publicProjection,
        ...(query.signal ? { signal: query.signal } : {}),
      })
      .sort(applicationQueries.listOrder(field, dir))
      .skip(skip)
      .limit(query.limit + 1)
      .toArray();
    const [docs, total] = await Promise.all([page, query.withTotal ? this.count(status) : undefined]);
    const items = docs.slice(0, query.limit);
    const last = items.at(-1);
    const nextCursor =
      docs.length > query.limit && last
        ? encodeCursor({ s: sort, st: status ?? null, v: last[field].getTime(), i: last._id })
        : null;
    return { items, nextCursor, ...(total === undefined ? {} : { total }) };
  }

  /**
   * The list's total. With a status: a count of {status, ...} index keys (O(matching), no documents
   * fetched). Without: the collection's size from its metadata (O(1); exact except after an unclean
   * shutdown of mongod, until it is validated).
   */
  count(status?: ApplicationStatus): Promise<number> {
    const key = status ?? '';
    const now = this.clock.now();
    const cached = this.counts.get(key);
    if (cached && now - cached.at < this.countCacheMs) return cached.value;
    const value = status
      ? this.collection.countDocuments(applicationQueries.countByStatus(status))
      : this.collection.estimatedDocumentCount();
    // Concurrent lists share one count; a failed count is not kept.
    this.counts.set(key, { at: now, value });
    value.catch(() => this.counts.delete(key));
    return value;
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
    const applied: Applied[] = [];
    const writeOne = async (index: number) => {
      const id = ids[index]!;
      const doc = read.get(id);
      if (!doc) {
        results[index] = { id, outcome: 'not_found' };
        return;
      }
      if (!canMove(doc.status, to)) {
        results[index] = { id, outcome: 'invalid', version: doc.version, error: invalidTransition(doc.status, to) };
        return;
      }
      // Checked on the version read; the write below pins that version, so the check holds for it.
      const rule = to === 'approved' && this.fourEyes ? fourEyesRefusal('approve', doc, actor.id) : null;
      if (rule) {
        results[index] = {
          id,
          outcome: 'forbidden',
          code: rule,
          version: doc.version,
          error: fourEyesError(rule, id).message,
        };
        return;
      }
      if (signal?.aborted) {
        results[index] = { id, outcome: 'conflict', error: 'the batch lost its lease before this item' };
        return;
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
      if (to === 'approved') set.approvedBy = actor.id;
      const written = await this.collection.updateOne(
        applicationQueries.writable(id, [doc.status], doc.version),
        applicationQueries.change(set),
      );
      if (written.matchedCount === 0) {
        results[index] = { id, outcome: 'conflict', error: `changed since the batch read version ${doc.version}` };
        return;
      }
      const app: Application = { ...doc, status: to, version: doc.version + 1, updatedAt: at, updatedBy: actor.id };
      if (set.approvedBy) app.approvedBy = set.approvedBy;
      applied.push({ app, from: doc.status, at, actor: actor.id, action: 'batch-update', requestId: actor.requestId });
      results[index] = { id, outcome: 'updated', version: app.version };
    };
    let next = 0;
    const lane = async () => {
      while (next < ids.length) await writeOne(next++);
    };
    await Promise.all(Array.from({ length: Math.min(this.batchConcurrency, ids.length) }, lane));
    await this.afterChange(applied);
    const counts: Record<BatchOutcome, number> = { updated: 0, conflict: 0, not_found: 0, invalid: 0, forbidden: 0 };
    for (const result of results) counts[result.outcome]++;
    return { results, counts };
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
  async replayChanges(options: { marginMs: number; batchSize?: number }): Promise<ReplayResult> {
    const batchSize = options.batchSize ?? 500;
    // Taken before reading: a change stamped before this, minus the margin, has landed by now.
    const safeUntil = new Date(this.clock.now() - options.marginMs);
    const checkpoints = this.checkpoints();
    const saved = await checkpoints.findOne({ _id: REPLAY_CHECKPOINT_ID });
    // No checkpoint yet: replay from the first change ever stamped.
    let checkpoint = saved?.at ?? new Date(0);
    const advance = async (to: Date) => {
      if (to.getTime() <= checkpoint.getTime()) return;
      // $max: a run that lost its lease and finishes late cannot move it back.
      await checkpoints.updateOne({ _id: REPLAY_CHECKPOINT_ID }, { $max: { at: to } }, { upsert: true });
      checkpoint = to;
    };
    let replayed = 0;
    let after: { at: Date; id: string } | undefined;
    for (;;) {
      const docs = await this.collection
        .find(applicationQueries.changedFrom(checkpoint, after), { projection: applicationQueries.replayProjection })
        .sort(applicationQueries.replayOrder)
        .limit(batchSize)
        .toArray();
      await this.afterChange(docs.map(replayedChange));
      replayed += docs.length;
      const last = docs.at(-1);
      if (!last || docs.length < batchSize) break;
      // Everything stamped before the last one is done (ties with it may be in the next batch).
      await advance(new Date(Math.min(last.lastChange.at.getTime(), safeUntil.getTime())));
      after = { at: last.lastChange.at, id: last._id };
    }
    await advance(safeUntil);
    return { replayed, checkpoint };
  }

  private checkpoints(): Collection<ReplayCheckpoint> {
    return this.collection.db.collection<ReplayCheckpoint>(REPLAY_CHECKPOINTS_COLLECTION);
  }

  /** The audit entries and jobs of applied changes: one insert each, both idempotent. */
  private async afterChange(changes: Applied[]): Promise<void> {
    if (changes.length === 0) return;
    const entries: AuditEntry[] = changes.map((change) =>
      withoutUndefined<AuditEntry>({
        _id: auditId(change.app._id, change.app.version),
        at: change.at,
        actor: change.actor,
        action: change.action,
        applicationId: change.app._id,
        from: change.from,
        to: change.app.status,
        version: change.app.version,
        fields: change.fields,
        requestId: change.requestId,
      }),
    );
    const jobs = changes.flatMap((change) => {
      // Entering a status starts its work; new figures under review need a new score.
      const rescore =
        change.from === 'under_review' &&
        change.app.status === 'under_review' &&
        !!change.fields?.some((field) => financialFields.includes(field));
      const name =
        change.from !== change.app.status
          ? jobOnEntering[change.app.status]
          : rescore
            ? jobOnEntering.under_review
            : undefined;
      if (!name) return [];
      const data = { applicationId: change.app._id, version: change.app.version };
      return [{ name, data, opts: { jobId: jobIdFor(name, change.app._id, change.app.version), ...jobRetry } }];
    });
    await Promise.all([this.audit.record(entries), jobs.length > 0 ? this.queue.addBulk(jobs) : undefined]);
  }
}
