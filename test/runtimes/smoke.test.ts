// One HTTP smoke suite against the same API on Node (api/node.ts), Cloudflare workerd (wrangler dev,
// api/cloudflare.ts) and Deno (api/deno.ts): one database, one signing key, real HTTP on loopback.

import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONSOLE_CSP } from '../../api/console.ts';
import { consoleAssets, consoleIndex } from '../../api/console-assets.gen.ts';
import { findChromium, launchChromium } from '../../scripts/browser.ts';
import { startDeno } from '../../scripts/runtimes/deno.ts';
import { startNode } from '../../scripts/runtimes/node.ts';
import type { RuntimeProcess } from '../../scripts/runtimes/process.ts';
import { startWorkerd } from '../../scripts/runtimes/workerd.ts';
import { seedApplications } from '../../scripts/seed.ts';
import { systemClock } from '../../shared/core/clock.ts';
import { Admins } from '../../shared/identity/admins.ts';
import { randomJwtKeys } from '../support/app.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { waitFor } from '../support/wait.ts';

// workerd twice: Durable Objects owning the client (the default) and a client per request.
const names = ['node', 'workerd', 'workerd-per-request', 'deno'] as const;
type RuntimeName = (typeof names)[number];
const ADMIN = { email: 'smoke-admin@example.com', password: 'smoke admin password' };
const SEEDED = 30;
const newApplication = { applicantName: 'Ada Runtime', monthlyIncome: 5_000, loanAmount: 20_000, termMonths: 24 };

let database: TestDatabase;
const runtimes = {} as Record<RuntimeName, RuntimeProcess>;
const haveChromium = findChromium() !== null;
let browser: Promise<Browser> | undefined;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  await seedApplications(database.db, SEEDED);
  const env = {
    MONGO_URL: mongoUrl(),
    MONGO_DB: database.name,
    JWT_KEYS: randomJwtKeys('smoke'),
    LEDGER_KEYS: randomJwtKeys('ledger'),
    PASSWORD_ITERATIONS: '1000',
    ADMIN_EMAIL: ADMIN.email,
    ADMIN_PASSWORD: ADMIN.password,
    LOG_LEVEL: 'warn',
    REVOCATION_STALENESS_MS: '200',
    LIST_TOTAL_CACHE_MS: '0',
    LIST_CACHE_MS: '0',
    RATE_LIMIT_PER_MINUTE: '100000',
  };
  // Node first: it creates the indexes and the first admin; the other two then start side by side.
  const started = await Promise.allSettled([
    startNode({ env }).then((node) => {
      runtimes.node = node;
      return Promise.all([startWorkerd({ env }), startWorkerd({ env, mode: 'per-request' }), startDeno({ env })]);
    }),
  ]);
  const result = started[0]!;
  if (result.status === 'rejected') throw result.reason;
  [runtimes.workerd, runtimes['workerd-per-request'], runtimes.deno] = result.value;
}, 150_000);

afterAll(async () => {
  await (await browser?.catch(() => undefined))?.close();
  await Promise.all(Object.values(runtimes).map((runtime) => runtime.stop()));
  await database?.close();
});

interface Reply {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: JSON answers are checked field by field
  body: any;
}

