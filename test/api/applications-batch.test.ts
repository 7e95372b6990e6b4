// Batch status updates over HTTP: per-id outcomes under concurrent edits, the lease that keeps two
// batches from interleaving, validation, and the replay of audit entries and jobs after a crash.
import type { Db, Document, Filter, FindOptions } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../api/app.ts';
import { BATCH_LOCK_KEY } from '../../api/routes/applications.ts';
import type { Services } from '../../api/services.ts';
import { JOBS_COLLECTION } from '../../shared/concurrency/queue/index.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { APPLICATIONS_COLLECTION, Applications } from '../../shared/loans/applications.ts';
import { AUDIT_COLLECTION } from '../../shared/loans/audit.ts';
import { openApiSuite } from '../support/app.ts';
import { applicationSteps } from '../support/applications.ts';
import type { callerFor } from '../support/http.ts';
import type { TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
let tokens: Record<Role, string>;
let adminIds: Record<Role, string>;
const roles: Role[] = ['viewer', 'reviewer', 'approver', 'disburser', 'admin'];

let call: ReturnType<typeof callerFor>;

const { createOne, walk } = applicationSteps(() => call);

const applications = () => database.db.collection(APPLICATIONS_COLLECTION);
const audit = () => database.db.collection(AUDIT_COLLECTION);
const jobs = () => database.db.collection(JOBS_COLLECTION);

beforeAll(async () => {
  ({ database, app, services, tokens, adminIds, call } = await openApiSuite(
    import.meta.filename,
    { RATE_LIMIT_PER_MINUTE: '1000000' },
    roles,
  ));
});
afterAll(() => database.close());

const batchUpdate = (applicationIds: string[], status: string, on = app, as: Role = 'admin') =>
  Promise.resolve(
    on.request('/api/applications/batch-update', {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens[as]}`, 'content-type': 'application/json' },
      body: JSON.stringify({ applicationIds, status }),
    }),
  ).then(async (res) => ({ status: res.status, body: await res.json() }));

async function createMany(n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 10) {
    const created = await Promise.all(Array.from({ length: Math.min(10, n - i) }, (_, j) => createOne(i + j)));
    ids.push(...created.map((c) => c._id));
  }
  return ids;
}

const missingId = (n: number) => `APP-00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

/**
 * The same app on a database whose applications collection runs `hook` right after a batch's read
 * (a find by _id $in) returns: a deterministic "someone edited between the batch's read and its writes".
 */
function appWithHookAfterBatchRead(hook: () => Promise<void>) {
  const bind = <T extends object>(target: T, prop: string | symbol) => {
    const value = Reflect.get(target, prop, target);
    return typeof value === 'function' ? value.bind(target) : value;
  };
  const db = new Proxy(database.db, {
    get(target, prop) {
      if (prop !== 'collection') return bind(target, prop);
      return (name: string) => {
        const collection = target.collection(name);
        if (name !== APPLICATIONS_COLLECTION) return collection;
        return new Proxy(collection, {
          get(c, p) {
            if (p !== 'find') return bind(c, p);
            return (filter: Filter<Document>, options?: FindOptions) => {
              const cursor = c.find(filter, options);
              if ((filter as { _id?: { $in?: unknown } })._id?.$in) {
                const toArray = cursor.toArray.bind(cursor);
                cursor.toArray = async () => {
                  const docs = await toArray();
                  await hook();
                  return docs;
                };
              }
              return cursor;
            };
          },
        });
      };
    },
  }) as Db;
  return createApp({ ...services, db });
}

describe('batch-update', () => {
  it('reports updated, not_found, invalid and conflict per id, and audits and publishes only the updated', async () => {
    const ids = await createMany(20);
    // Two are already under review (a same-status move is invalid), one is approved (invalid too).
    await walk(ids[0]!, ['under_review']);
    await walk(ids[1]!, ['under_review']);
    await walk(ids[2]!, ['under_review', 'approved']);
    const editedConcurrently = ids.slice(3, 6);
    const hooked = appWithHookAfterBatchRead(async () => {
      // Edits through the ordinary app, between the batch's read and its writes.
      for (const id of editedConcurrently) {
        const res = await call('PUT', `/api/applications/${id}`, { body: { purpose: 'edited', version: 1 } });
        expect(res.status).toBe(200);
      }
    });
    const missing = [missingId(1), missingId(2), missingId(3)];
    const request = [...ids, ...missing];
    const res = await batchUpdate(request, 'under_review', hooked);
    expect(res.status).toBe(200);
    expect(res.body.counts).toEqual({ updated: 14, conflict: 3, not_found: 3, invalid: 3, forbidden: 0 });
    const byId = new Map(res.body.results.map((r: { id: string }) => [r.id, r]));
    expect(res.body.results.map((r: { id: string }) => r.id)).toEqual(request);
    expect(byId.get(ids[0]!)).toMatchObject({ outcome: 'invalid', version: 2 });
    expect(byId.get(ids[2]!)).toMatchObject({ outcome: 'invalid', version: 3 });
    for (const id of editedConcurrently) expect(byId.get(id)).toMatchObject({ outcome: 'conflict' });
    for (const id of missing) expect(byId.get(id)).toEqual({ id, outcome: 'not_found' });
    for (const id of ids.slice(6)) expect(byId.get(id)).toEqual({ id, outcome: 'updated', version: 2 });

    // The concurrent edit stands (no lost update) and the batch did not overwrite it.
    for (const id of editedConcurrently) {
      expect(await applications().findOne({ _id: id } as never)).toMatchObject({
        version: 2,
        status: 'pending',
        purpose: 'edited',
      });
    }
    for (const id of ids.slice(6)) {
      expect(await applications().findOne({ _id: id } as never)).toMatchObject({ version: 2, status: 'under_review' });
      const entry = await audit().findOne({ _id: `${id}:2` } as never);
      expect(entry).toMatchObject({
        action: 'batch-update',
        from: 'pending',
        to: 'under_review',
        actor: adminIds.admin,
      });
      expect(await jobs().countDocuments({ _id: `application.review:${id}:2` } as never)).toBe(1);
    }
    expect(await jobs().countDocuments({ 'data.applicationId': { $in: editedConcurrently } })).toBe(0);
    expect(
      await audit().countDocuments({
        applicationId: { $in: [...editedConcurrently, ...missing] },
        action: 'batch-update',
      }),
    ).toBe(0);
  });

  it('two concurrent batches over overlapping ids do not interleave: each id moves once, no conflicts', async () => {
    const ids = await createMany(60);
    const [a, b] = await Promise.all([
      batchUpdate(ids.slice(0, 40), 'under_review'),
      batchUpdate(ids.slice(20), 'under_review'),
    ]);
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    // The lease serialises them: the second reads after the first wrote, so the overlap is invalid, never a conflict.
    expect(a.body.counts.conflict + b.body.counts.conflict).toBe(0);
    expect(a.body.counts.updated + b.body.counts.updated).toBe(60);
    expect(a.body.counts.invalid + b.body.counts.invalid).toBe(20);
    expect([a.body.counts.invalid, b.body.counts.invalid]).toContain(0);
    for (const id of ids) {
      expect(await applications().findOne({ _id: id } as never)).toMatchObject({ version: 2, status: 'under_review' });
      expect(await audit().countDocuments({ applicationId: id })).toBe(2);
    }
  });

  it('batches racing with PUTs on the same ids: every id ends consistent with exactly the writes that won', async () => {
    const ids = await createMany(40);
    const [first, puts, second] = await Promise.all([
      batchUpdate(ids, 'under_review'),
      Promise.all(
        ids.map((id, i) => call('PUT', `/api/applications/${id}`, { body: { purpose: `p${i}`, version: 1 } })),
      ),
      batchUpdate(ids.slice(0, 20), 'under_review'),
    ]);
    let updated = 0;
    for (const [i, id] of ids.entries()) {
      const outcomes = [first, second]
        .flatMap((batch) => batch.body.results)
        .filter((r: { id: string }) => r.id === id)
        .map((r: { outcome: string }) => r.outcome);
      const batchWins = outcomes.filter((o: string) => o === 'updated').length;
      const putWins = puts[i]!.status === 200 ? 1 : 0;
      expect(puts[i]!.status === 200 || puts[i]!.status === 409).toBe(true);
      const doc = await applications().findOne({ _id: id } as never);
      expect(doc!.version, id).toBe(1 + batchWins + putWins);
      expect(doc!.status).toBe(batchWins > 0 ? 'under_review' : 'pending');
      expect(await audit().countDocuments({ applicationId: id })).toBe(doc!.version);
      expect(batchWins).toBeLessThanOrEqual(1);
      updated += batchWins;
    }
    expect(updated).toBeGreaterThan(0);
  });

  it('waits for the lease while another holder has it', async () => {
    const ids = await createMany(3);
    const lease = await services.locks.acquire(BATCH_LOCK_KEY, { ttlMs: 10_000 });
    expect(lease).not.toBeNull();
    let finished = false;
    const pending = batchUpdate(ids, 'under_review').then((res) => {
      finished = true;
      return res;
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(finished).toBe(false);
    expect((await applications().findOne({ _id: ids[0] } as never))?.version).toBe(1);
    await services.locks.release(lease!);
    const res = await pending;
    expect(res.body.counts.updated).toBe(3);
  });

  it('validates the request: 1..500 unique well-formed ids and a target status; 403 without status:<target>', async () => {
    const [id] = await createMany(1);
    const bad = [
      { applicationIds: [], status: 'under_review' },
      { applicationIds: [id, id], status: 'under_review' },
      { applicationIds: Array.from({ length: 501 }, (_, i) => missingId(i)), status: 'under_review' },
      { applicationIds: [id], status: 'pending' },
      { applicationIds: [{ $gt: '' }], status: 'under_review' },
      { applicationIds: [id], status: 'under_review', $where: '1' },
    ];
    for (const body of bad) {
      const res = await call('POST', '/api/applications/batch-update', { body });
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(res.body.error.code, JSON.stringify(body).slice(0, 80)).toBe('validation');
    }
    for (const [status, role] of [
      ['approved', 'reviewer'],
      ['under_review', 'approver'],
    ] as const) {
      const refused = await batchUpdate([id!], status, app, role);
      expect(refused.status, `${role} -> ${status}`).toBe(403);
      expect(refused.body.error.code).toBe('forbidden');
    }
    expect((await applications().findOne({ _id: id } as never))?.version).toBe(1);
    const full = await batchUpdate(
      Array.from({ length: 500 }, (_, i) => (i === 0 ? id! : missingId(i))),
      'under_review',
    );
    expect(full.body.counts).toEqual({ updated: 1, conflict: 0, not_found: 499, invalid: 0, forbidden: 0 });
  });
});

describe('after a crash between a write and its effects', () => {
  it('replayLastChanges redoes the missing audit entries and jobs, once', async () => {
    const ids = await createMany(3);
    await walk(ids[0]!, ['under_review', 'approved']);
    await walk(ids[1]!, ['under_review']);
    await call('PUT', `/api/applications/${ids[2]}`, { body: { purpose: 'edited', version: 1 } });
    // Simulate a process that died after each versioned update, before its audit entry and job.
    const lost = [`${ids[0]}:3`, `${ids[1]}:2`, `${ids[2]}:2`];
    const kept = await audit()
      .find({ _id: { $in: lost } } as never)
      .toArray();
    await audit().deleteMany({ _id: { $in: lost } } as never);
    await jobs().deleteMany({
      _id: { $in: [`application.approved:${ids[0]}:3`, `application.review:${ids[1]}:2`] },
    } as never);

    const repo = new Applications(database.db, { clock: services.clock, queue: services.queue });
    expect((await repo.replayChanges({ marginMs: 60_000 })).replayed).toBeGreaterThanOrEqual(3);
    await repo.replayChanges({ marginMs: 60_000 });
    const restored = await audit()
      .find({ _id: { $in: lost } } as never)
      .toArray();
    const strip = ({ _id, at, actor, action, applicationId, from, to, version, fields }: Record<string, unknown>) => ({
      _id,
      at,
      actor,
      action,
      applicationId,
      from,
      to,
      version,
      fields,
    });
    expect(restored.map(strip).sort((x, y) => String(x._id).localeCompare(String(y._id)))).toEqual(
      kept.map(strip).sort((x, y) => String(x._id).localeCompare(String(y._id))),
    );
    expect(await jobs().countDocuments({ _id: `application.approved:${ids[0]}:3` } as never)).toBe(1);
    expect(await jobs().countDocuments({ _id: `application.review:${ids[1]}:2` } as never)).toBe(1);
    expect(await jobs().countDocuments({ 'data.applicationId': ids[2] })).toBe(0);
    for (const id of ids) {
      const doc = await applications().findOne({ _id: id } as never);
      expect(await audit().countDocuments({ applicationId: id })).toBe(doc!.version);
    }
  });

  it('replays a change under the version it produced, though a later write without an audit bumped it', async () => {
    const [id] = await createMany(1);
    // If-Match: * pins the version it writes, so its lastChange can name version 2.
    const moved = await call('PUT', `/api/applications/${id}`, {
      body: { status: 'under_review' },
      headers: { 'if-match': '*' },
    });
    expect(moved.status).toBe(200);
    // The OCR worker and the approval worker write their results like this: version + 1, no lastChange.
    await applications().updateOne({ _id: id } as never, { $set: { ocr: { fields: {} } }, $inc: { version: 1 } });
    await audit().deleteOne({ _id: `${id}:2` } as never);
    await jobs().deleteOne({ _id: `application.review:${id}:2` } as never);

    const repo = new Applications(database.db, { clock: services.clock, queue: services.queue });
    await repo.replayChanges({ marginMs: 60_000 });
    expect(await audit().findOne({ _id: `${id}:2` } as never)).toMatchObject({
      from: 'pending',
      to: 'under_review',
      version: 2,
    });
    expect(await audit().countDocuments({ _id: `${id}:3` } as never)).toBe(0);
    expect(await jobs().countDocuments({ _id: `application.review:${id}:2` } as never)).toBe(1);
    expect(await jobs().countDocuments({ _id: `application.review:${id}:3` } as never)).toBe(0);
  });
});
