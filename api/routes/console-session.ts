// /api/console/session: the console's sign-in as cookies. The access token rides in an HttpOnly,
// SameSite=Strict cookie (Secure outside localhost) that every /api route accepts in place of a Bearer
// header, with a CSRF token (X-CSRF-Token) on every state-changing request; the refresh token rides in a
// cookie sent to this path only. Logout, logout-all and role changes end it like any session: the same
// tokens, the same revocations.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { decodeJwt } from 'jose';
import { UnauthorizedError } from '../../shared/core/errors.ts';
import { type AccessClaims, refreshTokenParts, roles, type TokenPair } from '../../shared/identity/sessions.ts';
import { ACCESS_COOKIE, type AppEnv, authenticate, CSRF_HEADER } from '../auth.ts';
import { HttpError } from '../http-errors.ts';
import { bearerSecurity, errorResponses, jsonBody } from '../openapi.ts';
import type { Services } from '../services.ts';
import { Credentials, passwordLogin } from './auth.ts';

/** The refresh token's cookie: sent only to this path (sign-in, refresh, sign-out). */
export const REFRESH_COOKIE = 'la_refresh';
export const CONSOLE_SESSION_PATH = '/api/console/session';

const ConsoleSession = z
  .object({
    adminId: z.string(),
    roles: z.array(z.enum(roles)),
    csrfToken: z.string().openapi({ description: `send it in ${CSRF_HEADER} with every POST, PUT, PATCH and DELETE` }),
    expiresIn: z.number().int().openapi({ description: 'seconds until the access cookie expires: refresh before' }),
  })
  .openapi('ConsoleSession');

const cookieSet = {
  'Set-Cookie': {
    schema: { type: 'string' as const },
    description: `${ACCESS_COOKIE} (HttpOnly, SameSite=Strict, Path=/) and ${REFRESH_COOKIE} (HttpOnly, SameSite=Strict, Path=${CONSOLE_SESSION_PATH}); Secure unless the host is localhost`,
  },
};

const signIn = createRoute({
  method: 'post',
  path: CONSOLE_SESSION_PATH,
  tags: ['console'],
  summary: 'Sign in to the console: the session as cookies, and its CSRF token',
  description: 'Throttled as POST /api/auth/login (the same limits, the same answers to a wrong password).',
  request: { body: jsonBody(Credentials) },
  responses: {
    200: { description: 'Signed in', headers: cookieSet, content: { 'application/json': { schema: ConsoleSession } } },
    ...errorResponses(400, 401, 415, 429),
  },
});

const current = createRoute({
  method: 'get',
  path: CONSOLE_SESSION_PATH,
  tags: ['console'],
  summary: "This console session: who, with which roles, and its CSRF token (a page's first call)",
  security: bearerSecurity,
  responses: {
    200: { description: 'Signed in', content: { 'application/json': { schema: ConsoleSession } } },
    ...errorResponses(401),
  },
});

const refresh = createRoute({
  method: 'post',
  path: `${CONSOLE_SESSION_PATH}/refresh`,
  tags: ['console'],
  summary: 'New cookies from the refresh cookie (rotated: a reused one ends the session)',
  description: `Needs the refresh cookie and the session's CSRF token in ${CSRF_HEADER}.`,
  responses: {
    200: { description: 'Refreshed', headers: cookieSet, content: { 'application/json': { schema: ConsoleSession } } },
    ...errorResponses(401, 403),
  },
});

const signOut = createRoute({
  method: 'delete',
  path: CONSOLE_SESSION_PATH,
  tags: ['console'],
  summary: 'Sign out of the console: the session ends on every instance, the cookies are cleared',
  security: bearerSecurity,
  responses: { 204: { description: 'Signed out', headers: cookieSet }, ...errorResponses(401, 403) },
});

/** Secure cookies everywhere but a browser on this machine (which may speak plain HTTP to it). */
function secureFor(c: Context): boolean {
  const host = new URL(c.req.url).hostname;
  return !['localhost', '127.0.0.1', '[::1]', '::1'].includes(host);
}

function setSessionCookies(c: Context, pair: TokenPair, services: Services): void {
  const common = { httpOnly: true, secure: secureFor(c), sameSite: 'Strict' as const };
  setCookie(c, ACCESS_COOKIE, pair.accessToken, { ...common, path: '/', maxAge: pair.expiresIn });
  setCookie(c, REFRESH_COOKIE, pair.refreshToken, {
    ...common,
    path: CONSOLE_SESSION_PATH,
    maxAge: services.config.REFRESH_TOKEN_TTL_S,
  });
}

function clearSessionCookies(c: Context): void {
  const secure = secureFor(c);
  deleteCookie(c, ACCESS_COOKIE, { path: '/', secure, httpOnly: true, sameSite: 'Strict' });
  deleteCookie(c, REFRESH_COOKIE, { path: CONSOLE_SESSION_PATH, secure, httpOnly: true, sameSite: 'Strict' });
}

/** What a console page learns of its session: who, which roles, the CSRF token, and for how long. */
async function sessionAnswer(services: Services, claims: AccessClaims, expiresIn: number) {
  return {
    adminId: claims.sub,
    roles: claims.roles,
    csrfToken: await services.sessions.csrfToken(claims.sid),
    expiresIn,
  };
}

/** The claims of a pair this instance has just signed: read, not verified again. */
const issuedClaims = (pair: TokenPair) => decodeJwt(pair.accessToken) as unknown as AccessClaims;

export function consoleSessionRoutes(
  app: OpenAPIHono<AppEnv>,
  services: Services,
  clientAddress: (c: Context) => string,
): void {
  const session = authenticate(services);

  app.openapi(signIn, async (c) => {
    const pair = await passwordLogin(services, c.req.valid('json'), clientAddress(c));
    setSessionCookies(c, pair, services);
    return c.json(await sessionAnswer(services, issuedClaims(pair), pair.expiresIn), 200);
  });

  app.openapi({ ...current, middleware: session }, async (c) => {
    const auth = c.get('auth');
    const expiresIn = Math.max(0, auth.exp - Math.floor(services.clock.now() / 1000));
    return c.json(await sessionAnswer(services, auth, expiresIn), 200);
  });

  app.openapi(refresh, async (c) => {
    const refreshToken = getCookie(c, REFRESH_COOKIE);
    if (!refreshToken) throw new UnauthorizedError('No console session to refresh: sign in.');
    const sid = refreshTokenParts(refreshToken)?.sid ?? '';
    if (!(await services.sessions.checkCsrf(sid, c.req.header(CSRF_HEADER))))
      throw new HttpError(403, 'csrf_failed', `Send the session's CSRF token in ${CSRF_HEADER}.`);
    const pair = await services.sessions.refresh(refreshToken);
    setSessionCookies(c, pair, services);
    return c.json(await sessionAnswer(services, issuedClaims(pair), pair.expiresIn), 200);
  });

  app.openapi({ ...signOut, middleware: session }, async (c) => {
    await services.sessions.logout(c.get('auth'));
    clearSessionCookies(c);
    return c.body(null, 204);
  });
}
