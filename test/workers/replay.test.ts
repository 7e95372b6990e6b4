// The approval worker's replay of lost audit entries and jobs, in-process, with an injected clock: the
// time between a change and the next worker run is whatever the test says, not what the machine does.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../api/log.ts';
import { JOBS_COLLECTION, Queue, queueIndexes } from '../../shared/concurrency/queue/index.ts';
import { ServerClock } from '../../shared/core/clock.ts';
import { loadConfig } from '../../shared/core/config.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { Applications, REPLAY_CHECKPOINTS_COLLECTION } from '../../shared/loans/applications.ts';
import { AUDIT_COLLECTION } from '../../shared/loans/audit.ts';
import { replayChanges } from '../../workers/approval/replay.ts';
import type { WorkerContext } from '../../workers/runtime.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const MINUTE = 60_000;
let database: TestDatabase;
const admin = { id: 'admin-1' };

/** The server's time as every instance here sees it, moving only when the test says so. */
class ManualClock extends ServerClock {
  t: number;
  constructor(t: number) {
    super(database.db);
    this.t = t;
  }
  override now() {
    return this.t;
  }
  override async sync() {
    return 0;
  }
}

function contextOn(clock: ManualClock, env: Record<string, string> = {}): WorkerContext {
  return {
    db: database.db,
    clock,
    queue: new Queue(database.db, { clock }),
    logger: createLogger('silent'),
    config: loadConfig({ MONGO_URL: mongoUrl(), LOG_LEVEL: 'silent', ...env }),
  };
}

const auditOf = (applicationId: string) =>
  database.db.collection(AUDIT_COLLECTION).find({ applicationId }).sort({ version: 1 }).toArray();
const jobsOf = (applicationId: string) =>
  database.db.collection(JOBS_COLLECTION).find({ 'data.applicationId': applicationId }).toArray();

/** Moves a new application to under_review, then loses that change's audit entry and job, as a crash would. */
async function lostChange(applications: Applications) {
  const app = await applications.create(
    { applicantName: 'Ada Lovelace', monthlyIncome: 9000, loanAmount: 5000, termMonths: 12 },
    admin,
  );
  const moved = await applications.update(app._id, { status: 'under_review', fields: {} }, { version: 1 }, admin);
  await database.db.collection(AUDIT_COLLECTION).deleteOne({ _id: `${app._id}:2` as never });
  await database.db.collection(JOBS_COLLECTION).deleteOne({ _id: `application.review:${app._id}:2` as never });
  expect(await auditOf(app._id)).toHaveLength(1);
  return moved;
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  await ensureIndexes(database.db, [queueIndexes]);
});
afterAll(() => database.close());

describe('replay of lost audit entries and jobs', () => {
  it('replays, once, a change made 10 minutes before any worker ran: one audit entry, one job', async () => {
    const local = new ManualClock(Date.now());
    const ctx = contextOn(local);
    const applications = new Applications(database.db, { clock: ctx.clock, queue: ctx.queue });
    const app = await lostChange(applications);

    local.t += 10 * MINUTE; // no worker ran meanwhile (a deploy, an outage)
    await replayChanges(ctx);
    await replayChanges(ctx);
    local.t += 10 * MINUTE;
    await replayChanges(ctx);

    const audit = await auditOf(app._id);
    expect(audit.map((entry) => entry._id)).toEqual([`${app._id}:1`, `${app._id}:2`]);
    expect(audit[1]).toMatchObject({ actor: admin.id, action: 'update', from: 'pending', to: 'under_review' });
    const jobs = await jobsOf(app._id);
    expect(jobs.map((job) => job._id)).toEqual([`application.review:${app._id}:2`]);
  });

  it('replays a change that commits after a run with a stamp older than that run (a slow instance)', async () => {
    // Later than anything the test before stamped (they share the checkpoint).
    const local = new ManualClock(Date.now() + 60 * MINUTE);
    const ctx = contextOn(local);
    const started = local.t;
    await replayChanges(ctx);
    local.t = started + 2 * MINUTE;
    await replayChanges(ctx);

    // An instance stamps its write 30 s before the last run, and the write lands only now.
    local.t = started + 2 * MINUTE - 30_000;
    const applications = new Applications(database.db, { clock: ctx.clock, queue: ctx.queue });
    const app = await lostChange(applications);
    local.t = started + 3 * MINUTE;
    await replayChanges(ctx);

    expect((await auditOf(app._id)).map((entry) => entry._id)).toEqual([`${app._id}:1`, `${app._id}:2`]);
    expect((await jobsOf(app._id)).map((job) => job._id)).toEqual([`application.review:${app._id}:2`]);
  });

  it('moves its checkpoint only past changes it replayed: a run that fails part way is taken up again', async () => {
    const local = new ManualClock(Date.now() + 120 * MINUTE);
    const ctx = contextOn(local);
    const started = local.t;
    const lost = [];
    for (let i = 0; i < 5; i++) {
      local.t = started + i * 1000;
      lost.push(await lostChange(new Applications(database.db, { clock: ctx.clock, queue: ctx.queue })));
    }
    local.t = started + 10 * MINUTE;
    // The queue refuses the second batch's jobs (the database went away mid-run, say).
    const queue = new Queue(database.db, { clock: ctx.clock });
    let calls = 0;
    const addBulk = queue.addBulk.bind(queue);
    queue.addBulk = (async (jobs) => {
      if (++calls === 2) throw new Error('queue unavailable');
      return addBulk(jobs);
    }) as typeof queue.addBulk;
    const failing = new Applications(database.db, { clock: ctx.clock, queue });
    await expect(failing.replayChanges({ marginMs: MINUTE, batchSize: 2 })).rejects.toThrow('queue unavailable');
    const checkpoint = await database.db.collection(REPLAY_CHECKPOINTS_COLLECTION).findOne({});
    // Not past the third change, whose job was not written.
    expect(checkpoint?.at.getTime()).toBeLessThanOrEqual(started + 2000);

    const applications = new Applications(database.db, { clock: ctx.clock, queue: ctx.queue });
    expect((await applications.replayChanges({ marginMs: MINUTE, batchSize: 2 })).checkpoint).toEqual(
      new Date(started + 9 * MINUTE),
    );
    for (const app of lost) {
      expect((await auditOf(app._id)).map((entry) => entry._id)).toEqual([`${app._id}:1`, `${app._id}:2`]);
      expect((await jobsOf(app._id)).map((job) => job._id)).toEqual([`application.review:${app._id}:2`]);
    }
  });
});
