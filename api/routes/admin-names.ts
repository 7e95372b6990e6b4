// GET /api/admins/names: who an admin id is, for every signed-in admin. Screens name people (the audit
// trail, a merge conflict's other writer, "being edited by"), and most roles may not list admins.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../auth.ts';
import { errorResponses, signedIn } from '../openapi.ts';
import type { Services } from '../services.ts';

const MAX_IDS = 100;

const namesRoute = createRoute({
  method: 'get',
  path: '/api/admins/names',
  tags: ['admins'],
  summary: 'The names of admins by id (ids that are no admin, such as a worker, are left out)',
  ...signedIn('applications:read'),
  request: {
    query: z.object({
      ids: z
        .string()
        .min(1)
        .max(MAX_IDS * 65)
        .transform((text) => [...new Set(text.split(','))])
        .pipe(z.array(z.string().min(1).max(64)).max(MAX_IDS))
        .openapi({ description: `comma-separated admin ids, at most ${MAX_IDS}`, type: 'string' }),
    }),
  },
  responses: {
    200: {
      description: 'The admins found',
      content: {
        'application/json': {
          schema: z.object({ items: z.array(z.object({ id: z.string(), name: z.string() })) }).openapi('AdminNames'),
        },
      },
    },
    ...errorResponses(400, 401, 403, 429),
  },
});

export function adminNameRoutes(app: OpenAPIHono<AppEnv>, services: Services) {
  app.openapi(namesRoute, async (c) => c.json({ items: await services.admins.names(c.req.valid('query').ids) }, 200));
}
