// The whole authorisation matrix: every role against every protected operation, through HTTP.
// The expected table is written out here (the specification), not derived from shared/identity/rbac.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { createTestApp } from '../support/app.ts';
import { adminsByRole, call, type Reply } from '../support/http.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const roles: Role[] = ['viewer', 'reviewer', 'approver', 'disburser', 'admin'];
const Y = true;
const N = false;

let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
let tokens: Record<Role, string>;
/** Other admins who prepare, approve and pay the targets, so four eyes never refuses the role under test. */
let setup: Record<Role, string>;
let ids: Record<Role, string>;
let appId: string;

const sample = { applicantName: 'Matrix Applicant', monthlyIncome: 4000, loanAmount: 10_000, termMonths: 24 };

type Status = 'pending' | 'under_review' | 'approved' | 'disbursed';
interface Operation {
  name: string;
  /** [viewer, reviewer, approver, disburser, admin] */
  allowed: boolean[];
  /** The state the application must be in for the operation to succeed; each call gets a fresh one. */
  needs?: Status;
  run(token: string, id: string): ReturnType<typeof call>;
  /** What an allowed role gets: the operation's real success, not merely "not refused". */
  succeeded(reply: Reply, id: string): void | Promise<void>;
}

const walks: Record<Status, string[]> = {
  pending: [],
  under_review: ['under_review'],
  approved: ['under_review', 'approved'],
  disbursed: ['under_review', 'approved'],
};

/** A new application in the given state, prepared, approved and paid by the setup admins. */
async function applicationIn(status: Status): Promise<string> {
  const created = await call(app, setup.admin, 'POST', '/api/applications', { body: sample });
  expect(created.status).toBe(201);
  const id = created.body._id as string;
  for (const next of walks[status]) {
    const res = await call(app, next === 'approved' ? setup.approver : setup.admin, 'PUT', `/api/applications/${id}`, {
      body: { status: next },
      headers: { 'if-match': '*' },
    });
    expect(res.status).toBe(200);
  }
  if (status === 'disbursed') {
    const res = await call(app, setup.disburser, 'POST', `/api/applications/${id}/disburse`, {
      headers: { 'idempotency-key': `rbac-${crypto.randomUUID()}` },
    });
    expect(res.status).toBe(200);
  }
  return id;
}

const stored = (id: string) =>
  services.db.collection<{ _id: string; status: string; loanAmount: number }>('applications').findOne({ _id: id });

const moveTo = (status: 'under_review' | 'approved' | 'rejected', from: Status, allowed: boolean[]): Operation => ({
  name: `move to ${status}`,
  allowed,
  needs: from,
  run: (t, id) => call(app, t, 'PUT', `/api/applications/${id}`, { body: { status }, headers: { 'if-match': '*' } }),
  async succeeded(reply, id) {
    expect(reply.status).toBe(200);
    expect(reply.body).toMatchObject({ _id: id, status, version: walks[from].length + 2 });
    expect((await stored(id))?.status).toBe(status);
  },
});

