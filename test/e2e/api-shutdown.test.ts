// The Node entry drains on SIGTERM: it stops accepting connections, finishes the request in flight,
// closes the pool and exits 0.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startApiInstances } from '../../scripts/api-instances.ts';
import { seedApplications } from '../../scripts/seed.ts';
import { apiProcessEnv } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
});
afterAll(() => database.close());

it('finishes a request in flight on SIGTERM, refuses new connections, and exits 0', async () => {
  await seedApplications(database.db, 400);
  const pending = await database.db
    .collection<{ _id: string }>('applications')
    .find({ status: 'pending' }, { projection: { _id: 1 } })
    .toArray();
  const [api] = await startApiInstances(
    1,
    apiProcessEnv(database.name, { ADMIN_EMAIL: 'first@example.com', ADMIN_PASSWORD: 'first admin password' }),
  );
  const { origin, process: child } = api!;
  const exited = api!.exited.then(() => child.exitCode);
  const login = await fetch(`${origin}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'first@example.com', password: 'first admin password' }),
  });
  const { accessToken } = await login.json();

  // A batch of every pending application takes a while here; SIGTERM arrives while it runs.
  const inFlight = fetch(`${origin}/api/applications/batch-update`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${accessToken}`, connection: 'close' },
    body: JSON.stringify({ applicationIds: pending.map((d) => d._id), status: 'under_review' }),
  });
  await new Promise((r) => setTimeout(r, 100));
  child.kill('SIGTERM');

  const res = await inFlight;
  expect(res.status).toBe(200);
  const body = await res.json();
  expect(body.results.filter((r: { outcome: string }) => r.outcome === 'updated')).toHaveLength(pending.length);
  expect(await exited).toBe(0);
  await expect(fetch(`${origin}/health`)).rejects.toThrow();
  expect(await database.db.collection('applications').countDocuments({ status: 'under_review', version: 2 })).toBe(
    pending.length,
  );
}, 90_000);
