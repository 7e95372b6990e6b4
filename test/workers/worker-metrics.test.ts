// A worker process's GET /metrics, on its probe port as Prometheus scrapes it: every run's outcome by
// job name (completed, retried, dead-lettered), durations, the queue worker's counters, readiness, and the
// same bearer token as the API's /metrics. (The OCR worker's confidence per field is read by the
// Prometheus test, test/ops/prometheus.test.ts, after a real OCR run.)
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freePort } from '../../scripts/mongo/offline-server.ts';
import { Queue } from '../../shared/concurrency/queue/index.ts';
import { ServerClock } from '../../shared/core/clock.ts';
import { Applications } from '../../shared/loans/applications.ts';
import { sampleValue } from '../support/metrics-text.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { type NodeProcess, startNode } from '../support/processes.ts';
import { waitForValue } from '../support/wait.ts';

const TOKEN = 'worker-metrics-token-0123456789';
let database: TestDatabase;
let worker: NodeProcess;
let port: number;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  port = await freePort();
  worker = startNode('workers/approval/main.ts', {
    env: {
      MONGO_URL: mongoUrl(),
      MONGO_DB: database.name,
      HOST: '127.0.0.1',
      WORKER_PROBE_PORT: String(port),
      METRICS_TOKEN: TOKEN,
      LOG_LEVEL: 'silent',
    },
  });
  await waitForValue(
    () =>
      fetch(`http://127.0.0.1:${port}/ready`).then(
        (r) => r.status,
        () => 0,
      ),
    (status) => status === 200,
    { timeoutMs: 30_000, intervalMs: 100, what: 'the approval worker ready', detail: () => worker.output() },
  );
});

afterAll(async () => {
  await worker?.stop(10_000);
  await database?.close();
});

const scrape = async (authorization = `Bearer ${TOKEN}`) => {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { authorization } });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
};

it('asks for the metrics token as the API does', async () => {
  const refused = await scrape('Bearer wrong');
  expect(refused.status).toBe(401);
  const served = await scrape();
  expect(served.status).toBe(200);
  expect(served.type).toMatch(/^text\/plain; version=0\.0\.4/);
});

it('counts job runs by name and outcome, with durations, and exports readiness and the lease counters', async () => {
  const before = (await scrape()).text;
  // Every job name starts at 0, so the first dead letter is an increase Prometheus sees.
  for (const name of ['application.review', 'application.score', 'application.approved']) {
    for (const outcome of ['completed', 'retried', 'dead_lettered', 'stale']) {
      expect(
        sampleValue(before, 'worker_jobs_total', { worker: 'approval', name, outcome }),
        `${name} ${outcome}`,
      ).toBe(0);
    }
  }
  expect(sampleValue(before, 'service_ready', { worker: 'approval' })).toBe(1);
  expect(sampleValue(before, 'worker_lease_losses_total', { worker: 'approval' })).toBe(0);
  expect(sampleValue(before, 'worker_jobs_active', { worker: 'approval' })).toBe(0);
  expect(sampleValue(before, 'process_cpu_seconds_total', { worker: 'approval' })).toBeGreaterThan(0);

  // One that completes: an application sent to review is scored.
  const clock = new ServerClock(database.db);
  await clock.sync();
  const queue = new Queue(database.db, { clock });
  const applications = new Applications(database.db, { clock, queue });
  const app = await applications.create(
    { applicantName: 'Grace Hopper', monthlyIncome: 9000, loanAmount: 5000, termMonths: 12 },
    { id: 'admin' },
  );
  await applications.update(app._id, { status: 'under_review', fields: {} }, { version: 1 }, { id: 'admin' });
  // One that fails twice (it names no application): retried once, then dead-lettered.
  await queue.add('application.score', {}, { attempts: 2, backoff: { type: 'fixed', delay: 0 } });

  const labels = (name: string, outcome: string) => ({ worker: 'approval', name, outcome });
  const after = await waitForValue(
    async () => (await scrape()).text,
    (text) =>
      sampleValue(text, 'worker_jobs_total', labels('application.review', 'completed')) === 1 &&
      sampleValue(text, 'worker_jobs_total', labels('application.score', 'dead_lettered')) === 1,
    { timeoutMs: 20_000, intervalMs: 100, what: 'the runs counted', detail: () => worker.output() },
  );
  expect(sampleValue(after, 'worker_jobs_total', labels('application.score', 'retried'))).toBe(1);
  expect(sampleValue(after, 'worker_jobs_total', labels('application.score', 'completed'))).toBe(0);
  expect(sampleValue(after, 'worker_job_duration_seconds_count', labels('application.review', 'completed'))).toBe(1);
  expect(sampleValue(after, 'worker_job_duration_seconds_count', labels('application.score', 'retried'))).toBe(1);
  expect(
    sampleValue(after, 'worker_job_duration_seconds_bucket', {
      ...labels('application.review', 'completed'),
      le: '+Inf',
    }),
  ).toBe(1);
  expect(sampleValue(after, 'worker_jobs_claimed_total', { worker: 'approval' })).toBe(3);
  expect(sampleValue(after, 'worker_lease_losses_total', { worker: 'approval' })).toBe(0);
});
