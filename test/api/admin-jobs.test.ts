// Dead letters through HTTP: GET /api/admin/jobs?state=dead lists the jobs that failed for good, with their
// last error; POST /api/admin/jobs/{id}/retry moves one back to waiting, once however many admins click.
// The dead letters are made by a real queue Worker whose handler throws.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type JobDocument, Worker } from '../../shared/concurrency/queue/index.ts';
import { openApiSuite } from '../support/app.ts';
import { waitForValue } from '../support/wait.ts';

let suite: Awaited<ReturnType<typeof openApiSuite>>;
const workers: Worker[] = [];

beforeAll(async () => {
  suite = await openApiSuite(import.meta.filename, { RATE_LIMIT_PER_MINUTE: '1000000' });
});
afterAll(async () => {
  for (const worker of workers) await worker.close(1_000);
  await suite.database.close();
});

const jobs = () => suite.database.db.collection<JobDocument>('jobs');

/** Runs `name` jobs with a handler that always throws, until `count` of them are dead-lettered. */
async function deadLetters(name: string, count: number): Promise<void> {
  const worker = new Worker(
    suite.database.db,
    name,
    async (job) => {
      throw new Error(`cannot do ${job.id}`);
    },
    { pollMs: 50, clock: suite.services.clock },
  );
  workers.push(worker as Worker);
  await worker.run();
  await waitForValue(
    () => jobs().countDocuments({ name, state: 'failed' }),
    (n) => n === count,
    { what: `${count} dead ${name} jobs` },
  );
  await worker.close(1_000);
}

describe('GET /api/admin/jobs', () => {
  it('state=dead: each dead letter with its attempts, last error, failure time and the application it was for', async () => {
    await suite.services.queue.add(
      'test.fail',
      { applicationId: 'APP-00000000-dead-0001', version: 2 },
      { jobId: 'fail-1', attempts: 2 },
    );
    await suite.services.queue.add('test.fail', { other: true }, { jobId: 'fail-2' });
    await suite.services.queue.add('test.idle', {}, { jobId: 'idle-1', delay: 60_000 });
    await deadLetters('test.fail', 2);

    const reply = await suite.call('GET', '/api/admin/jobs?state=dead');
    expect(reply.status).toBe(200);
    const byId = Object.fromEntries(reply.body.items.map((item: { id: string }) => [item.id, item]));
    expect(Object.keys(byId).sort()).toEqual(['fail-1', 'fail-2']);
    expect(byId['fail-1']).toMatchObject({
      name: 'test.fail',
      state: 'dead',
      attempts: 2,
      attemptsMade: 2,
      applicationId: 'APP-00000000-dead-0001',
      lastError: { name: 'Error', message: 'cannot do fail-1' },
      retries: 0,
      retriedBy: null,
    });
    expect(byId['fail-2']).not.toHaveProperty('applicationId');
    for (const item of reply.body.items) {
      expect(Number.isNaN(Date.parse(item.failedAt))).toBe(false);
      expect(Number.isNaN(Date.parse(item.lastError.at))).toBe(false);
      // Nothing of the stored bookkeeping (lease tokens, results, the data itself) leaks.
      expect(item).not.toHaveProperty('lockToken');
      expect(item).not.toHaveProperty('data');
    }
    // Newest failure first.
    const failedAt = reply.body.items.map((item: { failedAt: string }) => Date.parse(item.failedAt));
    expect(failedAt).toEqual([...failedAt].sort((a, b) => b - a));

    const waiting = await suite.call('GET', '/api/admin/jobs?state=waiting&name=test.idle');
    expect(waiting.body.items).toMatchObject([{ id: 'idle-1', state: 'waiting', failedAt: null, lastError: null }]);
    const limited = await suite.call('GET', '/api/admin/jobs?state=dead&limit=1');
    expect(limited.body.items).toHaveLength(1);
  });

  it('validates state, limit and name; needs queue:stats', async () => {
    for (const query of [
      '',
      'state=failed',
      'state=dead&limit=0',
      'state=dead&limit=501',
      'state=dead&name=',
      'state=dead&x=1',
    ]) {
      const reply = await suite.call('GET', `/api/admin/jobs?${query}`);
      expect(reply.status, query).toBe(400);
      expect(reply.body.error.code).toBe('validation');
    }
    for (const as of ['viewer', 'reviewer', 'approver', 'disburser'] as const) {
      const reply = await suite.call('GET', '/api/admin/jobs?state=dead', { as });
      expect(reply.status, as).toBe(403);
      expect(reply.body.error.code).toBe('forbidden');
    }
    expect((await suite.call('GET', '/api/admin/jobs?state=dead', { headers: { authorization: '' } })).status).toBe(
      401,
    );
  });
});

