// Listing applications over HTTP: page mode with total, cursor mode (keyset), sort orders, status
// filter, and the edges of page and limit. Its own database, so totals are exact. The list cache is on
// (as in production): every write here goes through the API, which drops the entries it changes, except
// one direct clean-up that clears the cache itself.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { APPLICATIONS_COLLECTION } from '../../shared/loans/applications.ts';
import { createTestApp, openApiSuite } from '../support/app.ts';
import { applicationSteps } from '../support/applications.ts';
import { adminsByRole, callerFor } from '../support/http.ts';
import type { TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
const roles: Role[] = ['viewer', 'reviewer', 'approver', 'disburser', 'admin'];

let call: ReturnType<typeof callerFor>;

const { createOne } = applicationSteps(() => call);

const applications = () => database.db.collection(APPLICATIONS_COLLECTION);

beforeAll(async () => {
  ({ database, app, services, call } = await openApiSuite(
    import.meta.filename,
    { RATE_LIMIT_PER_MINUTE: '1000000', LIST_CACHE_MS: '1000' },
    roles,
  ));
});
afterAll(() => database.close());

const N = 120;
const REVIEWED = 30;
/** Every application as the database orders it, for each sort the API offers. */
async function expectedOrder(sort: string, status?: string): Promise<string[]> {
  const field = sort.replace('-', '');
  const dir = sort.startsWith('-') ? -1 : 1;
  const docs = await applications()
    .find(status ? { status } : {})
    .sort({ [field]: dir, _id: dir })
    .project({ _id: 1 })
    .toArray();
  return docs.map((doc) => String(doc._id));
}

async function walkCursor(query: string): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let pages = 0;
  let res = await call('GET', `/api/applications?${query}`);
  for (;;) {
    expect(res.status).toBe(200);
    pages++;
    ids.push(...res.body.items.map((item: { _id: string }) => item._id));
    if (!res.body.nextCursor) return { ids, pages };
    const limit = /limit=(\d+)/.exec(query)?.[1] ?? '50';
    res = await call('GET', `/api/applications?cursor=${encodeURIComponent(res.body.nextCursor)}&limit=${limit}`);
    expect(Object.keys(res.body).sort()).toEqual(['items', 'limit', 'nextCursor']);
  }
}

