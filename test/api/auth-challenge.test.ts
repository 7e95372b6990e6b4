// Every 401 the API gives carries a Bearer challenge (RFC 7235), and names error="invalid_token" when a
// token was presented and refused (RFC 6750): missing, malformed, expired and revoked tokens, a failed
// login or refresh, and every route of the served spec that needs a session.
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import { parseJwtKeys } from '../../shared/identity/sessions.ts';
import { createTestApp } from '../support/app.ts';
import { adminsByRole, call, TEST_PASSWORD } from '../support/http.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

type App = ReturnType<typeof createApp>;
let database: TestDatabase;
let app: App;
let services: Services;
let adminId: string;

const bare = 'Bearer realm="loan-admin"';
const invalidToken = 'Bearer realm="loan-admin", error="invalid_token"';

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app, services } = await createTestApp(database.db));
  adminId = (await adminsByRole(app, services, ['admin'])).ids.admin;
});
afterAll(() => database?.close());

async function loginAsAdmin() {
  const admin = await services.admins.get(adminId);
  const res = await call(app, undefined, 'POST', '/api/auth/login', {
    body: { email: admin!.email, password: TEST_PASSWORD },
  });
  expect(res.status).toBe(200);
  return res.body as { accessToken: string; refreshToken: string };
}

/** A token signed with the app's own key and claims, expired well past the verification tolerance. */
async function expiredToken() {
  const key = [...parseJwtKeys(services.config.JWT_KEYS).values()][0]!;
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sid: crypto.randomUUID(), roles: ['admin'], iatMs: (now - 1_000) * 1000 })
    .setProtectedHeader({ alg: 'HS256', kid: 'test', typ: 'JWT' })
    .setSubject(adminId)
    .setJti(crypto.randomUUID())
    .setIssuer('loan-admin')
    .setAudience('loan-admin')
    .setIssuedAt(now - 1_000)
    .setExpirationTime(now - 60)
    .sign(key);
}

const me = (authorization?: string) =>
  call(app, undefined, 'GET', '/api/auth/me', { headers: authorization ? { authorization } : {} });

describe('401 answers carry WWW-Authenticate: tokens', () => {
  it('no credentials, or another scheme: the bare challenge', async () => {
    for (const authorization of [undefined, 'Basic YWRhOnNlY3JldA==']) {
      const res = await me(authorization);
      expect(res.status, authorization).toBe(401);
      expect(res.body.error.code).toBe('unauthorized');
      expect(res.headers.get('www-authenticate'), authorization).toBe(bare);
    }
  });

  it('a malformed token: invalid_token', async () => {
    for (const authorization of ['Bearer not.a.jwt', 'Bearer !!!', 'Bearer']) {
      const res = await me(authorization);
      expect(res.status, authorization).toBe(401);
      expect(res.body.error.code).toBe('unauthorized');
      expect(res.headers.get('www-authenticate'), authorization).toBe(invalidToken);
    }
  });

  it('an expired token: token_expired, invalid_token', async () => {
    const res = await me(`Bearer ${await expiredToken()}`);
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe('token_expired');
    expect(res.headers.get('www-authenticate')).toBe(invalidToken);
  });

  it('a revoked token (after logout): token_revoked, invalid_token', async () => {
    const tokens = await loginAsAdmin();
    expect((await call(app, tokens.accessToken, 'POST', '/api/auth/logout')).status).toBe(204);
    const res = await me(`Bearer ${tokens.accessToken}`);
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe('token_revoked');
    expect(res.headers.get('www-authenticate')).toBe(invalidToken);
  });
});

describe('401 answers carry WWW-Authenticate: login, refresh, every route', () => {
  it('a failed login and a refused refresh token: the bare challenge, the same bodies as before', async () => {
    const admin = await services.admins.get(adminId);
    const login = await call(app, undefined, 'POST', '/api/auth/login', {
      body: { email: admin!.email, password: 'not the password at all' },
    });
    expect(login.status).toBe(401);
    expect(login.body).toEqual({
      error: { code: 'invalid_credentials', message: 'The email or the password is wrong.' },
    });
    expect(login.headers.get('www-authenticate')).toBe(bare);
    const refresh = await call(app, undefined, 'POST', '/api/auth/refresh', { body: { refreshToken: 'x.y' } });
    expect(refresh.status).toBe(401);
    expect(refresh.body).toEqual({ error: { code: 'unauthorized', message: 'The refresh token is not valid.' } });
    expect(refresh.headers.get('www-authenticate')).toBe(bare);
  });

  it('every route of the served spec that needs a session answers 401 with the challenge without one', async () => {
    const spec = (await (await app.request('/openapi.json')).json()) as {
      paths: Record<string, Record<string, { security?: unknown[] }>>;
    };
    let checked = 0;
    for (const [path, operations] of Object.entries(spec.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        if (!operation.security?.length) continue;
        const url = path.replace(/\{[^}]+\}/g, 'APP-1');
        for (const authorization of [undefined, 'Bearer not.a.jwt']) {
          const res = await call(app, undefined, method.toUpperCase(), url, {
            headers: authorization ? { authorization } : {},
          });
          expect(res.status, `${method} ${path}`).toBe(401);
          expect(res.headers.get('www-authenticate'), `${method} ${path}`).toBe(authorization ? invalidToken : bare);
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThan(20);
  });
});
