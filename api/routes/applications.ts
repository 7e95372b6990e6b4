// /api/applications: list (page or cursor), get with ETag, create, versioned PUT, batch status update.
import { createRoute, type OpenAPIHono, type RouteHandler, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { CacheRead } from '../../shared/concurrency/ttl-cache.ts';
import type { Permission } from '../../shared/identity/rbac.ts';
import {
  type Application,
  type ApplicationListCache,
  Applications,
  adminTargetStatuses,
  applicationIdSchema,
  applicationInputSchema,
  applicationUpdateSchema,
  type CachedPage,
  checklistInputSchema,
  editableFields,
  type ListPageQuery,
  noteInputSchema,
  type Precondition,
  sortOptions,
  statuses,
} from '../../shared/loans/applications.ts';
import { type AppEnv, requirePermission } from '../auth.ts';
import { bodyEtag, etagOf, noneMatchHits, parseIfMatch, parseIfNoneMatch } from '../headers.ts';
import { HttpError } from '../http-errors.ts';
import { ApplicationIdParam, errorResponses, jsonBody, signedIn } from '../openapi.ts';
import type { Services } from '../services.ts';

/** One lease for every batch, whatever its target status: batches over overlapping ids never interleave. */
export const BATCH_LOCK_KEY = 'batch:applications';
const BATCH_LOCK_WAIT_MS = 30_000;
const MAX_BATCH = 500;

// Rebuilt from the shared shapes here, where zod has its .openapi() extension whatever the import order.
const ApplicationInput = z.object(applicationInputSchema.shape).strict().openapi('ApplicationInput');
const ApplicationUpdate = z.object(applicationUpdateSchema.shape).strict().openapi('ApplicationUpdate');

const stamped = { by: z.string(), at: z.string() };
export const ApplicationJson = z
  .object({
    ...applicationInputSchema.shape,
    _id: z.string().openapi({ example: 'APP-5f0c6c3e-8d0b-4a8e-9a53-0f6a3d1b2c4d' }),
    status: z.enum(statuses),
    version: z.number().int(),
    createdAt: z.string(),
    updatedAt: z.string(),
    createdBy: z.string(),
    updatedBy: z.string(),
    preparedBy: z
      .array(z.string())
      .optional()
      .openapi({ description: 'admins who created it, changed its financial fields or uploaded a document' }),
    approvedBy: z.string().optional().openapi({ description: 'the admin (or approval-worker) who approved it' }),
    // Written by the workers and the disbursement; present once they have run.
    ocr: z
      .object({ documentId: z.string(), fields: z.record(z.string(), z.unknown()) })
      .loose()
      .optional()
      .openapi({ description: 'what the OCR worker read from the latest document, a confidence per field' }),
    recommendation: z
      .object({
        recommendation: z.enum(['auto_approve', 'manual_review', 'auto_reject']),
        reasons: z.array(z.string()),
      })
      .loose()
      .optional()
      .openapi({ description: "the approval worker's recommendation, its reasons, metrics and thresholds" }),
    repaymentPlan: z
      .object({ monthlyPayment: z.number(), termMonths: z.number(), annualRate: z.number(), total: z.number() })
      .optional(),
    disbursement: z
      .object({ idempotencyKey: z.string(), amount: z.number(), state: z.enum(['disbursing', 'disbursed']) })
      .loose()
      .optional(),
    // Nested data that merges per entry (PATCH); absent until a patch sets it.
    contact: z.object({ phone: z.string(), email: z.string(), address: z.string() }).partial().optional(),
    notes: z
      .record(z.string(), noteInputSchema.extend(stamped))
      .optional()
      .openapi({ description: 'notes keyed by the id their author picked; the server stamps by and at' }),
    checklist: z.record(z.string(), checklistInputSchema.extend(stamped)).optional(),
  })
  .openapi('Application');
type ApplicationJson = z.infer<typeof ApplicationJson>;

const ListQuery = z
  .object({
    page: z.coerce
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .optional()
      .openapi({
        description:
          'page mode, from 1; (page - 1) * limit may not exceed LIST_MAX_SKIP (10,000 by default): deeper pages ' +
          'answer 400 page_too_deep, walk them with cursor instead',
      }),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    status: z.enum(statuses).optional(),
    sort: z.enum(sortOptions).optional().openapi({ description: 'field, `-` for descending; default -createdAt' }),
    q: z
      .string()
      .trim()
      .min(1)
      .max(100)
      // Control characters (C0, DEL, C1) spelled out: JSON Schema tools do not all read \p{Cc}.
      // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them is the point
      .regex(/^[^\u0000-\u001f\u007f-\u009f]*$/, 'no control characters')
      .optional()
      .openapi({
        description:
          'search, trimmed: an application id (APP-...) matches that application; anything else is a ' +
          "case-insensitive prefix of the applicant's name (regular-expression characters match themselves). " +
          'Combines with status, sort, page and cursor (a cursor carries its q)',
        example: 'ada',
      }),
    cursor: z
      .string()
      .min(1)
      .max(1024)
      .optional()
      .openapi({ description: 'cursor mode: the nextCursor of the previous answer' }),
    total: z.enum(['true', 'false']).default('true').openapi({ description: 'page mode: false skips the count' }),
  })
  .strict();

const ListResponse = z
  .object({
    items: z.array(ApplicationJson),
    page: z.number().int().optional(),
    limit: z.number().int(),
    total: z.number().int().optional(),
    nextCursor: z.string().nullable(),
  })
  .openapi('ApplicationList');

const IfMatchHeader = z.object({
  'if-match': z
    .string()
    .max(1024)
    .optional()
    .openapi({ description: 'RFC 9110: "<version>" (the ETag you read), a list of them, or *' }),
});

const IfNoneMatchHeader = z.object({
  'if-none-match': z.string().max(1024).optional().openapi({
    description: 'RFC 9110: the ETag(s) you hold, or *: 304 with no body when one is still current (weak comparison)',
  }),
});

const header = (description: string) => ({ schema: { type: 'string' as const }, description });

/** What a list answer (200 or 304) says about its freshness. */
const listFreshnessHeaders = {
  ETag: header('strong: a hash of this exact body; send it back in If-None-Match'),
  'Cache-Control': header('private, no-cache: keep it, but revalidate with If-None-Match before each use'),
  Age: header('whole seconds since the query behind this answer was sent (RFC 9111)'),
  'Cache-Status': header(
    'RFC 9211, cache loan-admin: hit (from this instance; ttl and detail say how long it still serves), ' +
      'fwd=miss (read now; collapsed: shared with concurrent requests; stored: kept), fwd=bypass (LIST_CACHE_MS=0)',
  ),
};

const singleHeaders = {
  ETag: header('the version, quoted'),
  'Cache-Control': header('private, no-cache: revalidate with If-None-Match before each use'),
};

const BatchRequest = z
  .object({
    applicationIds: z
      .array(applicationIdSchema)
      .min(1)
      .max(MAX_BATCH)
      .refine((ids) => new Set(ids).size === ids.length, 'applicationIds must be unique'),
    status: z.enum(adminTargetStatuses),
  })
  .strict()
  .openapi('BatchUpdateRequest');

const BatchResponse = z
  .object({
    results: z.array(
      z.object({
        id: z.string(),
        outcome: z.enum(['updated', 'conflict', 'not_found', 'invalid', 'forbidden']),
        version: z.number().int().optional(),
        error: z.string().optional(),
        code: z.string().optional().openapi({ description: 'forbidden: the four-eyes rule that refused it' }),
      }),
    ),
    counts: z.object({
      updated: z.number(),
      conflict: z.number(),
      not_found: z.number(),
      invalid: z.number(),
      forbidden: z.number(),
    }),
  })
  .openapi('BatchUpdateResult');

const single = (schema: typeof ApplicationJson, description: string) => ({
  description,
  headers: { ETag: header('the version, quoted') },
  content: { 'application/json': { schema } },
});

/** Entries stamped with a Date (notes, checklist items) as JSON has them. */
function stampedJson<T extends { at: Date }>(entries: Record<string, T> | undefined) {
  if (!entries) return undefined;
  return Object.fromEntries(
    Object.entries(entries).map(([id, entry]) => [id, { ...entry, at: entry.at.toISOString() }]),
  );
}

export function toJson(app: Application): ApplicationJson {
  return {
    ...app,
    createdAt: app.createdAt.toISOString(),
    updatedAt: app.updatedAt.toISOString(),
    notes: stampedJson(app.notes),
    checklist: stampedJson(app.checklist),
  };
}

const listRoute = createRoute({
  method: 'get',
  path: '/api/applications',
  tags: ['applications'],
  summary: 'List applications: page mode (page, total) or cursor mode (cursor) for deep paging',
  description:
    'Page mode skips (page - 1) * limit rows, at most LIST_MAX_SKIP (10,000 by default); beyond that the answer ' +
    'is 400 with code page_too_deep: start from the first page and follow nextCursor with ?cursor=.\n\n' +
    'Freshness: each instance serves a page from memory for at most LIST_CACHE_MS (1 s by default) after the ' +
    'query behind it was sent, so a change shows in every list at most that long after its write (at once on ' +
    'the instance that wrote it). A total may be reused for LIST_TOTAL_CACHE_MS. Age and Cache-Status say ' +
    'how old the answer is and where it came from. Every answer carries an ETag (a hash of the body): send it ' +
    'in If-None-Match and an unchanged page answers 304 with no body. Permissions are checked on every ' +
    'request, whatever the instance holds.\n\n' +
    'Search (q): a search is cached like any page, keyed by its trimmed q with the rest of the query (so ' +
    'admins repeating a search within LIST_CACHE_MS share one query, and each search is one entry among ' +
    'LIST_CACHE_MAX_ENTRIES); its total is counted with its page, never reused from the per-status totals. A ' +
    'name search reads the list in its sort order and checks each application (no index holds the name): cheap ' +
    'when many match, a scan of the collection (or of the status) when few do, and its total is always a scan.',
  ...signedIn('applications:read'),
  request: { query: ListQuery, headers: IfNoneMatchHeader },
  responses: {
    200: {
      description: 'A page',
      headers: listFreshnessHeaders,
      content: { 'application/json': { schema: ListResponse } },
    },
    304: { description: 'Not modified: the ETag you sent is this page now', headers: listFreshnessHeaders },
    ...errorResponses(400, 401, 403, 429),
  },
});

const count = z.number().int().nonnegative();
const StatusCounts = z
  .object({
    counts: z
      .object(
        Object.fromEntries(statuses.map((status) => [status, count])) as Record<
          (typeof statuses)[number],
          typeof count
        >,
      )
      .openapi({ description: 'every status, 0 when none is in it' }),
    total: count.openapi({ description: 'all applications' }),
  })
  .openapi('ApplicationCounts');

const countsRoute = createRoute({
  method: 'get',
  path: '/api/applications/counts',
  tags: ['applications'],
  summary: 'How many applications are in each status',
  description:
    "One aggregate over the applications, served from the instance's memory for at most LIST_CACHE_MS (1 s by " +
    'default) after it was sent, as the list pages are: a change shows here at most that long after its write, ' +
    'at once on the instance that wrote it. Age and Cache-Status say how old the answer is and where it came from.',
  ...signedIn('applications:read'),
  responses: {
    200: {
      description: 'The counts',
      headers: {
        'Cache-Control': listFreshnessHeaders['Cache-Control'],
        Age: listFreshnessHeaders.Age,
        'Cache-Status': listFreshnessHeaders['Cache-Status'],
      },
      content: { 'application/json': { schema: StatusCounts } },
    },
    ...errorResponses(401, 403, 429),
  },
});

const getRoute = createRoute({
  method: 'get',
  path: '/api/applications/{id}',
  tags: ['applications'],
  summary: 'One application, with its version as ETag',
  description:
    'Always read from the database (never from a list cache): exact right after any write. If-None-Match ' +
    "with the current version's ETag answers 304 with no body.",
  ...signedIn('applications:read'),
  request: { params: ApplicationIdParam, headers: IfNoneMatchHeader },
  responses: {
    200: {
      description: 'The application',
      headers: singleHeaders,
      content: { 'application/json': { schema: ApplicationJson } },
    },
    304: { description: 'Not modified: the ETag you sent is the current version', headers: singleHeaders },
    ...errorResponses(400, 401, 403, 404, 429),
  },
});

const createAppRoute = createRoute({
  method: 'post',
  path: '/api/applications',
  tags: ['applications'],
  summary: 'Create an application (pending, version 1)',
  ...signedIn('applications:create'),
  request: { body: jsonBody(ApplicationInput) },
  responses: { 201: single(ApplicationJson, 'Created'), ...errorResponses(400, 401, 403, 413, 415, 429) },
});

const updateRoute = createRoute({
  method: 'put',
  path: '/api/applications/{id}',
  tags: ['applications'],
  summary: 'Change status and/or applicant fields, with the version read (body) or If-Match',
  description:
    'Checks in this order: 404, then the version (409 for a stale body version, 412 for a failed If-Match), ' +
    'then the move (400). Moving to status X needs status:X; editing fields needs applications:edit. ' +
    'Legal moves: pending -> under_review -> approved | rejected; approved -> disbursed. A same-status move ' +
    'is illegal; fields can be edited while pending or under_review. Four eyes: whoever created the application, ' +
    'changed its financial fields or uploaded a document cannot approve it (403 four_eyes_preparer_cannot_approve).',
  ...signedIn('applications:read'),
  request: { params: ApplicationIdParam, headers: IfMatchHeader, body: jsonBody(ApplicationUpdate) },
  responses: {
    200: single(ApplicationJson, 'The application after the change (version + 1)'),
    ...errorResponses(400, 401, 403, 404, 409, 412, 413, 415, 428, 429),
  },
});

const batchRoute = createRoute({
  method: 'post',
  path: '/api/applications/batch-update',
  tags: ['applications'],
  summary: 'Move up to 500 applications to one status, with an outcome per id',
  description:
    'Runs under one lease for all batches; each item is written only if it still has the version the batch read. ' +
    'An item the four-eyes rules refuse to this admin is `forbidden`, with the rule in `code`.',
  ...signedIn('applications:read'),
  request: { body: jsonBody(BatchRequest) },
  responses: {
    200: { description: 'Outcome per id', content: { 'application/json': { schema: BatchResponse } } },
    ...errorResponses(400, 401, 403, 413, 415, 429, 503),
  },
});

const actorOf = (c: Context<AppEnv>) => ({ id: c.get('auth').sub, requestId: c.get('requestId') });

/** 400 for page and cursor together, or a page deeper than maxSkip rows (a skip walks every row it skips). */
function checkListMode(query: { page?: number; cursor?: string; limit: number }, maxSkip: number): void {
  if (query.cursor !== undefined && query.page !== undefined) {
    throw new HttpError(400, 'validation', 'Send either page or cursor, not both.', [
      { path: 'cursor', message: 'cursor mode takes no page' },
    ]);
  }
  const skip = ((query.page ?? 1) - 1) * query.limit;
  if (query.cursor === undefined && skip > maxSkip) {
    throw new HttpError(
      400,
      'page_too_deep',
      `Page mode skips at most ${maxSkip} rows (this page would skip ${skip}); follow nextCursor with ?cursor= instead.`,
      [{ path: 'page', message: `(page - 1) * limit must be at most ${maxSkip}; use cursor` }],
    );
  }
}

/** The body's version and the If-Match header, checked: 400 for a malformed header, 428 for neither. */
function preconditionOf(version: number | undefined, ifMatch: string | undefined): Precondition {
  const pre: Precondition = { version };
  if (ifMatch !== undefined) {
    const parsed = parseIfMatch(ifMatch);
    if (parsed === null) {
      throw new HttpError(400, 'validation', 'If-Match must be * or a list of entity tags.', [
        { path: 'if-match', message: 'not an entity-tag list' },
      ]);
    }
    pre.ifMatch = parsed;
  }
  if (pre.version === undefined && pre.ifMatch === undefined) {
    throw new HttpError(428, 'precondition_required', 'Send the version you read in the body, or If-Match.');
  }
  return pre;
}

/** The If-None-Match header, parsed; 400 when malformed. */
function ifNoneMatchOf(value: string | undefined): '*' | string[] | undefined {
  if (value === undefined) return undefined;
  const parsed = parseIfNoneMatch(value);
  if (parsed === null) {
    throw new HttpError(400, 'validation', 'If-None-Match must be * or a list of entity tags.', [
      { path: 'if-none-match', message: 'not an entity-tag list' },
    ]);
  }
  return parsed;
}

/** Reads a page and serialises it once: the body and ETag a cache entry serves until it expires. */
async function renderPage(applications: Applications, query: ListPageQuery, signal?: AbortSignal): Promise<CachedPage> {
  const result = await applications.list({ ...query, ...(signal ? { signal } : {}) });
  const items = result.items.map(toJson);
  const { limit } = query;
  const json =
    query.cursor !== undefined
      ? { items, limit, nextCursor: result.nextCursor }
      : { items, page: query.page ?? 1, limit, total: result.total, nextCursor: result.nextCursor };
  const body = JSON.stringify(json);
  return { body, etag: await bodyEtag(body), readAt: result.readAt };
}

/** RFC 9211: where this answer came from. ttl is whole seconds (the RFC's integer); detail has milliseconds. */
function cacheStatus(read: CacheRead<unknown>, cacheOff: boolean): string {
  if (cacheOff) return 'loan-admin; fwd=bypass';
  if (read.outcome === 'hit') {
    return `loan-admin; hit; ttl=${Math.floor(read.ttlMs / 1000)}; detail="ttl-ms=${Math.floor(read.ttlMs)}"`;
  }
  return `loan-admin; fwd=miss${read.outcome === 'collapsed' ? '; collapsed' : ''}${read.stored ? '; stored' : ''}`;
}

/** How old a cached answer is and where it came from (Cache-Control, Age, Cache-Status). */
function freshnessHeaders(read: CacheRead<unknown>, now: number, cacheOff: boolean): Record<string, string> {
  return {
    'Cache-Control': 'private, no-cache',
    Age: String(Math.max(0, Math.floor((now - read.sentAt) / 1000))),
    'Cache-Status': cacheStatus(read, cacheOff),
  };
}

function listHeaders(read: CacheRead<CachedPage>, now: number, cacheOff: boolean): Record<string, string> {
  return { ETag: read.value.etag, ...freshnessHeaders(read, now, cacheOff) };
}

interface ListDeps {
  applications: Applications;
  listCache: ApplicationListCache;
  services: Services;
}

function listHandler({ applications, listCache, services }: ListDeps): RouteHandler<typeof listRoute, AppEnv> {
  const { LIST_MAX_SKIP, LIST_CACHE_MS } = services.config;
  return async (c) => {
    const query = c.req.valid('query');
    const noneMatch = ifNoneMatchOf(c.req.valid('header')['if-none-match']);
    checkListMode(query, LIST_MAX_SKIP);
    const cursorMode = query.cursor !== undefined;
    const key: ListPageQuery = {
      status: query.status,
      sort: query.sort,
      ...(query.q === undefined ? {} : { q: query.q }),
      limit: query.limit,
      ...(cursorMode ? { cursor: query.cursor } : { page: query.page ?? 1 }),
      withTotal: !cursorMode && query.total === 'true',
    };
    const read = await listCache.page(key, (signal) => renderPage(applications, key, signal), c.req.raw.signal);
    const headers = listHeaders(read, services.clock.now(), LIST_CACHE_MS === 0);
    if (noneMatch && noneMatchHits(noneMatch, read.value.etag)) return c.body(null, 304, headers);
    return c.body(read.value.body, 200, { ...headers, 'Content-Type': 'application/json' });
  };
}

function updateHandler(applications: Applications): RouteHandler<typeof updateRoute, AppEnv> {
  return async (c) => {
    const { id } = c.req.valid('param');
    const { status, version, ...fields } = c.req.valid('json');
    // Permissions come from the body, before anything touches the database.
    if (status) requirePermission(c, `status:${status}`);
    if (editableFields.some((field) => fields[field] !== undefined)) requirePermission(c, 'applications:edit');
    const pre = preconditionOf(version, c.req.header('if-match'));
    const updated = await applications.update(id, { status, fields }, pre, actorOf(c));
    c.header('ETag', etagOf(updated.version));
    return c.json(toJson(updated), 200);
  };
}

export function applicationRoutes(app: OpenAPIHono<AppEnv>, services: Services) {
  const { listCache } = services;
  // Every write through it drops this instance's list entries it may change (listCache.changed).
  const applications = new Applications(services.db, {
    clock: services.clock,
    queue: services.queue,
    listCache,
    fourEyes: services.config.FOUR_EYES,
    historyVersions: services.config.MERGE_HISTORY_VERSIONS,
  });

  app.openapi(listRoute, listHandler({ applications, listCache, services }));

  // Registered before /api/applications/{id}, which would otherwise take `counts` for an id (400).
  app.openapi(countsRoute, async (c) => {
    const read = await listCache.counts((signal) => applications.countsByStatus(signal), c.req.raw.signal);
    const headers = freshnessHeaders(read, services.clock.now(), services.config.LIST_CACHE_MS === 0);
    for (const [name, value] of Object.entries(headers)) c.header(name, value);
    return c.json(read.value, 200);
  });

  app.openapi(getRoute, async (c) => {
    const { id } = c.req.valid('param');
    const noneMatch = ifNoneMatchOf(c.req.valid('header')['if-none-match']);
    // Exact: read on every request, compared against the version it has now.
    const found = await applications.get(id, c.req.raw.signal);
    if (!found) throw new HttpError(404, 'not_found', `Application ${id} not found.`);
    const etag = etagOf(found.version);
    c.header('ETag', etag);
    c.header('Cache-Control', 'private, no-cache');
    if (noneMatch && noneMatchHits(noneMatch, etag)) return c.body(null, 304);
    return c.json(toJson(found), 200);
  });

  app.openapi(createAppRoute, async (c) => {
    const created = await applications.create(c.req.valid('json'), actorOf(c));
    c.header('Location', `/api/applications/${created._id}`);
    c.header('ETag', etagOf(created.version));
    return c.json(toJson(created), 201);
  });

  app.openapi(updateRoute, updateHandler(applications));

  app.openapi(batchRoute, async (c) => {
    const { applicationIds, status } = c.req.valid('json');
    requirePermission(c, `status:${status}` as Permission);
    const actor = actorOf(c);
    const result = await services.locks.withLock(
      BATCH_LOCK_KEY,
      (lease) => applications.batchSetStatus(applicationIds, status, actor, lease.signal),
      { waitMs: BATCH_LOCK_WAIT_MS },
    );
    return c.json(result, 200);
  });
}