describe('listing', () => {
  beforeAll(async () => {
    // Ten at a time, so that many share a createdAt millisecond and the _id tie-breaker matters.
    for (let i = 0; i < N; i += 10) {
      await Promise.all(Array.from({ length: 10 }, (_, j) => createOne(i + j)));
    }
    const all = await applications().find({}).project({ _id: 1 }).toArray();
    const picked = all.slice(0, REVIEWED).map((doc) => String(doc._id));
    const batch = await call('POST', '/api/applications/batch-update', {
      body: { applicationIds: picked, status: 'under_review' },
    });
    expect(batch.body.counts.updated).toBe(REVIEWED);
  }, 120_000);

  it('page mode: {items, page, limit, total, nextCursor} in -createdAt order with _id as tie-breaker', async () => {
    const res = await call('GET', '/api/applications');
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ page: 1, limit: 50, total: N });
    expect(res.body.items).toHaveLength(50);
    expect(typeof res.body.nextCursor).toBe('string');
    expect(res.body.items.map((item: { _id: string }) => item._id)).toEqual(
      (await expectedOrder('-createdAt')).slice(0, 50),
    );
    const third = await call('GET', '/api/applications?page=3&limit=50');
    expect(third.body.items).toHaveLength(N - 100);
    expect(third.body.total).toBe(N);
    expect(third.body.nextCursor).toBeNull();
  });

  it('a page beyond the end is empty with the right total; total=false skips the count', async () => {
    const beyond = await call('GET', '/api/applications?page=99&limit=50');
    expect(beyond.status).toBe(200);
    expect(beyond.body).toEqual({ items: [], page: 99, limit: 50, total: N, nextCursor: null });
    const filtered = await call('GET', '/api/applications?page=2&limit=50&status=under_review');
    expect(filtered.body).toEqual({ items: [], page: 2, limit: 50, total: REVIEWED, nextCursor: null });
    const noTotal = await call('GET', '/api/applications?limit=5&total=false');
    expect(noTotal.status).toBe(200);
    expect(noTotal.body.total).toBeUndefined();
    expect(noTotal.body.items).toHaveLength(5);
  });

  it('limit and page edges: 0, 201, negative, fractional, non-numeric get 400; 1 and 200 pass', async () => {
    for (const query of ['limit=0', 'limit=201', 'limit=-1', 'limit=1.5', 'limit=abc', 'page=0', 'page=-2', 'page=x']) {
      const res = await call('GET', `/api/applications?${query}`);
      expect(res.status, query).toBe(400);
      expect(res.body.error.code).toBe('validation');
    }
    expect((await call('GET', '/api/applications?limit=1')).body.items).toHaveLength(1);
    const max = await call('GET', '/api/applications?limit=200');
    expect(max.body.items).toHaveLength(N);
    expect(max.body.nextCursor).toBeNull();
  });

  it('deep paging: a skip past LIST_MAX_SKIP (10,000) is 400 page_too_deep pointing to cursor; up to it passes', async () => {
    for (const query of ['page=1000000&limit=200', 'page=52&limit=200', 'page=10002&limit=1']) {
      const res = await call('GET', `/api/applications?${query}`);
      expect(res.status, query).toBe(400);
      expect(res.body.error.code).toBe('page_too_deep');
      expect(res.body.error.message).toMatch(/cursor/);
      expect(res.body.error.details).toEqual([expect.objectContaining({ path: 'page' })]);
    }
    // Exactly 10,000 rows skipped is allowed (here: past the end, so empty).
    const deepest = await call('GET', '/api/applications?page=51&limit=200');
    expect(deepest.status).toBe(200);
    expect(deepest.body).toMatchObject({ items: [], page: 51, total: N });
    // The cursor has no such bound.
    expect((await call('GET', '/api/applications?limit=200&total=false')).status).toBe(200);
  });

  it('deep paging: the bound is LIST_MAX_SKIP, and the spec names page_too_deep and cursor', async () => {
    const small = await createTestApp(database.db, { RATE_LIMIT_PER_MINUTE: '1000000', LIST_MAX_SKIP: '100' });
    const { tokens: smallTokens } = await adminsByRole(small.app, small.services, ['admin']);
    const callSmall = callerFor(small.app, smallTokens as Record<Role, string>);
    const ok = await callSmall('GET', '/api/applications?page=3&limit=50');
    expect(ok.status).toBe(200);
    expect(ok.body.items).toHaveLength(20);
    const deep = await callSmall('GET', '/api/applications?page=4&limit=50');
    expect(deep.status).toBe(400);
    expect(deep.body.error.code).toBe('page_too_deep');
    const spec = await (await app.request('/openapi.json')).json();
    const list = spec.paths['/api/applications'].get;
    expect(list.description).toMatch(/page_too_deep/);
    const page = list.parameters.find((p: { name: string }) => p.name === 'page');
    expect(page.description).toMatch(/cursor/);
    expect(page.description).toMatch(/10,000/);
  });

  it('the status filter applies to items and total, in page and cursor mode', async () => {
    const res = await call('GET', '/api/applications?status=under_review&limit=200');
    expect(res.body.total).toBe(REVIEWED);
    expect(res.body.items.every((item: { status: string }) => item.status === 'under_review')).toBe(true);
    const pending = await call('GET', '/api/applications?status=pending&limit=1');
    expect(pending.body.total).toBe(N - REVIEWED);
    const { ids } = await walkCursor('status=under_review&limit=7&sort=updatedAt');
    expect(ids).toEqual(await expectedOrder('updatedAt', 'under_review'));
  });

  it('a cursor walk over every sort returns every document exactly once, in order', async () => {
    for (const sort of ['-createdAt', 'createdAt', '-updatedAt', 'updatedAt']) {
      const { ids, pages } = await walkCursor(`sort=${sort}&limit=7`);
      expect(ids, sort).toEqual(await expectedOrder(sort));
      expect(new Set(ids).size).toBe(N);
      expect(pages).toBe(Math.ceil(N / 7));
    }
  });

  it('page mode nextCursor continues where the page ended', async () => {
    const first = await call('GET', '/api/applications?limit=40&sort=createdAt');
    const next = await call('GET', `/api/applications?limit=40&cursor=${encodeURIComponent(first.body.nextCursor)}`);
    const second = await call('GET', '/api/applications?limit=40&page=2&sort=createdAt');
    expect(next.body.items.map((i: { _id: string }) => i._id)).toEqual(
      second.body.items.map((i: { _id: string }) => i._id),
    );
  });

  it('a cursor walk stays exact while documents are inserted and changed behind it', async () => {
    const before = await expectedOrder('createdAt');
    const ids: string[] = [];
    const added: string[] = [];
    try {
      let res = await call('GET', '/api/applications?sort=createdAt&limit=25');
      let round = 0;
      for (;;) {
        ids.push(...res.body.items.map((item: { _id: string }) => item._id));
        // New documents sort after everything already there; the walk reaches them too.
        if (round++ < 2) added.push((await createOne(1000 + round))._id);
        if (!res.body.nextCursor) break;
        res = await call('GET', `/api/applications?limit=25&cursor=${encodeURIComponent(res.body.nextCursor)}`);
      }
    } finally {
      // The other tests count the N applications of the fixture, in whatever order they run.
      await applications().deleteMany({ _id: { $in: added as never[] } });
      // Written behind the API's back: this instance's lists must not serve pages that still hold them.
      services.listCache.clear();
    }
    expect(ids.slice(0, before.length)).toEqual(before);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(before.length + 2);
    expect(ids.slice(before.length).sort()).toEqual([...added].sort());
  });

  it('bad cursors get 400: garbage, tampered, a cursor with page, or with another sort or status', async () => {
    const first = await call('GET', '/api/applications?limit=5&sort=createdAt');
    const cursor = encodeURIComponent(first.body.nextCursor);
    const tampered = encodeURIComponent(btoa(JSON.stringify({ s: 'createdAt', st: null, v: { $gt: 0 }, i: 'APP-x' })));
    for (const query of [
      'cursor=not-a-cursor',
      `cursor=${tampered}`,
      `cursor=${encodeURIComponent(btoa('{"__proto__":{"s":"createdAt"}}'))}`,
      `cursor=${cursor}&page=2`,
      `cursor=${cursor}&sort=-createdAt`,
      `cursor=${cursor}&status=pending`,
    ]) {
      const res = await call('GET', `/api/applications?${query}`);
      expect(res.status, query).toBe(400);
      expect(res.body.error.code, query).toBe('validation');
    }
    const next = await call('GET', `/api/applications?cursor=${cursor}&sort=createdAt`);
    expect(next.status).toBe(200);
    // The cursor continues after the first page: none of its items again.
    const seen = new Set(first.body.items.map((a: { _id: string }) => a._id));
    expect(next.body.items.length).toBeGreaterThan(0);
    expect(next.body.items.filter((a: { _id: string }) => seen.has(a._id))).toEqual([]);
  });
});
