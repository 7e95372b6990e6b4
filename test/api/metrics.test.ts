// /metrics as the Node entry wires it (in-process): request counts and latency by route pattern and
// status, queue depths as gauges collected on scrape.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../api/app.ts';
import { createMetrics } from '../../api/metrics.ts';
import type { Services } from '../../api/services.ts';
import { createTestApp } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const PASSWORD = 'a long enough password';
let database: TestDatabase;
let services: Services;
let plain: ReturnType<typeof createApp>;
let app: ReturnType<typeof createApp>;
let statsCalls = 0;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app: plain, services } = await createTestApp(database.db));
  const metrics = createMetrics({
    queue: {
      stats: () => {
        statsCalls++;
        return services.queue.stats();
      },
    },
    // Longer than the default 1 s so a slow machine cannot expire the cache between two scrapes.
    queueStatsCacheMs: 2000,
  });
  app = createApp(services, {
    remoteAddress: () => '127.0.0.1',
    onResponse: metrics.onResponse,
    extraRoutes: metrics.mount,
  });
});
afterAll(() => database.close());

async function scrape() {
  const res = await app.request('/metrics');
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return res.text();
}

/** The value of one sample line, e.g. sample(text, 'http_requests_total', {route: '/health', ...}). */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = (match[2] ?? '').split(',').filter(Boolean);
    if (wanted.every((label) => have.includes(label)) && have.length === wanted.length) return Number(match[3]);
  }
  return undefined;
}

describe('/metrics', () => {
  it('exists only where the runtime mounts it (404 JSON otherwise)', async () => {
    const res = await plain.request('/metrics');
    expect(res.status).toBe(404);
    expect((await res.json()).error.code).toBe('not_found');
  });

  it('counts requests by method, route pattern (never the raw path) and status, with a latency histogram', async () => {
    const admin = await services.admins.create({ email: 'root@example.com', password: PASSWORD, roles: ['admin'] });
    const viewer = await services.admins.create({ email: 'v@example.com', password: PASSWORD, roles: ['viewer'] });
    const login = await app.request('/api/auth/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'root@example.com', password: PASSWORD }),
    });
    const { accessToken } = await login.json();
    const auth = { authorization: `Bearer ${accessToken}` };
    for (let i = 0; i < 3; i++) expect((await app.request('/health')).status).toBe(200);
    expect((await app.request('/api/auth/me')).status).toBe(401);
    expect((await app.request('/api/admin/queue-stats', { headers: auth })).status).toBe(200);
    for (const id of [viewer._id, crypto.randomUUID()]) {
      await app.request(`/api/admins/${id}`, {
        method: 'PATCH',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ disabled: false }),
      });
    }
    expect((await app.request('/no/such/thing')).status).toBe(404);

    const text = await scrape();
    expect(sample(text, 'http_requests_total', { method: 'GET', route: '/health', status: '200' })).toBe(3);
    expect(sample(text, 'http_requests_total', { method: 'POST', route: '/api/auth/login', status: '200' })).toBe(1);
    expect(sample(text, 'http_requests_total', { method: 'GET', route: '/api/auth/me', status: '401' })).toBe(1);
    expect(sample(text, 'http_requests_total', { method: 'GET', route: '/api/admin/queue-stats', status: '200' })).toBe(
      1,
    );
    expect(sample(text, 'http_requests_total', { method: 'PATCH', route: '/api/admins/:id', status: '200' })).toBe(1);
    expect(sample(text, 'http_requests_total', { method: 'PATCH', route: '/api/admins/:id', status: '404' })).toBe(1);
    // Raw paths (ids, unknown URLs) never become label values.
    expect(text).not.toContain(viewer._id);
    expect(text).not.toContain(admin._id);
    expect(text).not.toContain('/no/such/thing');
    expect(sample(text, 'http_requests_total', { method: 'GET', route: '/*', status: '404' })).toBe(1);

    const labels = { method: 'GET', route: '/health', status: '200' };
    expect(sample(text, 'http_request_duration_seconds_count', labels)).toBe(3);
    expect(sample(text, 'http_request_duration_seconds_bucket', { ...labels, le: '+Inf' })).toBe(3);
    expect(sample(text, 'http_request_duration_seconds_sum', labels)).toBeGreaterThan(0);
    expect(text).toContain('# TYPE http_request_duration_seconds histogram');
  });

  it('reports queue depths as gauges, one aggregation per cache period however often it is scraped', async () => {
    await services.queue.add('email', { to: 'a' });
    await services.queue.add('email', { to: 'b' });
    await services.queue.add('report', { id: 1 }, { delay: 60_000 });
    // The previous test's scrape cached stats; wait it out so this scrape sees the new jobs.
    await new Promise((resolve) => setTimeout(resolve, 2100));
    const before = statsCalls;
    const first = await scrape();
    expect(statsCalls - before).toBe(1);
    expect(sample(first, 'queue_jobs', { state: 'waiting' })).toBe(2);
    expect(sample(first, 'queue_jobs', { state: 'delayed' })).toBe(1);
    expect(sample(first, 'queue_jobs', { state: 'active' })).toBe(0);
    expect(sample(first, 'queue_jobs_by_name', { name: 'email', state: 'waiting' })).toBe(2);
    expect(sample(first, 'queue_jobs_by_name', { name: 'report', state: 'delayed' })).toBe(1);
    expect(sample(first, 'queue_oldest_waiting_age_seconds', {})).toBeGreaterThanOrEqual(0);

    await services.queue.add('email', { to: 'c' });
    const cached = await scrape();
    expect(statsCalls - before).toBe(1);
    expect(sample(cached, 'queue_jobs', { state: 'waiting' })).toBe(2);

    await new Promise((resolve) => setTimeout(resolve, 2100));
    const fresh = await scrape();
    expect(statsCalls - before).toBe(2);
    expect(sample(fresh, 'queue_jobs', { state: 'waiting' })).toBe(3);
    // The scrapes themselves are counted by route too.
    expect(sample(fresh, 'http_requests_total', { method: 'GET', route: '/metrics', status: '200' })).toBe(3);
  });
});

describe('/metrics with METRICS_TOKEN', () => {
  it('answers 401 without the token and the metrics with it', async () => {
    const guarded = createMetrics({ queue: services.queue, token: 'scrape-token-0123456789' });
    const withToken = createApp(services, { onResponse: guarded.onResponse, extraRoutes: guarded.mount });
    for (const authorization of [undefined, 'Bearer wrong-token-0123456789']) {
      const res = await withToken.request('/metrics', { headers: authorization ? { authorization } : {} });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
    }
    const ok = await withToken.request('/metrics', { headers: { authorization: 'Bearer scrape-token-0123456789' } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain('http_requests_total');
  });
});
