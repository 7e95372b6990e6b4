// Operations and admin management: /api/admin/queue-stats, /api/admin/jobs (dead letters, retry), /api/admins.
import { createRoute, type OpenAPIHono, type RouteHandler, z } from '@hono/zod-openapi';
import type { JobInfo, JobState } from '../../shared/concurrency/queue/index.ts';
import { ConflictError } from '../../shared/core/errors.ts';
import type { PublicAdmin } from '../../shared/identity/admins.ts';
import { roles } from '../../shared/identity/sessions.ts';
import type { AppEnv } from '../auth.ts';
import { HttpError } from '../http-errors.ts';
import { errorResponses, jsonBody, signedIn } from '../openapi.ts';
import type { Services } from '../services.ts';

const count = z.number().int().nonnegative();

const NameCounts = z
  .object({ waiting: count, delayed: count, active: count, completed: count, failed: count })
  .openapi('QueueNameCounts');

const QueueStats = z
  .object({
    pending: count.openapi({ description: 'waiting, including delayed' }),
    processing: count.openapi({ description: 'being worked on' }),
    completed: count,
    failed: count,
    waiting: count.openapi({ description: 'due and waiting for a worker' }),
    delayed: count.openapi({ description: 'waiting for their run time' }),
    active: count,
    oldestWaitingAgeMs: count.openapi({ description: 'age of the oldest due job still waiting; 0 when none' }),
    byName: z.record(z.string(), NameCounts),
  })
  .openapi('QueueStats');

/** States a listing may ask for, in the API's words: `dead` is the stored `failed` (the dead letters). */
const listableStates = ['dead', 'waiting', 'active'] as const;
const storedState: Record<(typeof listableStates)[number], JobState> = {
  dead: 'failed',
  waiting: 'waiting',
  active: 'active',
};
const apiState = (state: JobState) => (state === 'failed' ? 'dead' : state);

const JobsQuery = z
  .object({
    state: z.enum(listableStates).openapi({ description: 'dead: the dead letters (failed for good)' }),
    name: z.string().min(1).max(200).optional().openapi({ description: 'only jobs of this name' }),
    limit: z.coerce.number().int().min(1).max(500).default(100),
  })
  .strict();

const JobIdParam = z.object({
  id: z
    .string()
    .min(1)
    .max(512)
    .openapi({ param: { name: 'id', in: 'path' }, example: 'application.review:APP-5f0c6c3e:2' }),
});

const dateTime = z.string().openapi({ format: 'date-time' });
const JobSummary = z
  .object({
    id: z.string().openapi({ description: 'the jobId' }),
    name: z.string(),
    state: z.enum(['dead', 'waiting', 'active', 'completed']),
    attempts: count.openapi({ description: 'runs allowed before it is dead-lettered' }),
    attemptsMade: count.openapi({ description: 'failed runs so far (since its last retry)' }),
    lastError: z
      .object({ name: z.string(), message: z.string(), at: dateTime })
      .nullable()
      .openapi({ description: 'the error of its last failed run' }),
    applicationId: z.string().optional().openapi({ description: "the job data's applicationId, when it has one" }),
    failedAt: dateTime.nullable().openapi({ description: 'when it was dead-lettered; null unless dead' }),
    createdAt: dateTime,
    runAt: dateTime.openapi({ description: 'when it is (or was) due' }),
    retries: count.openapi({ description: 'times an admin moved it back from the dead letters' }),
    retriedBy: z.string().nullable(),
    retriedAt: dateTime.nullable(),
  })
  .openapi('JobSummary');

const JobList = z.object({ items: z.array(JobSummary) }).openapi('JobList');

const RoleList = z
  .array(z.enum(roles))
  .min(1)
  .max(roles.length)
  .refine((list) => new Set(list).size === list.length, 'roles must not repeat');

const Admin = z
  .object({
    id: z.string(),
    email: z.string(),
    name: z.string(),
    roles: z.array(z.enum(roles)),
    disabled: z.boolean(),
    createdAt: z.string().openapi({ format: 'date-time' }),
  })
  .openapi('Admin');

const NewAdmin = z
  .object({
    email: z.email().max(254),
    name: z.string().trim().min(1).max(200).optional(),
    password: z.string().min(12).max(1024),
    roles: RoleList,
  })
  .strict()
  .openapi('NewAdmin');

const AdminChanges = z
  .object({ roles: RoleList.optional(), disabled: z.boolean().optional() })
  .strict()
  .refine((body) => body.roles !== undefined || body.disabled !== undefined, 'send roles and/or disabled')
  .openapi('AdminChanges');