describe('POST /api/admin/jobs/{id}/retry', () => {
  it('moves a dead letter back to waiting, due now, attempts reset; the worker runs it again', async () => {
    await suite.services.queue.add(
      'test.flaky',
      { applicationId: 'APP-00000000-flaky-01' },
      { jobId: 'flaky-1', attempts: 1 },
    );
    await deadLetters('test.flaky', 1);
    const before = await jobs().findOne({ _id: 'flaky-1' });

    const reply = await suite.call('POST', '/api/admin/jobs/flaky-1/retry');
    expect(reply.status).toBe(200);
    expect(reply.body).toMatchObject({
      id: 'flaky-1',
      state: 'waiting',
      attemptsMade: 0,
      attempts: 1,
      failedAt: null,
      retries: 1,
      retriedBy: suite.adminIds.admin,
      // The last error stays until the next outcome.
      lastError: { message: 'cannot do flaky-1' },
    });
    const stored = await jobs().findOne({ _id: 'flaky-1' });
    expect(stored).toMatchObject({ state: 'waiting', attemptsMade: 0, lockedBy: null, finishedAt: null });
    expect(stored!.lockToken).not.toBe(before!.lockToken);
    expect(stored!.runAt.getTime()).toBeLessThanOrEqual(suite.services.clock.now() + 1_000);

    // Due at once: a worker that now succeeds completes it.
    const worker = new Worker(suite.database.db, 'test.flaky', async () => 'done', { pollMs: 50 });
    workers.push(worker as Worker);
    await worker.run();
    const done = await waitForValue(
      () => jobs().findOne({ _id: 'flaky-1' }),
      (job) => job?.state === 'completed',
      { what: 'the retried job completed' },
    );
    expect(done?.result).toBe('done');
    await worker.close(1_000);
  });

  it('two admins at once (and 10 requests): one re-queues it, the others get 409 with the job as it is', async () => {
    await suite.services.queue.add('test.race', {}, { jobId: 'race-1' });
    await deadLetters('test.race', 1);
    const replies = await Promise.all(
      Array.from({ length: 10 }, () => suite.call('POST', '/api/admin/jobs/race-1/retry')),
    );
    const statuses = replies.map((reply) => reply.status).sort();
    expect(statuses).toEqual([200, ...Array(9).fill(409)]);
    for (const reply of replies.filter((r) => r.status === 409)) {
      expect(reply.body.error.code).toBe('conflict');
      expect(reply.body.current).toMatchObject({ id: 'race-1', state: 'waiting', retries: 1 });
    }
    expect(await jobs().findOne({ _id: 'race-1' })).toMatchObject({ state: 'waiting', retries: 1 });
  });

  it('404 for no such job, 409 for a job that is not dead-lettered; only admins (queue:retry)', async () => {
    const missing = await suite.call('POST', '/api/admin/jobs/no-such-job/retry');
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('not_found');
    await suite.services.queue.add('test.alive', {}, { jobId: 'alive-1', delay: 60_000 });
    const alive = await suite.call('POST', '/api/admin/jobs/alive-1/retry');
    expect(alive.status).toBe(409);
    expect(alive.body.current).toMatchObject({ id: 'alive-1', state: 'waiting', retries: 0 });

    await suite.services.queue.add('test.guarded', {}, { jobId: 'guarded-1' });
    await deadLetters('test.guarded', 1);
    for (const as of ['viewer', 'reviewer', 'approver', 'disburser'] as const) {
      const reply = await suite.call('POST', '/api/admin/jobs/guarded-1/retry', { as });
      expect(reply.status, as).toBe(403);
    }
    expect(await jobs().findOne({ _id: 'guarded-1' })).toMatchObject({ state: 'failed' });
    const tooLong = await suite.call('POST', `/api/admin/jobs/${'x'.repeat(513)}/retry`);
    expect(tooLong.status).toBe(400);
  });
});
