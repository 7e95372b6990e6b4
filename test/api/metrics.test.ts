// /metrics as the Node entry wires it (in-process): request counts and latency by route pattern and
// status, queue depths as gauges collected on scrape.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApp } from '../../api/app.ts';
import { createMetrics } from '../../api/metrics.ts';
import type { Services } from '../../api/services.ts';
import { createTestApp } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const PASSWORD = 'a long enough password';
let database: TestDatabase;
let services: Services;
let plain: ReturnType<typeof createApp>;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app: plain, services } = await createTestApp(database.db));
});
afterAll(() => database.close());

/** An app with metrics of its own (fresh counters, an empty stats cache), so no test sees another's. */
function metricsApp(queueStatsCacheMs: number) {
  let statsCalls = 0;
  const metrics = createMetrics({
    queue: {
      stats: () => {
        statsCalls++;
        return services.queue.stats();
      },
    },
    queueStatsCacheMs,
  });
  const app = createApp(services, {
    remoteAddress: () => '127.0.0.1',
    onResponse: metrics.onResponse,
    extraRoutes: metrics.mount,
  });
  return {
    app,
    statsCalls: () => statsCalls,
    async scrape() {
      const res = await app.request('/metrics');
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      return res.text();
    },
  };
}

/** Job names of one test's own, so its by-name counts are exact whatever ran before. */
const jobNames = () => {
  const tag = crypto.randomUUID().slice(0, 8);
  return { email: `email-${tag}`, report: `report-${tag}` };
};

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
    const { app, scrape } = metricsApp(60_000);
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

  it('reports queue depths as gauges, by state and by job name', async () => {
    const { scrape } = metricsApp(60_000);
    const names = jobNames();
    await services.queue.add(names.email, { to: 'a' });
    await services.queue.add(names.email, { to: 'b' });
    await services.queue.add(names.report, { id: 1 }, { delay: 60_000 });
    const expected = await services.queue.stats();
    const text = await scrape();
    for (const state of ['waiting', 'delayed', 'active'] as const) {
      expect(sample(text, 'queue_jobs', { state }), state).toBe(expected[state]);
    }
    expect(sample(text, 'queue_jobs_by_name', { name: names.email, state: 'waiting' })).toBe(2);
    expect(sample(text, 'queue_jobs_by_name', { name: names.email, state: 'delayed' })).toBe(0);
    expect(sample(text, 'queue_jobs_by_name', { name: names.report, state: 'delayed' })).toBe(1);
    expect(sample(text, 'queue_oldest_waiting_age_seconds', {})).toBeGreaterThanOrEqual(0);
  });

  it('runs one aggregation per cache period however often it is scraped', async () => {
    // A cache period no busy machine outlasts between two scrapes.
    const { scrape, statsCalls } = metricsApp(60_000);
    const names = jobNames();
    await services.queue.add(names.email, { to: 'a' });
    const first = await scrape();
    expect(statsCalls()).toBe(1);
    expect(sample(first, 'queue_jobs_by_name', { name: names.email, state: 'waiting' })).toBe(1);

    await services.queue.add(names.email, { to: 'b' });
    for (let i = 0; i < 3; i++) {
      const cached = await scrape();
      expect(sample(cached, 'queue_jobs_by_name', { name: names.email, state: 'waiting' })).toBe(1);
    }
    expect(statsCalls()).toBe(1);
    // The scrapes themselves are counted by route too.
    expect(sample(await scrape(), 'http_requests_total', { method: 'GET', route: '/metrics', status: '200' })).toBe(4);
  });

  it('aggregates again once the cache period has passed', async () => {
    const { scrape, statsCalls } = metricsApp(50);
    const names = jobNames();
    await services.queue.add(names.email, { to: 'a' });
    const first = await scrape();
    expect(sample(first, 'queue_jobs_by_name', { name: names.email, state: 'waiting' })).toBe(1);
    const callsAfterFirst = statsCalls();

    await services.queue.add(names.email, { to: 'b' });
    // However long the machine takes, some later scrape falls after the period and sees the new job.
    await vi.waitFor(
      async () => {
        const fresh = await scrape();
        expect(sample(fresh, 'queue_jobs_by_name', { name: names.email, state: 'waiting' })).toBe(2);
      },
      { timeout: 30_000, interval: 20 },
    );
    expect(statsCalls()).toBeGreaterThan(callsAfterFirst);
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