const matrix: Operation[] = [
  {
    name: 'list applications',
    allowed: [Y, Y, Y, Y, Y],
    run: (t) => call(app, t, 'GET', '/api/applications'),
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body.items.map((a: { _id: string }) => a._id)).toContain(appId);
    },
  },
  {
    name: 'view an application',
    allowed: [Y, Y, Y, Y, Y],
    run: (t) => call(app, t, 'GET', `/api/applications/${appId}`),
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({ _id: appId, ...sample });
    },
  },
  {
    name: 'create an application',
    allowed: [N, Y, N, N, Y],
    run: (t) => call(app, t, 'POST', '/api/applications', { body: sample }),
    async succeeded(reply) {
      expect(reply.status).toBe(201);
      expect(reply.body).toMatchObject({ ...sample, status: 'pending', version: 1 });
      expect(await stored(reply.body._id)).toMatchObject({ status: 'pending' });
    },
  },
  {
    name: 'edit applicant fields',
    allowed: [N, Y, N, N, Y],
    needs: 'pending',
    run: (t, id) =>
      call(app, t, 'PUT', `/api/applications/${id}`, { body: { loanAmount: 9000 }, headers: { 'if-match': '*' } }),
    async succeeded(reply, id) {
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({ _id: id, loanAmount: 9000, version: 2 });
      expect((await stored(id))?.loanAmount).toBe(9000);
    },
  },
  moveTo('under_review', 'pending', [N, Y, N, N, Y]),
  moveTo('approved', 'under_review', [N, N, Y, N, Y]),
  moveTo('rejected', 'under_review', [N, N, Y, N, Y]),
  {
    name: 'disburse',
    allowed: [N, N, N, Y, Y],
    needs: 'approved',
    run: (t, id) =>
      call(app, t, 'POST', `/api/applications/${id}/disburse`, {
        headers: { 'idempotency-key': `rbac-${crypto.randomUUID()}` },
      }),
    async succeeded(reply, id) {
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({ applicationId: id, amount: sample.loanAmount, status: 'disbursed' });
      expect((await stored(id))?.status).toBe('disbursed');
    },
  },
  {
    name: 'read a loan ledger',
    allowed: [N, N, N, Y, Y],
    needs: 'disbursed',
    run: (t, id) => call(app, t, 'GET', `/api/applications/${id}/ledger`),
    succeeded(reply, id) {
      expect(reply.status).toBe(200);
      expect(reply.body.applicationId).toBe(id);
      expect(reply.body.entries).toHaveLength(1);
    },
  },
  {
    name: 'verify the ledger',
    allowed: [N, N, N, N, Y],
    run: (t) => call(app, t, 'GET', '/api/ledger/verify'),
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({ ok: true });
    },
  },
  {
    name: 'batch-approve',
    allowed: [N, N, Y, N, Y],
    needs: 'under_review',
    run: (t, id) =>
      call(app, t, 'POST', '/api/applications/batch-update', { body: { applicationIds: [id], status: 'approved' } }),
    async succeeded(reply, id) {
      expect(reply.status).toBe(200);
      expect(reply.body.results).toEqual([expect.objectContaining({ id, outcome: 'updated' })]);
      expect((await stored(id))?.status).toBe('approved');
    },
  },
  {
    name: 'see queue stats',
    allowed: [N, N, N, N, Y],
    run: (t) => call(app, t, 'GET', '/api/admin/queue-stats'),
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({ waiting: expect.any(Number), byName: expect.any(Object) });
    },
  },
  {
    name: 'count applications by status',
    allowed: [Y, Y, Y, Y, Y],
    run: (t) => call(app, t, 'GET', '/api/applications/counts'),
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body.total).toBeGreaterThan(0);
    },
  },
  {
    name: "read an application's audit trail",
    allowed: [Y, Y, Y, Y, Y],
    run: (t) => call(app, t, 'GET', `/api/applications/${appId}/audit`),
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body.items[0]).toMatchObject({ version: 1, action: 'create' });
    },
  },
  {
    name: 'say one is editing an application',
    allowed: [N, Y, Y, Y, Y],
    run: (t) => call(app, t, 'PUT', `/api/applications/${appId}/presence`, { body: { editing: true } }),
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({ applicationId: appId });
    },
  },
  {
    name: 'see who is editing',
    allowed: [Y, Y, Y, Y, Y],
    run: (t) => call(app, t, 'GET', '/api/presence'),
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body.editing).toEqual(expect.any(Array));
    },
  },
  {
    name: 'list dead-lettered jobs',
    allowed: [N, N, N, N, Y],
    run: (t) => call(app, t, 'GET', '/api/admin/jobs?state=dead'),
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body.items).toEqual(expect.any(Array));
    },
  },
  {
    name: 'retry a dead-lettered job',
    allowed: [N, N, N, N, Y],
    async run(t) {
      // A fresh dead letter for each call, failed as a worker leaves one.
      const job = await services.queue.add('rbac.dead', {}, { jobId: `rbac-${crypto.randomUUID()}` });
      const at = new Date();
      await services.queue.collection.updateOne(
        { _id: job.id },
        { $set: { state: 'failed', finishedAt: at, lastError: { name: 'Error', message: 'gave up', at } } },
      );
      return call(app, t, 'POST', `/api/admin/jobs/${job.id}/retry`);
    },
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({ state: 'waiting', retries: 1 });
    },
  },
  {
    name: 'list admins',
    allowed: [N, N, N, N, Y],
    run: (t) => call(app, t, 'GET', '/api/admins'),
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body.items.map((a: { id: string }) => a.id)).toEqual(expect.arrayContaining(Object.values(ids)));
    },
  },
  {
    name: 'create an admin',
    allowed: [N, N, N, N, Y],
    run: (t) =>
      call(app, t, 'POST', '/api/admins', {
        body: {
          email: `new-${crypto.randomUUID().slice(0, 8)}@example.com`,
          password: 'another long password',
          roles: ['viewer'],
        },
      }),
    async succeeded(reply) {
      expect(reply.status).toBe(201);
      expect(reply.body).toMatchObject({ roles: ['viewer'], disabled: false });
      expect(await services.admins.get(reply.body.id)).toMatchObject({ email: reply.body.email });
    },
  },
  {
    name: 'change an admin',
    allowed: [N, N, N, N, Y],
    run: (t) => call(app, t, 'PATCH', `/api/admins/${ids.viewer}`, { body: { disabled: false } }),
    succeeded(reply) {
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({ id: ids.viewer, roles: ['viewer'], disabled: false });
    },
  },
];

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app, services } = await createTestApp(database.db, { RATE_LIMIT_PER_MINUTE: '100000' }));
  ({ tokens, ids } = await adminsByRole(app, services, roles));
  ({ tokens: setup } = await adminsByRole(app, services, ['admin', 'approver', 'disburser'], 'setup.example.com'));
  appId = await applicationIn('pending');
});
afterAll(() => database.close());

