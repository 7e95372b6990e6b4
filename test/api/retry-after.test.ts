// Every path that answers 503 says when to retry (Retry-After): a lease not acquired in time or lost,
// the database unreachable, load shedding, /ready while MongoDB is down, and a worker's /ready probe.
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApp } from '../../api/app.ts';
import { HttpError, mapError } from '../../api/http-errors.ts';
import { createLogger } from '../../api/log.ts';
import { apiIndexes, createServices, type Services } from '../../api/services.ts';
import { freePort } from '../../scripts/mongo/offline-server.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { LockLostError } from '../../shared/core/errors.ts';
import { startWorker } from '../../workers/runtime.ts';
import { testConfig } from '../support/app.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
let services: Services;
let dead: MongoClient;
const gates: Array<() => void> = [];

function appFor(svc: Services) {
  return createApp(svc, {
    // Test routes, mounted under /api/ so that load shedding applies to them as to the real ones.
    extraRoutes: (app) => {
      app.get('/api/test/held-lease', () =>
        svc.locks.withLock('retry-after:held', async () => new Response('unreachable'), { waitMs: 50 }),
      );
      app.get('/api/test/lost-lease', () => {
        throw new LockLostError('lease lost while working');
      });
      app.get('/api/test/dead-database', async (c) =>
        c.json(await dead.db('x').collection('y').findOne({}, { timeoutMS: 300 })),
      );
      app.get('/api/test/bare-503', () => {
        throw new HttpError(503, 'unavailable', 'a dependency is down');
      });
      app.get('/api/test/slow', async (c) => {
        await new Promise<void>((resolve) => gates.push(resolve));
        return c.text('done');
      });
    },
  });
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  await ensureIndexes(database.db, apiIndexes);
  services = await createServices(
    database.db,
    testConfig({ MAX_IN_FLIGHT: '1', MAX_QUEUED: '0' }),
    createLogger('silent'),
  );
  dead = new MongoClient('mongodb://127.0.0.1:1', { serverSelectionTimeoutMS: 300 });
});
afterAll(async () => {
  await dead?.close();
  await database?.close();
});

const expect503 = async (res: Response, code?: string) => {
  expect(res.status).toBe(503);
  expect(res.headers.get('retry-after')).toBe('1');
  if (code) expect((await res.json()).error.code).toBe(code);
};

describe('every 503 carries Retry-After', () => {
  it('a lease not acquired within its wait (lock_timeout), through the app', async () => {
    const holder = await services.locks.acquire('retry-after:held', { ttlMs: 30_000 });
    expect(holder).not.toBeNull();
    try {
      await expect503(await appFor(services).request('/api/test/held-lease'), 'lock_timeout');
    } finally {
      await services.locks.release(holder!);
    }
  });

  it('a lease lost while working (lock_lost), a database that does not answer, and a bare HttpError 503', async () => {
    const app = appFor(services);
    await expect503(await app.request('/api/test/lost-lease'), 'lock_lost');
    await expect503(await app.request('/api/test/dead-database'), 'unavailable');
    await expect503(await app.request('/api/test/bare-503'), 'unavailable');
    // The mapper itself, for any 503 it produces; a header already set is kept.
    expect(mapError(new HttpError(503, 'overloaded', 'y')).headers).toEqual({ 'Retry-After': '1' });
    expect(mapError(new HttpError(503, 'overloaded', 'y', undefined, { 'retry-after': '7' })).headers).toEqual({
      'retry-after': '7',
    });
  });

  it('load shedding (MAX_IN_FLIGHT 1, MAX_QUEUED 0)', async () => {
    const app = appFor(services);
    const first = app.request('/api/test/slow');
    await vi.waitFor(() => expect(gates).toHaveLength(1));
    await expect503(await app.request('/api/test/slow'), 'overloaded');
    gates.shift()?.();
    expect((await first).status).toBe(200);
  });

  it('/ready while MongoDB does not answer', async () => {
    const down = appFor({ ...services, db: dead.db('x') });
    const res = await down.request('/ready');
    await expect503(res);
  });

  it("a worker's /ready probe while it is not ready yet", async () => {
    const port = await freePort();
    let release!: () => void;
    const preparing = new Promise<void>((resolve) => {
      release = resolve;
    });
    const starting = startWorker(
      { name: 'retry-after', jobNames: ['retry-after.none'], handler: async () => null, prepare: () => preparing },
      {
        MONGO_URL: mongoUrl(),
        MONGO_DB: database.name,
        LOG_LEVEL: 'silent',
        HOST: '127.0.0.1',
        WORKER_PROBE_PORT: String(port),
      },
    );
    try {
      const res = await vi.waitFor(() => fetch(`http://127.0.0.1:${port}/ready`), { timeout: 20_000, interval: 50 });
      await expect503(res);
    } finally {
      release();
      await (await starting).stop('test done');
    }
  });
});
