// The whole authorisation matrix: every role against every protected operation, through HTTP.
// The expected table is written out here (the specification), not derived from shared/rbac.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/sessions.ts';
import { createTestApp } from '../support/app.ts';
import { adminsByRole, call } from '../support/http.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const roles: Role[] = ['viewer', 'reviewer', 'approver', 'disburser', 'admin'];
const Y = true;
const N = false;

let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
let tokens: Record<Role, string>;
let ids: Record<Role, string>;
let appId: string;

const sample = { applicantName: 'Matrix Applicant', monthlyIncome: 4000, loanAmount: 10_000, termMonths: 24 };

// operation -> [viewer, reviewer, approver, disburser, admin]
const matrix: Array<[string, boolean[], (token: string) => ReturnType<typeof call>]> = [
  ['list applications', [Y, Y, Y, Y, Y], (t) => call(app, t, 'GET', '/api/applications')],
  ['view an application', [Y, Y, Y, Y, Y], (t) => call(app, t, 'GET', `/api/applications/${appId}`)],
  ['create an application', [N, Y, N, N, Y], (t) => call(app, t, 'POST', '/api/applications', { body: sample })],
  [
    'edit applicant fields',
    [N, Y, N, N, Y],
    (t) =>
      call(app, t, 'PUT', `/api/applications/${appId}`, { body: { loanAmount: 9000 }, headers: { 'if-match': '*' } }),
  ],
  ...(['under_review', 'approved', 'rejected'] as const).map(
    (status, i): [string, boolean[], (token: string) => ReturnType<typeof call>] => [
      `move to ${status}`,
      [
        [N, Y, N, N, Y],
        [N, N, Y, N, Y],
        [N, N, Y, N, Y],
      ][i]!,
      (t) => call(app, t, 'PUT', `/api/applications/${appId}`, { body: { status }, headers: { 'if-match': '*' } }),
    ],
  ),
  [
    'disburse',
    [N, N, N, Y, Y],
    (t) =>
      call(app, t, 'POST', `/api/applications/${appId}/disburse`, {
        headers: { 'idempotency-key': `rbac-${crypto.randomUUID()}` },
      }),
  ],
  ['read a loan ledger', [N, N, N, Y, Y], (t) => call(app, t, 'GET', `/api/applications/${appId}/ledger`)],
  ['verify the ledger', [N, N, N, N, Y], (t) => call(app, t, 'GET', '/api/ledger/verify')],
  [
    'batch-approve',
    [N, N, Y, N, Y],
    (t) =>
      call(app, t, 'POST', '/api/applications/batch-update', { body: { applicationIds: [appId], status: 'approved' } }),
  ],
  ['see queue stats', [N, N, N, N, Y], (t) => call(app, t, 'GET', '/api/admin/queue-stats')],
  ['list admins', [N, N, N, N, Y], (t) => call(app, t, 'GET', '/api/admins')],
  [
    'create an admin',
    [N, N, N, N, Y],
    (t) =>
      call(app, t, 'POST', '/api/admins', {
        body: {
          email: `new-${crypto.randomUUID().slice(0, 8)}@example.com`,
          password: 'another long password',
          roles: ['viewer'],
        },
      }),
  ],
  [
    'change an admin',
    [N, N, N, N, Y],
    (t) => call(app, t, 'PATCH', `/api/admins/${ids.viewer}`, { body: { disabled: false } }),
  ],
];

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app, services } = await createTestApp(database.db, { RATE_LIMIT_PER_MINUTE: '100000' }));
  ({ tokens, ids } = await adminsByRole(app, services, roles));
  const created = await call(app, tokens.admin, 'POST', '/api/applications', { body: sample });
  appId = created.body._id;
});
afterAll(() => database.close());

describe('authorisation matrix', () => {
  for (const [operation, allowed, run] of matrix) {
    it(`${operation}: ${roles.filter((_, i) => allowed[i]).join(', ')} only`, async () => {
      for (const [i, role] of roles.entries()) {
        const reply = await run(tokens[role]);
        // A 403 with another code is a rule about this application (four eyes), not about the role.
        if (allowed[i]) {
          expect(reply.status, `${role} should be allowed to ${operation}`).not.toBe(401);
          expect(reply.body?.error?.code, `${role} should be allowed to ${operation}`).not.toBe('forbidden');
        } else {
          expect(reply.status, `${role} must not ${operation}`).toBe(403);
          expect(reply.body.error.code).toBe('forbidden');
        }
      }
    });
  }

  it('every protected operation refuses a request without a token with 401', async () => {
    for (const [, , run] of matrix) expect((await run('')).status).toBe(401);
  });

  it('a refused request wrote nothing', async () => {
    const before = await services.db.collection('applications').countDocuments();
    expect((await call(app, tokens.viewer, 'POST', '/api/applications', { body: sample })).status).toBe(403);
    expect(await services.db.collection('applications').countDocuments()).toBe(before);
  });
});