const AdminList = z
  .object({
    items: z.array(Admin),
    next: z.string().nullable().openapi({ description: 'pass as `after` for the next page; null on the last' }),
  })
  .openapi('AdminList');

const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  after: z.string().max(254).optional().openapi({ description: 'the `next` of the previous page' }),
});

const IdParam = z.object({
  id: z
    .string()
    .min(1)
    .max(128)
    .openapi({ param: { name: 'id', in: 'path' } }),
});

function toBody(admin: PublicAdmin): z.infer<typeof Admin> {
  return {
    id: admin._id,
    email: admin.email,
    name: admin.name,
    roles: admin.roles,
    disabled: admin.disabled,
    createdAt: admin.createdAt.toISOString(),
  };
}

const queueStatsRoute = createRoute({
  method: 'get',
  path: '/api/admin/queue-stats',
  tags: ['operations'],
  summary: 'Job counts per state and per job name',
  ...signedIn('queue:stats'),
  responses: {
    200: { description: 'Queue statistics', content: { 'application/json': { schema: QueueStats } } },
    ...errorResponses(401, 403, 429, 503),
  },
});

const listJobsRoute = createRoute({
  method: 'get',
  path: '/api/admin/jobs',
  tags: ['operations'],
  summary: 'Jobs in one state: the dead letters (state=dead), or those waiting or running',
  description:
    'At most `limit` (100 by default, 500 at most). Dead letters come newest failure first, the others in the ' +
    "order workers claim them. Dead letters are found through the claim index's state prefix and sorted in " +
    'memory: there are few of them.',
  ...signedIn('queue:stats'),
  request: { query: JobsQuery },
  responses: {
    200: { description: 'The jobs', content: { 'application/json': { schema: JobList } } },
    ...errorResponses(400, 401, 403, 429),
  },
});

const retryJobRoute = createRoute({
  method: 'post',
  path: '/api/admin/jobs/{id}/retry',
  tags: ['operations'],
  summary: 'Move one dead-lettered job back to waiting, due now, with all its attempts again',
  description:
    'The job gets its `attempts` again (attemptsMade back to 0, the same backoff) and is due at once; workers ' +
    'hear of it as of a new job. Its last error stays until its next outcome. A compare-and-swap on the failure ' +
    'that was read: of two admins retrying at once, one re-queues it (200) and the other gets 409 with the job ' +
    'as it is now in `current`. 409 too for a job that is not dead-lettered; 404 for no such job. No body.',
  ...signedIn('queue:retry'),
  request: { params: JobIdParam },
  responses: {
    200: { description: 'Re-queued', content: { 'application/json': { schema: JobSummary } } },
    ...errorResponses(400, 401, 403, 404, 409, 429),
  },
});

function applicationIdOf(data: unknown): string | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const id = (data as { applicationId?: unknown }).applicationId;
  return typeof id === 'string' ? id : undefined;
}

function jobSummary(job: JobInfo): z.infer<typeof JobSummary> {
  const applicationId = applicationIdOf(job.data);
  return {
    id: job.id,
    name: job.name,
    state: apiState(job.state),
    attempts: job.attempts,
    attemptsMade: job.attemptsMade,
    lastError: job.lastError
      ? { name: job.lastError.name, message: job.lastError.message, at: job.lastError.at.toISOString() }
      : null,
    ...(applicationId === undefined ? {} : { applicationId }),
    failedAt: job.state === 'failed' ? (job.finishedAt?.toISOString() ?? null) : null,
    createdAt: job.createdAt.toISOString(),
    runAt: job.runAt.toISOString(),
    retries: job.retries,
    retriedBy: job.retriedBy,
    retriedAt: job.retriedAt?.toISOString() ?? null,
  };
}

function retryJobHandler(services: Services): RouteHandler<typeof retryJobRoute, AppEnv> {
  return async (c) => {
    const { id } = c.req.valid('param');
    const result = await services.queue.retryDead(id, c.get('auth').sub);
    if (result.outcome === 'not_found') throw new HttpError(404, 'not_found', `There is no job ${id}.`);
    if (result.outcome !== 'retried') {
      const message =
        result.outcome === 'changed'
          ? `Job ${id} failed again since it was read; read it and retry again if you mean to.`
          : `Job ${id} is ${apiState(result.job.state)}, not dead-lettered (retried already?).`;
      throw new ConflictError(message, jobSummary(result.job));
    }
    services.logger.info('dead letter retried', {
      requestId: c.get('requestId'),
      jobId: id,
      name: result.job.name,
      by: c.get('auth').sub,
    });
    return c.json(jobSummary(result.job), 200);
  };
}

