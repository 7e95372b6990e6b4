// Debian's Prometheus, started by scripts/prometheus.ts, scrapes a real API process and both worker
// processes (with METRICS_TOKEN, as in production) while a small pipeline runs through HTTP: one loan
// from upload through OCR, automatic approval and disbursement to a ledger verification. The test then asks
// Prometheus (PromQL over its HTTP API) for the series the dashboards need, checks the alert rules evaluate
// against them, and runs every query of the Grafana dashboards (ops/grafana/dashboards) against it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiInstance, startApiInstances } from '../../scripts/api-instances.ts';
import { freePort } from '../../scripts/mongo/offline-server.ts';
import { findPrometheus, type RunningPrometheus, startPrometheus } from '../../scripts/prometheus.ts';
import { formPng, sampleApplication, sampleForm } from '../fixtures/documents.ts';
import { apiProcessEnv } from '../support/app.ts';
import { dashboardQueries } from '../support/dashboards.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { type NodeProcess, startNode } from '../support/processes.ts';
import { remoteCaller } from '../support/remote.ts';
import { waitForValue } from '../support/wait.ts';

const TOKEN = 'prometheus-test-metrics-token-0123';
const noPrometheus = !findPrometheus();

let database: TestDatabase;
let apiInstance: ApiInstance | undefined;
let prometheus: RunningPrometheus | undefined;
const workers: NodeProcess[] = [];
const output = () => [apiInstance?.output() ?? '', ...workers.map((w) => w.output())].join('\n');

/** Starts a worker process; resolves with its probe address and a promise of its readiness. */
async function startWorker(file: string, env: Record<string, string> = {}) {
  const port = await freePort();
  const worker = startNode(file, {
    env: {
      MONGO_URL: mongoUrl(),
      MONGO_DB: database.name,
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      WORKER_PROBE_PORT: String(port),
      METRICS_TOKEN: TOKEN,
      FOUR_EYES: 'false',
      ...env,
    },
  });
  workers.push(worker);
  const ready = waitForValue(
    () =>
      fetch(`http://127.0.0.1:${port}/ready`).then(
        (r) => r.status,
        () => 0,
      ),
    (status) => status === 200,
    { timeoutMs: 60_000, intervalMs: 100, what: `${file} ready`, detail: output },
  );
  return { address: `127.0.0.1:${port}`, ready };
}

/** Polls a PromQL query until it returns at least one series (and `accept` agrees). */
const promUntil = (promql: string, accept: (values: number[]) => boolean = () => true) =>
  waitForValue(
    () => prometheus!.query(promql),
    (result) => result.length > 0 && accept(result.map((s) => Number(s.value[1]))),
    { timeoutMs: 30_000, intervalMs: 250, what: `Prometheus answering ${promql}`, detail: output },
  );

/** One loan through the whole pipeline, over HTTP, as in test/e2e/pipeline.test.ts (four eyes off). */
async function smallPipeline(origin: string) {
  const api = remoteCaller(() => origin);
  const login = await api(null, 'POST', '/api/auth/login', {
    email: 'ops@example.com',
    password: 'ops admin password',
  });
  expect(login.status).toBe(200);
  const token: string = login.body.accessToken;
  const created = await api(token, 'POST', '/api/applications', sampleApplication(9_500, 36));
  expect(created.status).toBe(201);
  const id: string = created.body._id;
  const form = new FormData();
  const png = formPng({ ...sampleForm, loanAmount: '$9,500' });
  form.append('file', new Blob([Buffer.from(png)], { type: 'image/png' }), 'loan-form.png');
  expect((await api(token, 'POST', `/api/applications/${id}/documents`, form)).status).toBe(202);
  expect(
    (await api(token, 'PUT', `/api/applications/${id}`, { status: 'under_review' }, { 'if-match': '*' })).status,
  ).toBe(200);
  await waitForValue(
    async () => (await api(token, 'GET', `/api/applications/${id}`)).body,
    (app) => app?.status === 'approved',
    { timeoutMs: 60_000, intervalMs: 200, what: 'OCR and the approval worker approving it', detail: output },
  );
  const paid = await api(token, 'POST', `/api/applications/${id}/disburse`, undefined, {
    'idempotency-key': `ops-${crypto.randomUUID()}`,
  });
  expect(paid.status).toBe(200);
  expect((await api(token, 'GET', '/api/ledger/verify')).body).toMatchObject({ ok: true, entries: 1 });
  expect((await api(token, 'GET', '/api/applications/nope-not-there')).status).toBe(400);
}

