// Shared pieces of the OpenAPI description: the error body, request bodies, the id parameter, and the
// Bearer scheme every signed-in route declares.
import { type OpenAPIHono, z } from '@hono/zod-openapi';
import type { Permission } from '../shared/identity/rbac.ts';
import { applicationIdSchema } from '../shared/loans/applications.ts';
import { ACCESS_COOKIE, type AppEnv, authorize, authorizeAny, CSRF_HEADER } from './auth.ts';

export const ErrorBody = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: 'validation' }),
      message: z.string(),
      details: z.unknown().optional(),
    }),
    current: z.unknown().optional().openapi({ description: 'on 409/412: the document as it is now' }),
  })
  .openapi('Error');

const descriptions: Record<number, string> = {
  400: 'The request is not valid (details name the fields)',
  401: 'Missing, invalid, expired or revoked credentials',
  403: 'Your roles do not allow this',
  404: 'Not found',
  409: 'Conflict: someone else changed it first (current is the document now)',
  412: 'If-Match failed (current is the document now)',
  413: 'Body too large',
  415: 'Body is not application/json',
  422: 'The content cannot be processed (image_too_large: an image declaring more pixels than DOCUMENT_MAX_PIXELS)',
  428: 'Send a version in the body or an If-Match header',
  429: 'Too many requests (see Retry-After)',
  502: 'payment_refused: the payment provider refused the payment (details: its status and answer)',
  503: 'A dependency is unavailable; retry',
};

export function errorResponses(...statuses: number[]) {
  return Object.fromEntries(
    statuses.map((status) => [
      status,
      { description: descriptions[status] ?? 'Error', content: { 'application/json': { schema: ErrorBody } } },
    ]),
  ) as Record<number, { description: string; content: { 'application/json': { schema: typeof ErrorBody } } }>;
}

export function jsonBody<T extends z.ZodType>(schema: T) {
  return { required: true, content: { 'application/json': { schema } } };
}

/** The `{id}` of every /api/applications/{id}/... route. */
export const ApplicationIdParam = z.object({ id: applicationIdSchema });

/** Registers the schemes that `signedIn` routes name: a Bearer token, or the console's cookie session. */
export function registerBearerAuth(app: OpenAPIHono<AppEnv>): void {
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
  });
  app.openAPIRegistry.registerComponent('securitySchemes', 'cookieAuth', {
    type: 'apiKey',
    in: 'cookie',
    name: ACCESS_COOKIE,
    description: `the console's session (POST /api/console/session); a POST, PUT, PATCH or DELETE also sends its CSRF token in ${CSRF_HEADER}`,
  });
}

/**
 * Spread into a route that needs a session: it is documented as Bearer-secured and checks `permission`.
 * The session itself and the per-admin budget are checked once per path group (app.ts, mountSessions).
 */
export const signedIn = (permission: Permission) => ({
  security: bearerSecurity,
  middleware: authorize(permission),
});

/** As signedIn, for a route any one of several permissions opens. */
export const signedInAny = (permissions: readonly Permission[]) => ({
  security: bearerSecurity,
  middleware: authorizeAny(permissions),
});

/** A route documented as Bearer-secured whose session is checked by the path's own middleware. */
export const bearerSecurity: Record<string, string[]>[] = [{ bearerAuth: [] }, { cookieAuth: [] }];
