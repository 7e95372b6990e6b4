// Authentication, authorisation and per-admin rate limiting, as middleware.
import type { Context, MiddlewareHandler } from 'hono';
import { getCookie } from 'hono/cookie';
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

/** The console's cookies (api/routes/console-session.ts sets them): the access token, sent on every path. */
export const ACCESS_COOKIE = 'la_access';
/** The header a cookie session's state-changing request carries its CSRF token in. */
export const CSRF_HEADER = 'X-CSRF-Token';
const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

/** This request's access token: the Bearer header, else the console's cookie (a header wins). */
export function requestToken(c: Context): { token: string; from: 'bearer' | 'cookie' } | null {
  const bearer = bearerToken(c);
  if (bearer) return { token: bearer, from: 'bearer' };
  const cookie = c.req.header('authorization') ? undefined : getCookie(c, ACCESS_COOKIE);
  return cookie ? { token: cookie, from: 'cookie' } : null;
}

/**
 * Verifies the access token (no database round trip while the revocation cache is fresh). A token from
 * the console's cookie also needs, on every state-changing request, the session's CSRF token in
 * X-CSRF-Token: a page of another origin can make the browser send the cookie, never read that token.
 */
export function authenticate(services: Services): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const presented = requestToken(c);
    if (!presented) {
      // A Bearer header whose token cannot even be parsed presented a bad token; none at all did not.
      const malformed = /^Bearer(\s|$)/i.test((c.req.header('authorization') ?? '').trim());
      throw new UnauthorizedError(
        'Send Authorization: Bearer <accessToken>, or sign in to the console.',
        'unauthorized',
        {
          invalidToken: malformed,
        },
      );
    }
    let claims: AccessClaims;
    try {
      claims = await services.sessions.verify(presented.token);
    } catch (error) {
      // Only a verdict on the token is a 401; a database that does not answer (the revocation cache
      // refresh) is the error mapper's 503, or the client would throw away a good token.
      if (error instanceof UnauthorizedError) {
        throw new UnauthorizedError(error.message, error.code, { invalidToken: true, cause: error });
      }
      throw error;
    }
    if (
      presented.from === 'cookie' &&
      !safeMethods.has(c.req.method) &&
      !(await services.sessions.checkCsrf(claims.sid, c.req.header(CSRF_HEADER)))
    ) {
      throw new HttpError(
        403,
        'csrf_failed',
        `A console session sends its CSRF token (GET /api/console/session) in ${CSRF_HEADER} with every change.`,
      );
    }
    c.set('auth', claims);
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

/** 403 unless the authenticated admin's roles grant at least one of `permissions`. */
export function requireAnyPermission(c: Context<AppEnv>, permissions: readonly Permission[]): void {
  const auth = c.get('auth');
  if (!permissions.some((permission) => can(auth.roles, permission))) {
    throw new HttpError(
      403,
      'forbidden',
      `Your roles (${auth.roles.join(', ')}) allow none of ${permissions.join(', ')}.`,
    );
  }
}

export function authorizeAny(permissions: readonly Permission[]): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    requireAnyPermission(c, permissions);
    await next();
  };
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