async function call(
  name: RuntimeName,
  method: string,
  path: string,
  options: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${runtimes[name].origin}${path}`, {
    method,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (e.g. Prometheus text): kept as text.
  }
  return { status: res.status, headers: res.headers, body };
}

async function login(name: RuntimeName, who = ADMIN): Promise<{ accessToken: string; refreshToken: string }> {
  const reply = await call(name, 'POST', '/api/auth/login', { body: who });
  expect(reply.status, JSON.stringify(reply.body)).toBe(200);
  return reply.body;
}

/** Polls until `check` holds or the deadline passes; returns whether it held. */
const eventually = (check: () => Promise<boolean>, deadlineMs = 2_500): Promise<boolean> =>
  waitFor(check, { timeoutMs: deadlineMs }).then(
    () => true,
    () => false,
  );

describe.each(names)('on %s', (name) => {
  it('answers /health and /ready', async () => {
    expect((await call(name, 'GET', '/health')).body).toEqual({ status: 'ok' });
    const ready = await call(name, 'GET', '/ready');
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ status: 'ready' });
  });

  it('serves the admin console from the same build, under its CSP, and signs in with the console cookie', async () => {
    const page = await fetch(`${runtimes[name].origin}/console/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toBe(CONSOLE_CSP);
    const html = await page.text();
    expect(html).toBe(consoleIndex);
    const names = [...html.matchAll(/\/console\/assets\/([^"]+)/g)].map((match) => match[1]!);
    expect(names.length).toBeGreaterThanOrEqual(2);
    for (const asset of names) {
      const res = await fetch(`${runtimes[name].origin}/console/assets/${asset}`);
      expect(res.status, asset).toBe(200);
      expect(await res.text(), asset).toBe(consoleAssets[asset]!.body);
    }
    const signIn = await call(name, 'POST', '/api/console/session', { body: ADMIN });
    expect(signIn.status).toBe(200);
    expect(signIn.headers.getSetCookie().map((cookie) => cookie.split('=')[0])).toEqual(['la_access', 'la_refresh']);
  });

  it('serves /docs and its own script and style under the strict CSP, from the one bundle', async () => {
    for (const [path, type] of [
      ['/docs', /^text\/html/],
      ['/docs/docs.js', /^text\/javascript/],
      ['/docs/docs.css', /^text\/css/],
    ] as const) {
      const reply = await call(name, 'GET', path);
      expect(reply.status, path).toBe(200);
      expect(reply.headers.get('content-type')).toMatch(type);
      expect(reply.headers.get('content-security-policy')).toContain("script-src 'self'; style-src 'self'");
      expect(String(reply.body).length).toBeGreaterThan(500);
    }
  });

  it.skipIf(!haveChromium)(
    `the console signs in and shows the work queue in chromium, live where the runtime streams events and re-read every 5 s where it does not${haveChromium ? '' : ' (skipped: chromium is not installed; run `npm run setup`)'}`,
    async () => {
      browser ??= launchChromium();
      const context = await (await browser).newContext();
      const page = await context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (error) => errors.push(error.message));
      await page.goto(`${runtimes[name].origin}/console/`);
      await page.getByLabel('Email').fill(ADMIN.email);
      await page.getByLabel('Password').fill(ADMIN.password);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.locator('table.queue tbody tr').first().waitFor();
      const badge = name.startsWith('workerd') ? 'refreshing every 5 s' : 'live';
      await page.locator('.live', { hasText: new RegExp(`^${badge}$`) }).waitFor();
      expect(errors).toEqual([]);
      await context.close();
    },
    60_000,
  );

  it('logs in, and refuses a wrong password with 401', async () => {
    const tokens = await login(name);
    expect(tokens.accessToken.split('.')).toHaveLength(3);
    const wrong = await call(name, 'POST', '/api/auth/login', { body: { ...ADMIN, password: 'not the password!!' } });
    expect(wrong.status).toBe(401);
    expect((await call(name, 'GET', '/api/auth/me', { token: tokens.accessToken })).body.email).toBe(ADMIN.email);
  });

  it('lists and gets applications with their version and ETag', async () => {
    const { accessToken: token } = await login(name);
    const list = await call(name, 'GET', '/api/applications?page=1&limit=5', { token });
    expect(list.status).toBe(200);
    expect(list.body.items).toHaveLength(5);
    expect(list.body.total).toBeGreaterThanOrEqual(SEEDED);
    const first = list.body.items[0];
    const one = await call(name, 'GET', `/api/applications/${first._id}`, { token });
    expect(one.status).toBe(200);
    expect(one.body._id).toBe(first._id);
    expect(one.headers.get('etag')).toBe(`"${one.body.version}"`);
    expect((await call(name, 'GET', '/api/applications/APP-does-not-exist', { token })).status).toBe(404);
  });

  it('disburses a loan and verifies the whole keyed ledger, entries of every runtime included (LEDGER_KEYS reached it)', async () => {
    const { accessToken: token } = await login(name);
    // Four eyes: the admin prepares, an approver approves, a disburser pays (accounts made on this runtime).
    const [approver, disburser] = await Promise.all(
      (['approver', 'disburser'] as const).map(async (role) => {
        const who = { email: `smoke-${role}-${name}@example.com`, password: `smoke ${role} password` };
        const made = await call(name, 'POST', '/api/admins', { token, body: { ...who, roles: [role] } });
        expect(made.status, JSON.stringify(made.body)).toBe(201);
        return (await login(name, who)).accessToken;
      }),
    );
    const created = await call(name, 'POST', '/api/applications', { token, body: newApplication });
    const id = created.body._id;
    for (const [status, version, as] of [
      ['under_review', 1, token],
      ['approved', 2, approver],
    ] as const) {
      const moved = await call(name, 'PUT', `/api/applications/${id}`, { token: as, body: { status, version } });
      expect(moved.status, JSON.stringify(moved.body)).toBe(200);
    }
    const headers = { 'idempotency-key': crypto.randomUUID() };
    const disbursed = await call(name, 'POST', `/api/applications/${id}/disburse`, { token: disburser, headers });
    expect(disbursed.status, JSON.stringify(disbursed.body)).toBe(200);
    const entries = await call(name, 'GET', `/api/applications/${id}/ledger`, { token });
    expect(entries.body.entries).toMatchObject([{ seq: disbursed.body.ledgerSeq, kid: 'ledger' }]);
    const verified = await call(name, 'GET', '/api/ledger/verify', { token });
    expect(verified.body).toMatchObject({ ok: true, mismatches: [] });
  });

  it('lets exactly one of 100 concurrent PUTs of the same version win; the other 99 get 409', async () => {
    const { accessToken: token } = await login(name);
    const created = await call(name, 'POST', '/api/applications', { token, body: newApplication });
    expect(created.status).toBe(201);
    expect(created.body.version).toBe(1);
    const replies = await Promise.all(
      Array.from({ length: 100 }, () =>
        call(name, 'PUT', `/api/applications/${created.body._id}`, {
          token,
          body: { status: 'under_review', version: 1 },
        }),
      ),
    );
    const statuses = replies.map((reply) => reply.status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(1);
    expect(statuses.filter((status) => status === 409)).toHaveLength(99);
    const loser = replies.find((reply) => reply.status === 409)!;
    expect(loser.body.current.version).toBe(2);
    const after = await database.db.collection('applications').findOne({ _id: created.body._id as never });
    expect(after).toMatchObject({ version: 2, status: 'under_review' });
  }, 60_000);

  it('answers validation errors with 400 and the field paths', async () => {
    const { accessToken: token } = await login(name);
    const badQuery = await call(name, 'GET', '/api/applications?limit=500&status=nope', { token });
    expect(badQuery.status).toBe(400);
    expect(badQuery.body.error.code).toBe('validation');
    expect(badQuery.body.error.details.map((detail: { path: string }) => detail.path).sort()).toEqual([
      'limit',
      'status',
    ]);
    const badBody = await call(name, 'POST', '/api/applications', {
      token,
      body: { ...newApplication, loanAmount: 1, termMonths: 'twelve' },
    });
    expect(badBody.status).toBe(400);
    expect(badBody.body.error.details.map((detail: { path: string }) => detail.path).sort()).toEqual([
      'loanAmount',
      'termMonths',
    ]);
  });

  it('records the per-admin request counts in MongoDB (the shared rate limiter flushes, lazily on workerd)', async () => {
    // An admin of its own, so only this runtime's requests count.
    const who = { email: `counted-${name}@example.com`, password: ADMIN.password };
    const admins = new Admins(database.db, { passwordIterations: 1000, clock: systemClock });
    const { _id: id } = await admins.create({ email: who.email, password: who.password, roles: ['reviewer'] });
    const { accessToken: token } = await login(name, who);
    for (let i = 0; i < 5; i++) {
      expect((await call(name, 'GET', '/api/applications?limit=1&total=false', { token })).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const counted = async () => {
      const docs = await database.db
        .collection<{ _id: string; count: number }>('rate_limits')
        .find({ _id: { $regex: `^api:${id}:` } })
        .toArray();
      return docs.reduce((sum, doc) => sum + doc.count, 0);
    };
    // The last hits reach MongoDB with the next flush: one more request triggers it where there is no timer.
    const flushed = await eventually(async () => {
      if ((await counted()) >= 5) return true;
      await call(name, 'GET', '/api/applications?limit=1&total=false', { token });
      return false;
    });
    expect(flushed, `counted ${await counted()} of at least 5 requests`).toBe(true);
  });

  it(name === 'node' ? 'serves /metrics (Prometheus, Node only)' : 'answers /metrics with a JSON 404', async () => {
    const metrics = await call(name, 'GET', '/metrics');
    if (name === 'node') {
      expect(metrics.status).toBe(200);
      expect(metrics.body).toContain('http_requests_total');
    } else {
      expect(metrics.status).toBe(404);
      expect(metrics.body.error.code).toBe('not_found');
    }
  });
});

describe.each(names)('a logout on %s', (where) => {
  it('is refused by the other runtimes within the revocation bound (polled up to 2.5 s)', async () => {
    const { accessToken: token } = await login(where);
    for (const name of names) {
      expect((await call(name, 'GET', '/api/auth/me', { token })).status, `before logout on ${name}`).toBe(200);
    }
    expect((await call(where, 'POST', '/api/auth/logout', { token })).status).toBe(204);
    expect((await call(where, 'GET', '/api/auth/me', { token })).status).toBe(401);
    for (const name of names.filter((other) => other !== where)) {
      const refused = await eventually(async () => (await call(name, 'GET', '/api/auth/me', { token })).status === 401);
      expect(refused, `${name} still accepts a token logged out on ${where}`).toBe(true);
    }
  });
});
