// GET /api/applications?q=: an application id finds that application; anything else is a case-insensitive
// prefix of the applicant's name with regular-expression characters taken literally. Combines with status,
// sort, page and cursor; cached per q (this suite runs with the list cache on).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openApiSuite } from '../support/app.ts';
import { sampleApplication } from '../support/applications.ts';

let suite: Awaited<ReturnType<typeof openApiSuite>>;
const ids: Record<string, string> = {};

const names = [
  'Ada Lovelace',
  'ADAM Smith',
  'adamant Jones',
  'Grace Ada Hopper',
  'A.B Carter',
  'AxB Carter',
  'Zoë Ådahl',
  'Zoe Adams',
  '(paren) Person',
];

beforeAll(async () => {
  suite = await openApiSuite(import.meta.filename, { RATE_LIMIT_PER_MINUTE: '1000000', LIST_CACHE_MS: '60000' });
  for (const [n, applicantName] of names.entries()) {
    const res = await suite.call('POST', '/api/applications', { body: { ...sampleApplication(n), applicantName } });
    expect(res.status).toBe(201);
    ids[applicantName] = res.body._id;
  }
  const moved = await suite.call('PUT', `/api/applications/${ids['ADAM Smith']}`, {
    body: { status: 'under_review', version: 1 },
  });
  expect(moved.status).toBe(200);
});
afterAll(() => suite.database.close());

const search = async (query: string) => {
  const reply = await suite.call('GET', `/api/applications?${query}`, { as: 'viewer' });
  expect(reply.status, `${query}: ${JSON.stringify(reply.body)}`).toBe(200);
  return reply;
};
const namesOf = (reply: { body: { items: { applicantName: string }[] } }) =>
  reply.body.items.map((item) => item.applicantName).sort();

describe('GET /api/applications?q=', () => {
  it("a case-insensitive prefix of the applicant's name, anchored at its start", async () => {
    const reply = await search('q=ada');
    expect(namesOf(reply)).toEqual(['ADAM Smith', 'Ada Lovelace', 'adamant Jones']);
    expect(reply.body.total).toBe(3);
    expect(namesOf(await search('q=ADAM'))).toEqual(['ADAM Smith', 'adamant Jones']);
    expect(namesOf(await search('q=grace%20ada'))).toEqual(['Grace Ada Hopper']);
    expect((await search('q=lovelace')).body).toMatchObject({ items: [], total: 0, nextCursor: null });
  });

  it('takes regular-expression characters literally: no injection, no 500', async () => {
    expect(namesOf(await search('q=a.b'))).toEqual(['A.B Carter']);
    expect(namesOf(await search(`q=${encodeURIComponent('(paren')}`))).toEqual(['(paren) Person']);
    for (const q of ['.*', '[', '\\', '^A', 'a|z', '(?i)', '$where', '{"$gt":""}']) {
      const reply = await search(`q=${encodeURIComponent(q)}`);
      expect(reply.body.items, q).toEqual([]);
    }
  });

  it('an application id finds exactly that application; an unknown one nothing', async () => {
    const id = ids['Grace Ada Hopper']!;
    const reply = await search(`q=${id}`);
    expect(reply.body.items.map((item: { _id: string }) => item._id)).toEqual([id]);
    expect(reply.body.total).toBe(1);
    expect((await search('q=APP-00000000-0000-0000-0000-000000000000')).body.total).toBe(0);
  });

  it('is trimmed; combines with status and sort', async () => {
    const trimmed = await search(`q=${encodeURIComponent('  ada  ')}`);
    expect(namesOf(trimmed)).toEqual(['ADAM Smith', 'Ada Lovelace', 'adamant Jones']);
    expect(trimmed.headers.get('etag')).toBe((await search('q=ada')).headers.get('etag'));
    expect(namesOf(await search('q=ada&status=under_review'))).toEqual(['ADAM Smith']);
    expect(namesOf(await search('q=ada&status=pending'))).toEqual(['Ada Lovelace', 'adamant Jones']);
    const ascending = await search('q=ada&sort=createdAt');
    expect(ascending.body.items.map((item: { applicantName: string }) => item.applicantName)).toEqual([
      'Ada Lovelace',
      'ADAM Smith',
      'adamant Jones',
    ]);
  });

  it('pages (page mode with its total, and cursor mode, whose cursor carries q, any characters in it)', async () => {
    const first = await search('q=ada&limit=2&sort=createdAt');
    expect(first.body).toMatchObject({ page: 1, limit: 2, total: 3 });
    expect(first.body.items).toHaveLength(2);
    const second = await search('q=ada&limit=2&sort=createdAt&page=2');
    expect(second.body.items.map((item: { applicantName: string }) => item.applicantName)).toEqual(['adamant Jones']);
    // The cursor goes on with the same search, with or without q repeated.
    const cursor = encodeURIComponent(first.body.nextCursor);
    for (const query of [`cursor=${cursor}`, `cursor=${cursor}&q=ada`]) {
      const next = await search(`${query}&limit=2`);
      expect(
        next.body.items.map((item: { applicantName: string }) => item.applicantName),
        query,
      ).toEqual(['adamant Jones']);
      expect(next.body.nextCursor).toBeNull();
    }
    const other = await suite.call('GET', `/api/applications?cursor=${cursor}&q=zoe`);
    expect(other.status).toBe(400);
    expect(other.body.error.details).toEqual([expect.objectContaining({ path: 'cursor' })]);
    // A search beyond Latin-1 travels in the cursor as UTF-8.
    const zo = await search(`q=${encodeURIComponent('zoë')}&limit=1`);
    expect(namesOf(zo)).toEqual(['Zoë Ådahl']);
    const zoe = await search(`q=zo&limit=1&sort=createdAt`);
    expect(namesOf(zoe)).toEqual(['Zoë Ådahl']);
    const after = await search(`q=zo&limit=1&cursor=${encodeURIComponent(zoe.body.nextCursor)}`);
    expect(namesOf(after)).toEqual(['Zoe Adams']);
    const unicode = await search(`q=${encodeURIComponent('zoë å')}&limit=1`);
    expect(namesOf(unicode)).toEqual(['Zoë Ådahl']);
  });

  it('each search is cached apart, and a write through this instance drops the pages it may change', async () => {
    const before = await search('q=ada');
    const hit = await search('q=ada');
    expect(hit.headers.get('cache-status')).toMatch(/^loan-admin; hit;/);
    expect(namesOf(await search('q=zoe'))).toEqual(['Zoe Adams']);
    const created = await suite.call('POST', '/api/applications', {
      body: { ...sampleApplication(99), applicantName: 'Adaline New' },
    });
    expect(created.status).toBe(201);
    const after = await search('q=ada');
    expect(after.headers.get('cache-status')).toBe('loan-admin; fwd=miss; stored');
    expect(after.body.total).toBe(before.body.total + 1);
  });

  it('400 for a blank, too long or control-character q', async () => {
    for (const q of ['', '   ', 'a'.repeat(101), 'ada\u0000', 'a\nb']) {
      const reply = await suite.call('GET', `/api/applications?q=${encodeURIComponent(q)}`);
      expect(reply.status, JSON.stringify(q)).toBe(400);
      expect(reply.body.error.details).toEqual([expect.objectContaining({ path: 'q' })]);
    }
    expect((await search(`q=${'a'.repeat(100)}`)).body.total).toBe(0);
    expect((await search(`q=${encodeURIComponent(`  ${'a'.repeat(100)}  `)}`)).body.total).toBe(0);
  });
});