const createAdminRoute = createRoute({
  method: 'post',
  path: '/api/admins',
  tags: ['admins'],
  summary: 'Create an admin',
  ...signedIn('admins:manage'),
  request: { body: jsonBody(NewAdmin) },
  responses: {
    201: { description: 'Created', content: { 'application/json': { schema: Admin } } },
    ...errorResponses(400, 401, 403, 409, 415, 429),
  },
});

const listAdminsRoute = createRoute({
  method: 'get',
  path: '/api/admins',
  tags: ['admins'],
  summary: 'List admins by email',
  ...signedIn('admins:manage'),
  request: { query: ListQuery },
  responses: {
    200: { description: 'A page of admins', content: { 'application/json': { schema: AdminList } } },
    ...errorResponses(400, 401, 403, 429),
  },
});

const updateAdminRoute = createRoute({
  method: 'patch',
  path: '/api/admins/{id}',
  tags: ['admins'],
  summary: "Change an admin's roles or disable them (ends their sessions everywhere)",
  description: 'A change that would leave no enabled admin with the admin role is refused: 409 last_admin.',
  ...signedIn('admins:manage'),
  request: { params: IdParam, body: jsonBody(AdminChanges) },
  responses: {
    200: { description: 'The admin after the change', content: { 'application/json': { schema: Admin } } },
    ...errorResponses(400, 401, 403, 404, 409, 415, 429, 503),
  },
});

/** 400 when an admin would take their own 'admin' role away or disable themselves. */
function refuseSelfLockout(changes: z.infer<typeof AdminChanges>): void {
  const problems = [
    ...(changes.roles && !changes.roles.includes('admin')
      ? [{ path: 'roles', message: "you may not remove your own 'admin' role" }]
      : []),
    ...(changes.disabled ? [{ path: 'disabled', message: 'you may not disable yourself' }] : []),
  ];
  if (problems.length > 0) throw new HttpError(400, 'validation', 'You may not lock yourself out.', problems);
}

function createAdminHandler(services: Services): RouteHandler<typeof createAdminRoute, AppEnv> {
  return async (c) => {
    const body = c.req.valid('json');
    // A duplicate email is a ConflictError, answered 409 by the error mapper.
    const admin = await services.admins.create(body);
    await services.admins.audit({
      actor: c.get('auth').sub,
      action: 'admin.create',
      adminId: admin._id,
      changes: { email: admin.email, roles: admin.roles },
      requestId: c.get('requestId'),
    });
    c.header('Location', `/api/admins/${encodeURIComponent(admin._id)}`);
    return c.json(toBody(admin), 201);
  };
}

function updateAdminHandler(services: Services): RouteHandler<typeof updateAdminRoute, AppEnv> {
  return async (c) => {
    const { id } = c.req.valid('param');
    const changes = c.req.valid('json');
    if (id === c.get('auth').sub) refuseSelfLockout(changes);
    // The last active admin is refused with a LastAdminError (409 last_admin) by the error mapper. A change
    // another request left half done is finished on the way, and that admin's sessions ended too.
    const admin = await services.admins.update(id, changes, (otherId) => services.sessions.logoutAll(otherId));
    if (!admin) throw new HttpError(404, 'not_found', 'There is no admin with this id.');
    await services.admins.audit({
      actor: c.get('auth').sub,
      action: 'admin.update',
      adminId: id,
      changes,
      requestId: c.get('requestId'),
    });
    // Roles travel in access tokens: end every session so no token keeps the old roles. Done after
    // the write (a login in between already gets the new roles) and on every such request, even
    // when nothing changed, so a retry after a failure here still ends them.
    if (changes.roles !== undefined || changes.disabled === true) await services.sessions.logoutAll(id);
    return c.json(toBody(admin), 200);
  };
}

export function adminRoutes(app: OpenAPIHono<AppEnv>, services: Services) {
  app.openapi(queueStatsRoute, async (c) => c.json(await services.queue.stats(), 200));
  app.openapi(listJobsRoute, async (c) => {
    const { state, name, limit } = c.req.valid('query');
    const jobs = await services.queue.list({ state: storedState[state], name, limit, signal: c.req.raw.signal });
    return c.json({ items: jobs.map(jobSummary) }, 200);
  });
  app.openapi(retryJobRoute, retryJobHandler(services));
  app.openapi(createAdminRoute, createAdminHandler(services));
  app.openapi(listAdminsRoute, async (c) => {
    const { limit, after } = c.req.valid('query');
    const admins = await services.admins.list({ limit, afterEmail: after });
    const next = admins.length === limit ? (admins.at(-1)?.email ?? null) : null;
    return c.json({ items: admins.map(toBody), next }, 200);
  });
  app.openapi(updateAdminRoute, updateAdminHandler(services));
}