describe.skipIf(noPrometheus)(
  noPrometheus ? 'Prometheus (skipped: prometheus is not installed)' : 'Prometheus scraping the API and the workers',
  () => {
    beforeAll(async () => {
      database = await openTestDatabase(import.meta.filename);
      const apiStart = startApiInstances(
        1,
        apiProcessEnv(database.name, {
          ADMIN_EMAIL: 'ops@example.com',
          ADMIN_PASSWORD: 'ops admin password',
          METRICS_TOKEN: TOKEN,
          FOUR_EYES: 'false',
        }),
      );
      // The default 30 s lease: a loss here would be a fault, not a busy machine's slow heartbeat.
      const ocr = await startWorker('workers/ocr/main.ts', {});
      const approval = await startWorker('workers/approval/main.ts', {
        APPROVAL_AUTO_DECIDE: 'true',
        APPROVAL_AUTO_APPROVE_MAX_AMOUNT: '10000',
      });
      [apiInstance] = await apiStart;
      // Started while the workers still load: its first scrapes of them may fail, later ones do not.
      prometheus = await startPrometheus({
        targets: { api: [apiInstance!.address], ocr: [ocr.address], approval: [approval.address] },
        bearerToken: TOKEN,
      });
      await Promise.all([ocr.ready, approval.ready]);
      // Prometheus applies its targets a few seconds after it starts: the pipeline runs once all are scraped.
      await promUntil('count(up == 1) == 3');
      await smallPipeline(apiInstance!.origin);
      // Scraped after the pipeline: the last job (the repayment plan) and the verification are in.
      await promUntil('worker_jobs_total{job="approval",name="application.approved",outcome="completed"} > 0');
      await promUntil('ledger_verification_ok{job="api"} == 1');
      // A rate needs two samples of a series: the disbursement's, born last, has them by now.
      await promUntil('count_over_time(http_requests_total{route="/api/applications/:id/disburse"}[1m]) >= 2');
    }, 120_000);

    afterAll(async () => {
      await prometheus?.stop();
      await apiInstance?.stop();
      await Promise.all(workers.map((worker) => worker.stop(10_000)));
      await database?.close();
    });

    const query = (promql: string) => prometheus!.query(promql);
    const byLabel = async (promql: string, label: string) =>
      Object.fromEntries((await query(promql)).map((s) => [s.metric[label], Number(s.value[1])]));

    it('scrapes all three, each up and ready', async () => {
      expect(await byLabel('up', 'job')).toEqual({ api: 1, ocr: 1, approval: 1 });
      expect(await byLabel('service_ready', 'job')).toEqual({ api: 1, ocr: 1, approval: 1 });
    });

    it('holds requests by route and status, and their latency', async () => {
      // The counts: a series born in the last scrape has one sample, so a rate shows it only from the next.
      const counts = await query('sum by (route, status) (http_requests_total{job="api"})');
      const seen = counts.map((s) => `${s.metric.status} ${s.metric.route}`);
      expect(seen).toEqual(
        expect.arrayContaining([
          '200 /api/auth/login',
          '201 /api/applications',
          '202 /api/applications/:id/documents',
          '200 /api/applications/:id/disburse',
          '200 /api/ledger/verify',
          '400 /api/applications/:id',
        ]),
      );
      const p95 = await query(
        'histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{job="api"}[5m])))',
      );
      expect(p95.length).toBeGreaterThan(3);
    });

    it('holds job counts by name and outcome from both workers, with durations', async () => {
      const jobs = await query('sum by (job, name, outcome) (worker_jobs_total) > 0');
      const seen = Object.fromEntries(
        jobs.map((s) => [`${s.metric.job} ${s.metric.name} ${s.metric.outcome}`, Number(s.value[1])]),
      );
      expect(seen).toMatchObject({
        'ocr document.ocr completed': 1,
        'approval application.score completed': 1,
        'approval application.approved completed': 1,
      });
      // Every outcome series exists from the start (0), so the dead-letter rule sees the first one.
      expect((await query('worker_jobs_total{outcome="dead_lettered"}')).length).toBe(4);
      const durations = await query('sum by (name) (worker_job_duration_seconds_count{outcome="completed"})');
      expect(durations.map((s) => s.metric.name)).toEqual(
        expect.arrayContaining(['document.ocr', 'application.score']),
      );
      expect(await byLabel('sum by (job) (worker_lease_losses_total)', 'job')).toEqual({ ocr: 0, approval: 0 });
    });

    it('holds the OCR confidence of each field read', async () => {
      const counts = await byLabel('sum by (field) (ocr_field_confidence_count)', 'field');
      expect(counts).toEqual({ applicantName: 1, monthlyIncome: 1, loanAmount: 1, identityNumber: 1 });
      const median = await query('histogram_quantile(0.5, sum by (le, field) (ocr_field_confidence_bucket))');
      for (const sample of median) expect(Number(sample.value[1]), sample.metric.field).toBeGreaterThan(0.5);
    });

    it('holds the queue, the ledger and the revocation cache as the API sees them', async () => {
      expect(await byLabel('queue_jobs{job="api"}', 'state')).toMatchObject({ waiting: 0, failed: 0 });
      expect((await query('queue_oldest_waiting_age_seconds{job="api"}')).length).toBe(1);
      expect(await byLabel('ledger_verifications_total', 'result')).toEqual({ ok: 1, failed: 0 });
      expect(Number((await query('revocation_refreshes_total'))[0]!.value[1])).toBeGreaterThan(0);
      expect(Number((await query('revocation_refresh_failures_total'))[0]!.value[1])).toBe(0);
      expect(Number((await query('http_requests_shed_total'))[0]!.value[1])).toBe(0);
    });

    it('evaluates every alert rule on these series without error, and none fires but Watchdog', async () => {
      const res = await fetch(`${prometheus!.url}/api/v1/rules?type=alert`);
      const groups = (await res.json()).data.groups as {
        rules: { name: string; health: string; state: string; lastError?: string }[];
      }[];
      const rules = groups.flatMap((g) => g.rules);
      expect(rules.length).toBeGreaterThanOrEqual(9);
      for (const rule of rules) {
        expect(rule.health, `${rule.name}: ${rule.lastError}`).toBe('ok');
        // Watchdog always fires: the heartbeat that proves the alerting path works.
        expect(rule.state, rule.name).toBe(rule.name === 'Watchdog' ? 'firing' : 'inactive');
      }
    });

    it('answers every dashboard query with at least one series', async () => {
      const queries = dashboardQueries();
      expect(new Set(queries.map((q) => q.dashboard))).toEqual(
        new Set(['api.json', 'queue-workers.json', 'money.json']),
      );
      expect(queries.length).toBeGreaterThan(30);
      const empty: string[] = [];
      // The relay's panels need a relay (and Kafka): test/e2e/kafka-relay.test.ts runs them against one.
      const relayQueries = queries.filter((q) => q.expr.includes('relay_'));
      expect(relayQueries.length).toBeGreaterThan(0);
      for (const { dashboard, panel, expr } of queries.filter((q) => !relayQueries.includes(q))) {
        expect(expr, `${dashboard} / ${panel}: a variable Grafana would fill in`).not.toContain('$');
        // Throws with Prometheus's message for an invalid query.
        const result = await query(expr).catch((error: Error) => {
          throw new Error(`${dashboard} / ${panel}: ${error.message}`);
        });
        if (result.length === 0) empty.push(`${dashboard} / ${panel}: ${expr}`);
      }
      expect(empty).toEqual([]);
    });
  },
);
