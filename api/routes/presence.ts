// Presence: PUT/DELETE /api/applications/{id}/presence (I am editing it / I stopped), GET /api/presence
// (who is editing what). shared/loans/presence.ts holds the entries and their cache.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { Permission } from '../../shared/identity/rbac.ts';
import { Applications, applicationIdSchema, targetStatuses } from '../../shared/loans/applications.ts';
import type { PresenceEntry } from '../../shared/loans/presence.ts';
import type { AppEnv } from '../auth.ts';
import { HttpError } from '../http-errors.ts';
import { ApplicationIdParam, errorResponses, jsonBody, signedIn, signedInAny } from '../openapi.ts';
import type { Services } from '../services.ts';

/** Whoever may change an application in some way may say they are editing it. */
const editPermissions: readonly Permission[] = [
  'applications:edit',
  ...targetStatuses.map((status) => `status:${status}` as const),
];

const dateTime = z.string().openapi({ format: 'date-time' });
const PresenceEntryJson = z
  .object({
    applicationId: z.string(),
    adminId: z.string(),
    adminName: z.string().optional(),
    adminEmail: z.string().optional(),
    since: dateTime.openapi({ description: 'when this stretch of editing began' }),
    expiresAt: dateTime.openapi({ description: 'when the mark lapses unless renewed (server time)' }),
  })
  .openapi('PresenceEntry');

const PresenceList = z.object({ editing: z.array(PresenceEntryJson) }).openapi('PresenceList');

const EditingBody = z
  .object({ editing: z.literal(true).openapi({ description: 'always true; DELETE ends the mark' }) })
  .strict()
  .openapi('PresenceMark');

const PresenceQuery = z
  .object({ applicationId: applicationIdSchema.optional().openapi({ description: 'only this application' }) })
  .strict();

const markRoute = createRoute({
  method: 'put',
  path: '/api/applications/{id}/presence',
  tags: ['presence'],
  summary: 'Say you are editing this application (renew every ~5 s)',
  description:
    'Records that the caller is editing the application until PRESENCE_TTL_MS (15 s by default) from now on ' +
    "the server's clock; the console renews it every few seconds, and it lapses by itself when renewals stop. " +
    'Advisory: it locks nothing, writes are still decided by their versions. Needs applications:edit or any ' +
    'status permission. 404 for an application that does not exist.',
  ...signedInAny(editPermissions),
  request: { params: ApplicationIdParam, body: jsonBody(EditingBody) },
  responses: {
    200: { description: 'Marked until expiresAt', content: { 'application/json': { schema: PresenceEntryJson } } },
    ...errorResponses(400, 401, 403, 404, 413, 415, 429),
  },
});

const endRoute = createRoute({
  method: 'delete',
  path: '/api/applications/{id}/presence',
  tags: ['presence'],
  summary: 'Say you stopped editing this application',
  description: "Ends the caller's own mark; 204 whether or not there was one.",
  ...signedInAny(editPermissions),
  request: { params: ApplicationIdParam },
  responses: {
    204: { description: 'No mark left' },
    ...errorResponses(400, 401, 403, 429),
  },
});

const listRoute = createRoute({
  method: 'get',
  path: '/api/presence',
  tags: ['presence'],
  summary: 'Who is editing which application right now',
  description:
    "Every unexpired mark, by application then since. Served from the instance's memory for 1 s: however " +
    'many admins poll, an instance reads the marks once a second, so a mark shows (or ends) on every ' +
    'instance, the one that wrote it included, at most 1 s after its write; marks that lapsed meanwhile are ' +
    'left out. At most 10,000 marks.',
  ...signedIn('applications:read'),
  request: { query: PresenceQuery },
  responses: {
    200: { description: 'The marks', content: { 'application/json': { schema: PresenceList } } },
    ...errorResponses(400, 401, 403, 429),
  },
});

function toJson(entry: PresenceEntry): z.infer<typeof PresenceEntryJson> {
  return {
    applicationId: entry.applicationId,
    adminId: entry.adminId,
    ...(entry.adminName ? { adminName: entry.adminName } : {}),
    ...(entry.adminEmail ? { adminEmail: entry.adminEmail } : {}),
    since: entry.since.toISOString(),
    expiresAt: entry.expiresAt.toISOString(),
  };
}

export function presenceRoutes(app: OpenAPIHono<AppEnv>, services: Services) {
  const { presence } = services;
  const applications = new Applications(services.db, { clock: services.clock, queue: services.queue });

  app.openapi(markRoute, async (c) => {
    const { id } = c.req.valid('param');
    const adminId = c.get('auth').sub;
    // A renewal is one update; only a new stretch reads the application (404) and the admin (name, email).
    const entry = await presence.mark(id, adminId, async () => {
      const [exists, admin] = await Promise.all([applications.exists(id), services.admins.get(adminId)]);
      return exists ? { id: adminId, name: admin?.name, email: admin?.email } : null;
    });
    if (!entry) throw new HttpError(404, 'not_found', `Application ${id} not found.`);
    return c.json(toJson(entry), 200);
  });

  app.openapi(endRoute, async (c) => {
    const { id } = c.req.valid('param');
    await presence.end(id, c.get('auth').sub);
    return c.body(null, 204);
  });

  app.openapi(listRoute, async (c) => {
    const { applicationId } = c.req.valid('query');
    const entries = await presence.editing(c.req.raw.signal);
    const chosen = applicationId ? entries.filter((entry) => entry.applicationId === applicationId) : entries;
    return c.json({ editing: chosen.map(toJson) }, 200);
  });
}
