// GET /api/applications/{id}/audit: the application's audit trail (shared/loans/audit.ts), oldest first.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { Applications } from '../../shared/loans/applications.ts';
import type { AuditEntry } from '../../shared/loans/audit.ts';
import type { AppEnv } from '../auth.ts';
import { HttpError } from '../http-errors.ts';
import { ApplicationIdParam, errorResponses, signedIn } from '../openapi.ts';
import type { Services } from '../services.ts';

const MAX_AUDIT_PAGE = 500;

const AuditQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(MAX_AUDIT_PAGE).default(100),
    after: z.coerce
      .number()
      .int()
      .min(0)
      .max(Number.MAX_SAFE_INTEGER)
      .optional()
      .openapi({ description: 'a version: only entries after it (the `next` of the previous page)' }),
  })
  .strict();

const AuditEntryJson = z
  .object({
    version: z.number().int().openapi({ description: "the application's version this change produced" }),
    at: z.string().openapi({ format: 'date-time' }),
    actor: z.string().openapi({ description: "the admin's id, or the worker that made the change" }),
    action: z.string().openapi({ description: 'create, update or batch-update' }),
    from: z.string().nullable().openapi({ description: 'the status before (null on create)' }),
    to: z.string().openapi({ description: 'the status after (equal to from when the status did not move)' }),
    fields: z.array(z.string()).optional().openapi({ description: 'the fields the change edited' }),
    requestId: z.string().optional().openapi({ description: 'the request that made it' }),
  })
  .openapi('AuditEntry');

const AuditTrail = z
  .object({
    applicationId: z.string(),
    items: z.array(AuditEntryJson),
    next: z
      .number()
      .int()
      .nullable()
      .openapi({ description: 'pass as `after` for the next page; null when this page is the last' }),
  })
  .openapi('AuditTrail');

const auditRoute = createRoute({
  method: 'get',
  path: '/api/applications/{id}/audit',
  tags: ['applications'],
  summary: "An application's audit trail, oldest first",
  description:
    'One entry per version written through the API (create, PUT, PATCH, batch, upload, disbursement) and per ' +
    'decision of the approval worker (actor approval-worker): who, which action, the status before and after, ' +
    'the fields edited, and when. The OCR results and the recommendations the workers store have no entry. At ' +
    'most `limit` entries (100 by default, 500 at most) after the version `after`; always read from the database.',
  ...signedIn('applications:read'),
  request: { params: ApplicationIdParam, query: AuditQuery },
  responses: {
    200: { description: 'The entries', content: { 'application/json': { schema: AuditTrail } } },
    ...errorResponses(400, 401, 403, 404, 429),
  },
});

function toJson(entry: AuditEntry): z.infer<typeof AuditEntryJson> {
  return {
    version: entry.version,
    at: entry.at.toISOString(),
    actor: entry.actor,
    action: entry.action,
    from: entry.from,
    to: entry.to,
    ...(entry.fields ? { fields: entry.fields } : {}),
    ...(entry.requestId ? { requestId: entry.requestId } : {}),
  };
}

export function applicationAuditRoutes(app: OpenAPIHono<AppEnv>, services: Services) {
  const applications = new Applications(services.db, { clock: services.clock, queue: services.queue });

  app.openapi(auditRoute, async (c) => {
    const { id } = c.req.valid('param');
    const { limit, after } = c.req.valid('query');
    const signal = c.req.raw.signal;
    // Both reads at once: an application with no entry (past `after`) still answers 200, a missing one 404.
    const [entries, exists] = await Promise.all([
      applications.audit.history(id, { limit, afterVersion: after, signal }),
      applications.exists(id, signal),
    ]);
    if (!exists) throw new HttpError(404, 'not_found', `Application ${id} not found.`);
    const next = entries.length === limit ? (entries.at(-1)?.version ?? null) : null;
    return c.json({ applicationId: id, items: entries.map(toJson), next }, 200);
  });
}