describe('authorisation matrix', () => {
  for (const operation of matrix) {
    const { name, allowed, needs, run } = operation;
    it(`${name}: ${roles.filter((_, i) => allowed[i]).join(', ')} only`, async () => {
      for (const [i, role] of roles.entries()) {
        // A fresh target per role: an earlier role's success must not turn a later one's into a 409.
        const id = needs ? await applicationIn(needs) : appId;
        const before = needs ? await stored(id) : null;
        const reply = await run(tokens[role], id);
        if (allowed[i]) {
          try {
            await operation.succeeded(reply, id);
          } catch (error) {
            throw new Error(`${role} should be allowed to ${name}: ${reply.status} ${JSON.stringify(reply.body)}`, {
              cause: error,
            });
          }
        } else {
          expect(reply.status, `${role} must not ${name}`).toBe(403);
          expect(reply.body.error.code).toBe('forbidden');
          if (needs) expect(await stored(id), `${role}'s refused ${name} wrote nothing`).toEqual(before);
        }
      }
    });
  }

  it('every protected operation refuses a request without a token with 401', async () => {
    for (const { needs, run } of matrix) {
      const reply = await run('', needs ? await applicationIn(needs) : appId);
      expect(reply.status).toBe(401);
      expect(reply.body.error.code).toEqual(expect.any(String));
    }
  });

  it('a refused request wrote nothing', async () => {
    const before = await services.db.collection('applications').countDocuments();
    expect((await call(app, tokens.viewer, 'POST', '/api/applications', { body: sample })).status).toBe(403);
    expect(await services.db.collection('applications').countDocuments()).toBe(before);
  });
});
