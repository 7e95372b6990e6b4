// Application fixtures over HTTP, for the API suites.
import { expect } from 'vitest';
import { call, type callerFor } from './http.ts';

export const sampleApplication = (n = 0) => ({
  applicantName: `Applicant ${n}`,
  monthlyIncome: 5000,
  loanAmount: 20_000,
  termMonths: 36,
});

export function applicationSteps(call: () => ReturnType<typeof callerFor>) {
  return {
    /** Creates one application as admin; returns its JSON. */
    async createOne(n = 0) {
      const res = await call()('POST', '/api/applications', { body: sampleApplication(n) });
      expect(res.status).toBe(201);
      return res.body as { _id: string; version: number; status: string };
    },
    /**
     * Moves an application along the given statuses with body versions; returns its last version. The
     * approver approves: the admin who created it may not (four eyes).
     */
    async walk(id: string, path: string[]): Promise<number> {
      let version = 1;
      for (const status of path) {
        const as = status === 'approved' ? 'approver' : undefined;
        const res = await call()('PUT', `/api/applications/${id}`, { as, body: { status, version } });
        expect(res.status).toBe(200);
        version = res.body.version;
      }
      return version;
    },
  };
}

/**
 * An approved application: `preparer` creates it and moves it under review, and another admin,
 * `approver`, approves it (four eyes refuses the preparer). Returns its id.
 */
export async function approvedApplication(
  app: Parameters<typeof call>[0],
  by: { preparer: string; approver: string },
  body: { applicantName: string; monthlyIncome: number; loanAmount: number; termMonths: number },
): Promise<string> {
  const created = await call(app, by.preparer, 'POST', '/api/applications', { body });
  expect(created.status).toBe(201);
  const id = created.body._id as string;
  for (const [status, version, token] of [
    ['under_review', 1, by.preparer],
    ['approved', 2, by.approver],
  ] as const) {
    const moved = await call(app, token, 'PUT', `/api/applications/${id}`, { body: { status, version } });
    expect(moved.status).toBe(200);
  }
  return id;
}
