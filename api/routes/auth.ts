// /api/auth: login, refresh, logout, logout-all, me.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { UnauthorizedError } from '../../shared/core/errors.ts';
import { normalizeEmail } from '../../shared/identity/admins.ts';
import { roles, type TokenPair as TokenPairValue } from '../../shared/identity/sessions.ts';
import { type AppEnv, rateLimitHeaders } from '../auth.ts';
import { HttpError } from '../http-errors.ts';
import { bearerSecurity, errorResponses, jsonBody } from '../openapi.ts';
import type { Services } from '../services.ts';

export const Credentials = z
  .object({
    email: z.email().max(254).openapi({ example: 'admin@example.com' }),
    password: z.string().min(1).max(1024).openapi({ example: 'correct horse battery staple' }),
  })
  .strict()
  .openapi('Credentials');

const TokenPair = z
  .object({
    accessToken: z.string(),
    refreshToken: z.string(),
    tokenType: z.literal('Bearer'),
    expiresIn: z.number().int().openapi({ description: 'seconds until the access token expires' }),
  })
  .openapi('TokenPair');

const RefreshBody = z
  .object({ refreshToken: z.string().min(1).max(512) })
  .strict()
  .openapi('RefreshRequest');

const Me = z
  .object({
    id: z.string(),
    email: z.string(),
    name: z.string(),
    roles: z.array(z.enum(roles)),
    sessionId: z.string(),
  })
  .openapi('Me');

const login = createRoute({
  method: 'post',
  path: '/api/auth/login',
  tags: ['auth'],
  summary: 'Log in with email and password',
  request: { body: jsonBody(Credentials) },
  responses: {
    200: { description: 'Logged in', content: { 'application/json': { schema: TokenPair } } },
    ...errorResponses(400, 401, 415, 429),
  },
});

const refresh = createRoute({
  method: 'post',
  path: '/api/auth/refresh',
  tags: ['auth'],
  summary: 'Rotate a refresh token for a new token pair',
  request: { body: jsonBody(RefreshBody) },
  responses: {
    200: { description: 'New tokens', content: { 'application/json': { schema: TokenPair } } },
    ...errorResponses(400, 401, 415),
  },
});

const logout = createRoute({
  method: 'post',
  path: '/api/auth/logout',
  tags: ['auth'],
  summary: 'End this session (access and refresh token)',
  security: bearerSecurity,
  responses: { 204: { description: 'Logged out' }, ...errorResponses(401) },
});

const logoutAll = createRoute({
  method: 'post',
  path: '/api/auth/logout-all',
  tags: ['auth'],
  summary: 'End every session of this admin, on every instance',
  security: bearerSecurity,
  responses: { 204: { description: 'Every session ended' }, ...errorResponses(401) },
});

const me = createRoute({
  method: 'get',
  path: '/api/auth/me',
  tags: ['auth'],
  summary: 'Who am I',
  security: bearerSecurity,
  responses: {
    200: { description: 'The admin', content: { 'application/json': { schema: Me } } },
    ...errorResponses(401, 404),
  },
});

/**
 * Counts a login attempt and refuses it (429) when a bound is reached. Every attempt is counted before the
 * password is checked, so concurrent guesses cannot slip past; a successful login takes its attempt back.
 * First per (account, address), with growing delays, so a stranger's failures slow only the stranger; then
 * per account across addresses (a much higher bound, which addresses the owner logged in from before skip)
 * and per address across accounts.
 */
async function admitLogin(services: Services, account: string, address: string, pair: string) {
  const delay = await services.loginDelays.attempt(pair);
  if (!delay.allowed) {
    throw new HttpError(429, 'rate_limited', 'Too many failed logins; try again later.', undefined, {
      'Retry-After': String(delay.retryAfterS),
    });
  }
  const decisions = await Promise.all([
    delay.known ? null : services.loginByAccount.hit(account),
    services.loginByAddress.hit(address),
  ]);
  for (const decision of decisions) {
    if (decision && !decision.allowed) {
      throw new HttpError(429, 'rate_limited', 'Too many failed logins; try again later.', undefined, {
        ...rateLimitHeaders(decision),
        'Retry-After': String(decision.resetS),
      });
    }
  }
  return delay;
}

/** A password login, throttled as above: the new session's tokens (the API's and the console's). */
export async function passwordLogin(
  services: Services,
  credentials: { email: string; password: string },
  address: string,
): Promise<TokenPairValue> {
  const account = normalizeEmail(credentials.email);
  const pair = JSON.stringify([account, address]);
  const delay = await admitLogin(services, account, address, pair);
  const admin = await services.admins.authenticate(account, credentials.password);
  // One answer for an unknown email and a wrong password.
  if (!admin) throw new UnauthorizedError('The email or the password is wrong.', 'invalid_credentials');
  await Promise.all([
    services.loginDelays.succeeded(pair),
    delay.known ? null : services.loginByAccount.undo(account),
    services.loginByAddress.undo(address),
  ]);
  try {
    return await services.sessions.issue({ id: admin._id, roles: admin.roles, epoch: admin.sessionEpoch ?? 0 });
  } catch (error) {
    // Disabled between the password check and the session: the answer of any disabled admin's login.
    if (error instanceof UnauthorizedError)
      throw new UnauthorizedError('The email or the password is wrong.', 'invalid_credentials', { cause: error });
    throw error;
  }
}

export function authRoutes(app: OpenAPIHono<AppEnv>, services: Services, clientAddress: (c: Context) => string) {
  app.openapi(login, async (c) => c.json(await passwordLogin(services, c.req.valid('json'), clientAddress(c)), 200));

  app.openapi(refresh, async (c) => {
    const { refreshToken } = c.req.valid('json');
    return c.json(await services.sessions.refresh(refreshToken), 200);
  });

  app.openapi(logout, async (c) => {
    await services.sessions.logout(c.get('auth'));
    return c.body(null, 204);
  });

  app.openapi(logoutAll, async (c) => {
    await services.sessions.logoutAll(c.get('auth').sub);
    return c.body(null, 204);
  });

  app.openapi(me, async (c) => {
    const auth = c.get('auth');
    const admin = await services.admins.get(auth.sub);
    if (!admin) throw new HttpError(404, 'not_found', 'This admin no longer exists.');
    return c.json({ id: admin._id, email: admin.email, name: admin.name, roles: auth.roles, sessionId: auth.sid }, 200);
  });
}
