// The app's edges, through HTTP semantics (app.request), against the run's MongoDB target.
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import { createTestApp } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const overrides = { CORS_ORIGINS: 'https://admin.example', BODY_LIMIT_BYTES: '1024' };
let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app, services } = await createTestApp(database.db, overrides));
  app.post('/echo', async (c) => c.json(await c.req.json()));
});
afterAll(() => database.close());

describe('health and readiness', () => {
  it('GET /health answers without touching the database', async () => {
    const res = await app.request('/health');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
    // The same answer from an app whose database cannot be reached.
    const dead = new MongoClient('mongodb://127.0.0.1:1', { serverSelectionTimeoutMS: 300 });
    try {
      const alone = await createApp({ ...services, db: dead.db('x') }).request('/health');
      expect(alone.status).toBe(200);
      expect(await alone.json()).toEqual({ status: 'ok' });
    } finally {
      await dead.close();
    }
  });

  it('GET /ready is 200 while MongoDB answers and 503 when it does not', async () => {
    expect((await app.request('/ready')).status).toBe(200);
    const dead = new MongoClient('mongodb://127.0.0.1:1', { serverSelectionTimeoutMS: 300 });
    const down = createApp({ ...services, db: dead.db('x') });
    const res = await down.request('/ready');
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ status: 'unavailable' });
    await dead.close();
  });
});

describe('edges', () => {
  it('unknown routes get the JSON error format with 404', async () => {
    const res = await app.request('/nope');
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { code: 'not_found', message: 'No route for GET /nope' } });
  });

  it('a body that is not JSON gets 415', async () => {
    const res = await app.request('/echo', { method: 'POST', body: 'a=1', headers: { 'content-type': 'text/plain' } });
    expect(res.status).toBe(415);
    expect((await res.json()).error.code).toBe('unsupported_media_type');
  });

  it('a body over the limit gets 413', async () => {
    const body = JSON.stringify({ pad: 'x'.repeat(2000) });
    const res = await app.request('/echo', {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', 'content-length': String(body.length) },
    });
    expect(res.status).toBe(413);
    expect((await res.json()).error.code).toBe('payload_too_large');
  });

  it('a JSON body within the limit passes', async () => {
    const body = JSON.stringify({ a: 1 });
    const res = await app.request('/echo', {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json; charset=utf-8', 'content-length': String(body.length) },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ a: 1 });
  });

  it('echoes a request id, sets secure headers and answers CORS only for configured origins', async () => {
    const res = await app.request('/health', {
      headers: { 'x-request-id': 'abc-123', origin: 'https://admin.example' },
    });
    expect(res.headers.get('x-request-id')).toBe('abc-123');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('access-control-allow-origin')).toBe('https://admin.example');
    const other = await app.request('/health', { headers: { origin: 'https://evil.example' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    expect((await app.request('/health')).headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('serves an OpenAPI 3.1 document', async () => {
    const res = await app.request('/openapi.json');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ openapi: '3.1.0', info: { title: 'loan-admin API' } });
  });
});

describe('validation', () => {
  it('answers 400 with field paths for a schema failure and for a body that is not JSON', async () => {
    const { createRoute, z } = await import('@hono/zod-openapi');
    const route = createRoute({
      method: 'post',
      path: '/things',
      request: {
        body: {
          content: { 'application/json': { schema: z.object({ name: z.string().min(1), n: z.number().int() }) } },
        },
      },
      responses: { 200: { description: 'ok' } },
    });
    const fresh = createApp(services);
    fresh.openapi(route, (c) => c.json(c.req.valid('json')));
    const bad = await fresh.request('/things', {
      method: 'POST',
      body: JSON.stringify({ name: '', n: 1.5 }),
      headers: { 'content-type': 'application/json' },
    });
    expect(bad.status).toBe(400);
    const body = await bad.json();
    expect(body.error.code).toBe('validation');
    expect(body.error.details.map((d: { path: string }) => d.path).sort()).toEqual(['n', 'name']);

    const garbled = await fresh.request('/things', {
      method: 'POST',
      body: '{"name": ',
      headers: { 'content-type': 'application/json' },
    });
    expect(garbled.status).toBe(400);
    expect((await garbled.json()).error.code).toBe('validation');
  });
});
