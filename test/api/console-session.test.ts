// The console's cookie session: HttpOnly, SameSite=Strict cookies (Secure outside localhost) that every
// route accepts in place of a Bearer header, a CSRF token on every state-changing request, refresh by
// cookie with rotation, and sign-out or a disabled admin ending it like any session.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openApiSuite } from '../support/app.ts';
import { sampleApplication } from '../support/applications.ts';
import { TEST_PASSWORD } from '../support/http.ts';

let suite: Awaited<ReturnType<typeof openApiSuite>>;

beforeAll(async () => {
  suite = await openApiSuite(import.meta.filename, { RATE_LIMIT_PER_MINUTE: '1000000' });
});
afterAll(() => suite.database.close());

/** A browser's cookie jar for one origin, just enough: name=value pairs, replaced or cleared by Set-Cookie. */
class Jar {
  readonly cookies = new Map<string, string>();
  take(res: Response): string[] {
    const set = res.headers.getSetCookie();
    for (const line of set) {
      const [pair] = line.split(';');
      const [name, value] = pair!.split('=') as [string, string];
      if (/;\s*Max-Age=0/i.test(line) || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return set;
  }
  header(): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
  }
}

async function newAdmin(roles: ('reviewer' | 'viewer')[] = ['reviewer']) {
  const email = `console-${crypto.randomUUID().slice(0, 8)}@example.com`;
  const admin = await suite.services.admins.create({ email, password: TEST_PASSWORD, roles });
  return { email, id: admin._id };
}

async function signIn(email: string, origin = 'http://localhost') {
  const jar = new Jar();
  const res = await suite.app.request(`${origin}/api/console/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: TEST_PASSWORD }),
  });
  const setCookies = jar.take(res);
  return { res, jar, setCookies, body: await res.json() };
}

function send(
  jar: Jar,
  method: string,
  path: string,
  options: { body?: unknown; headers?: Record<string, string> } = {},
) {
  return suite.app.request(path, {
    method,
    headers: {
      cookie: jar.header(),
      ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...options.headers,
    },
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
}

describe('signing in', () => {
  it('sets HttpOnly, SameSite=Strict cookies, Secure only outside localhost, and answers the CSRF token', async () => {
    const { email, id } = await newAdmin();
    const local = await signIn(email);
    expect(local.res.status).toBe(200);
    expect(local.body).toMatchObject({ adminId: id, roles: ['reviewer'], expiresIn: 900 });
    expect(local.body.csrfToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const access = local.setCookies.find((line) => line.startsWith('la_access='))!;
    const refresh = local.setCookies.find((line) => line.startsWith('la_refresh='))!;
    expect(access).toMatch(/; Path=\/(;|$)/);
    expect(refresh).toMatch(/; Path=\/api\/console\/session(;|$)/);
    for (const line of [access, refresh]) {
      expect(line).toMatch(/; HttpOnly/);
      expect(line).toMatch(/; SameSite=Strict/);
      expect(line).not.toMatch(/; Secure/);
    }
    const remote = await signIn(email, 'http://console.example.org');
    expect(remote.setCookies).toHaveLength(2);
    for (const line of remote.setCookies) expect(line).toMatch(/; Secure/);
  });

  it('answers a wrong password as the API login does, and sets no cookie', async () => {
    const { email } = await newAdmin();
    const res = await suite.app.request('/api/console/session', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: 'not the password' }),
    });
    expect(res.status).toBe(401);
    expect((await res.json()).error.code).toBe('invalid_credentials');
    expect(res.headers.getSetCookie()).toEqual([]);
  });
});

describe('the cookie in place of a Bearer header', () => {
  it('reads with the cookie alone; a change needs X-CSRF-Token, of this session', async () => {
    const { email } = await newAdmin();
    const { jar, body } = await signIn(email);
    expect((await send(jar, 'GET', '/api/applications?limit=1')).status).toBe(200);
    const missing = await send(jar, 'POST', '/api/applications', { body: sampleApplication() });
    expect(missing.status).toBe(403);
    expect((await missing.json()).error.code).toBe('csrf_failed');
    // Another session's token does not do.
    const other = await signIn((await newAdmin()).email);
    const wrong = await send(jar, 'POST', '/api/applications', {
      body: sampleApplication(),
      headers: { 'x-csrf-token': other.body.csrfToken },
    });
    expect(wrong.status).toBe(403);
    const made = await send(jar, 'POST', '/api/applications', {
      body: sampleApplication(),
      headers: { 'x-csrf-token': body.csrfToken },
    });
    expect(made.status).toBe(201);
    // The Bearer API is unchanged: no CSRF token there.
    expect((await suite.call('POST', '/api/applications', { as: 'reviewer', body: sampleApplication() })).status).toBe(
      201,
    );
  });

  it('GET /api/console/session tells who is signed in and the same CSRF token; none at all is 401', async () => {
    const { email, id } = await newAdmin(['viewer']);
    const { jar, body } = await signIn(email);
    const res = await send(jar, 'GET', '/api/console/session');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ adminId: id, roles: ['viewer'], csrfToken: body.csrfToken });
    expect((await suite.app.request('/api/console/session')).status).toBe(401);
  });
});

describe('refresh and sign-out', () => {
  it('refreshes by cookie with the CSRF token; the rotated-away refresh cookie ends the session', async () => {
    const { email } = await newAdmin();
    const { jar, body } = await signIn(email);
    const before = new Map(jar.cookies);
    const refused = await send(jar, 'POST', '/api/console/session/refresh');
    expect(refused.status).toBe(403);
    const res = await send(jar, 'POST', '/api/console/session/refresh', {
      headers: { 'x-csrf-token': body.csrfToken },
    });
    expect(res.status).toBe(200);
    jar.take(res);
    expect((await res.json()).csrfToken).toBe(body.csrfToken);
    expect(jar.cookies.get('la_refresh')).not.toBe(before.get('la_refresh'));
    expect((await send(jar, 'GET', '/api/applications?limit=1')).status).toBe(200);
    // Replaying the old refresh cookie is theft or a replay: the whole session ends.
    const stolen = new Jar();
    stolen.cookies.set('la_refresh', before.get('la_refresh')!);
    const replay = await send(stolen, 'POST', '/api/console/session/refresh', {
      headers: { 'x-csrf-token': body.csrfToken },
    });
    expect(replay.status).toBe(401);
    expect((await replay.json()).error.code).toBe('refresh_reused');
    const after = await send(jar, 'GET', '/api/applications?limit=1');
    expect(after.status).toBe(401);
    expect((await after.json()).error.code).toBe('token_revoked');
    expect((await suite.app.request('/api/console/session/refresh', { method: 'POST' })).status).toBe(401);
  });

  it('signs out: the session ends (its cookie is refused) and the cookies are cleared', async () => {
    const { email } = await newAdmin();
    const { jar, body } = await signIn(email);
    const kept = jar.header();
    expect((await send(jar, 'DELETE', '/api/console/session')).status).toBe(403);
    const res = await send(jar, 'DELETE', '/api/console/session', { headers: { 'x-csrf-token': body.csrfToken } });
    expect(res.status).toBe(204);
    const cleared = jar.take(res);
    expect(cleared.some((line) => line.startsWith('la_access=;') && /Max-Age=0/.test(line))).toBe(true);
    expect(jar.cookies.size).toBe(0);
    const replayed = await suite.app.request('/api/applications?limit=1', { headers: { cookie: kept } });
    expect(replayed.status).toBe(401);
    expect((await replayed.json()).error.code).toBe('token_revoked');
  });

  it('an admin disabled by another admin is signed out of the console', async () => {
    const { email, id } = await newAdmin();
    const { jar } = await signIn(email);
    expect((await send(jar, 'GET', '/api/applications?limit=1')).status).toBe(200);
    expect((await suite.call('PATCH', `/api/admins/${id}`, { body: { disabled: true } })).status).toBe(200);
    const res = await send(jar, 'GET', '/api/applications?limit=1');
    expect(res.status).toBe(401);
  });
});
