// Authentication, authorisation and per-admin rate limiting, as middleware.
import type { Context, MiddlewareHandler } from 'hono';
import type { RequestIdVariables } from 'hono/request-id';
import type { RateDecision } from '../shared/concurrency/rate-limit.ts';
import { UnauthorizedError } from '../shared/core/errors.ts';
import { can, type Permission } from '../shared/identity/rbac.ts';
import type { AccessClaims } from '../shared/identity/sessions.ts';
import { HttpError } from './http-errors.ts';
import type { Services } from './services.ts';

export type AppEnv = { Variables: RequestIdVariables & { auth: AccessClaims } };

export function bearerToken(c: Context): string | null {
  const header = c.req.header('authorization') ?? '';
  const match = /^Bearer\s+([A-Za-z0-9_\-.]+)$/i.exec(header.trim());
  return match?.[1] ?? null;
}

/** Verifies the access token (no database round trip while the revocation cache is fresh). */
export function authenticate(services: Services): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const token = bearerToken(c);
    if (!token) {
      // A Bearer header whose token cannot even be parsed presented a bad token; none at all did not.
      const presented = /^Bearer(\s|$)/i.test((c.req.header('authorization') ?? '').trim());
      throw new UnauthorizedError('Send Authorization: Bearer <accessToken>.', 'unauthorized', {
        invalidToken: presented,
      });
    }
    try {
      c.set('auth', await services.sessions.verify(token));
    } catch (error) {
      // Only a verdict on the token is a 401; a database that does not answer (the revocation cache
      // refresh) is the error mapper's 503, or the client would throw away a good token.
      if (error instanceof UnauthorizedError) {
        throw new UnauthorizedError(error.message, error.code, { invalidToken: true, cause: error });
      }
      throw error;
    }
    await next();
  };
}

/** 403 unless the authenticated admin's roles grant `permission`. */
export function requirePermission(c: Context<AppEnv>, permission: Permission): void {
  const auth = c.get('auth');
  if (!can(auth.roles, permission)) {
    throw new HttpError(403, 'forbidden', `Your roles (${auth.roles.join(', ')}) do not allow ${permission}.`);
  }
}

export function authorize(permission: Permission): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    requirePermission(c, permission);
    await next();
  };
}

export function rateLimitHeaders(decision: RateDecision): Record<string, string> {
  return {
    'RateLimit-Limit': String(decision.limit),
    'RateLimit-Remaining': String(decision.remaining),
    'RateLimit-Reset': String(decision.resetS),
  };
}

/** Lets work outlive the response where the runtime would cancel it (workerd's waitUntil); elsewhere it just runs. */
export function keepAlive(c: Context, work: Promise<unknown>): void {
  try {
    c.executionCtx.waitUntil(work);
  } catch {
    // Node and Deno pass no ExecutionContext: the promise runs on by itself.
  }
}

/** Per-admin request budget shared by all instances (counts flushed to MongoDB, or counted there per request). */
export function rateLimitPerAdmin(services: Services): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const decision = await services.apiLimiter.hit(c.get('auth').sub);
    // Without a background timer (workerd) the counts are flushed lazily, off the hot path.
    const flushing = services.apiLimiter.flushIfDue();
    if (flushing) keepAlive(c, flushing);
    const headers = rateLimitHeaders(decision);
    if (!decision.allowed) {
      throw new HttpError(429, 'rate_limited', 'Too many requests; slow down.', undefined, {
        ...headers,
        'Retry-After': String(decision.resetS),
      });
    }
    await next();
    for (const [name, value] of Object.entries(headers)) c.header(name, value);
  };
}
