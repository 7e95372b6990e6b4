// Sessions and the per-admin budget are checked once per path group; what a request sees stays as when each
// route carried the checks itself: an unknown path is a 404 for anyone, a refusal is labelled with the route.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type ResponseInfo } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import { createTestApp } from '../support/app.ts';
import { adminsByRole, call } from '../support/http.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
const seen: ResponseInfo[] = [];
let token: string;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ services } = await createTestApp(database.db));
  app = createApp(services, { remoteAddress: () => '127.0.0.1', onResponse: (info) => seen.push(info) });
  ({
    tokens: { admin: token },
  } = await adminsByRole(app, services, ['admin']));
});
afterAll(() => database.close());

const last = () => seen.at(-1);

describe('session groups', () => {
  it('an unknown path or method inside a group is a 404 without a token, and costs a signed-in admin no budget', async () => {
    for (const [method, path] of [
      ['GET', '/api/applications/APP-00000000-x/unknown'],
      ['DELETE', '/api/applications/APP-00000000-0000'],
      ['GET', '/api/documents'],
      ['GET', '/api/admin/nothing'],
      ['PUT', '/api/ledger/verify'],
    ] as const) {
      const anonymous = await call(app, undefined, method, path);
      expect(anonymous.status, `${method} ${path}`).toBe(404);
      expect(anonymous.body.error.code).toBe('not_found');
      expect(last()?.route).toBe('/*');
      const signedIn = await call(app, token, method, path);
      expect(signedIn.status).toBe(404);
      expect(signedIn.headers.get('ratelimit-remaining')).toBeNull();
    }
  });

  it("a known route's 401 is labelled with the route's own pattern", async () => {
    for (const [method, path, route] of [
      ['GET', '/api/applications/APP-00000000-0000', '/api/applications/:id'],
      ['GET', '/api/applications', '/api/applications'],
      ['POST', '/api/applications/APP-00000000-0000/disburse', '/api/applications/:id/disburse'],
      ['GET', '/api/admins', '/api/admins'],
      ['GET', '/api/auth/me', '/api/auth/me'],
    ] as const) {
      const res = await call(app, undefined, method, path);
      expect(res.status, `${method} ${path}`).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /);
      expect(last()).toMatchObject({ method, route, status: 401 });
    }
  });

  it('a known route counts against the budget and answers with its RateLimit headers', async () => {
    const res = await call(app, token, 'GET', '/api/applications?limit=1');
    expect(res.status).toBe(200);
    expect(Number(res.headers.get('ratelimit-remaining'))).toBeGreaterThan(0);
    expect(last()).toMatchObject({ route: '/api/applications', status: 200 });
  });
});
