// One OpenTelemetry trace from the upload to the payment, through HTTP and real processes: the API, the OCR
// worker and the approval worker export to an OTLP/HTTP receiver this test starts, and the payment goes
// through the provider simulator. The upload carries the test's own `traceparent`; the spans received must
// form one trace: the upload request -> enqueue document.ocr -> the OCR run -> enqueue application.score ->
// the approval run (which approves) -> the disbursement (continuing the approval's trace, linked both ways
// with the disbursing request) -> the provider call, whose traceparent the provider received; MongoDB
// commands sit under the spans that ran them; the log lines of the request and the runs carry the trace id.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ApiInstance, startApiInstances } from '../../scripts/api-instances.ts';
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from '../../scripts/otlp-receiver.ts';
import { type PaymentProviderSim, startPaymentProviderSim } from '../../scripts/payment-provider-sim.ts';
import { formPng, sampleApplication, sampleForm } from '../fixtures/documents.ts';
import { apiProcessEnv } from '../support/app.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { type NodeProcess, startNode } from '../support/processes.ts';
import { remoteCaller } from '../support/remote.ts';
import { waitForValue } from '../support/wait.ts';

const PROVIDER_KEY = 'trace-provider-key-0123456789';
const PASSWORD = 'a long tracing password';
const SERVER = 2;
const CLIENT = 3;
const PRODUCER = 4;
const CONSUMER = 5;

let database: TestDatabase;
let receiver: OtlpReceiver;
let sim: PaymentProviderSim;
let apiInstance: ApiInstance | undefined;
const workers: NodeProcess[] = [];
const output = () => [apiInstance?.output() ?? '', ...workers.map((worker) => worker.output())].join('\n');
const api = remoteCaller(() => apiInstance!.origin);

/** Spans export in batches every 200 ms (OTEL_BSP_SCHEDULE_DELAY), so each process's arrive soon after they end. */
const tracing = (service: string) => ({
  OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
  OTEL_SERVICE_NAME: service,
  OTEL_BSP_SCHEDULE_DELAY: '200',
});

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  receiver = await startOtlpReceiver();
  sim = await startPaymentProviderSim({ key: PROVIDER_KEY });
  const [instance] = await startApiInstances(
    1,
    apiProcessEnv(database.name, {
      ADMIN_EMAIL: 'boss@example.com',
      ADMIN_PASSWORD: 'tracing admin password',
      LOG_LEVEL: 'info',
      PAYMENT_PROVIDER_URL: sim.url,
      PAYMENT_PROVIDER_KEY: PROVIDER_KEY,
      ...tracing('trace-api'),
    }),
  );
  apiInstance = instance;
  const env = { MONGO_URL: mongoUrl(), MONGO_DB: database.name, HOST: '127.0.0.1', LOG_LEVEL: 'info' };
  workers.push(
    startNode('workers/ocr/main.ts', { env: { ...env, ...tracing('trace-ocr') } }),
    startNode('workers/approval/main.ts', {
      env: {
        ...env,
        APPROVAL_AUTO_DECIDE: 'true',
        APPROVAL_AUTO_APPROVE_MAX_AMOUNT: '10000',
        ...tracing('trace-approval'),
      },
    }),
  );
}, 120_000);

afterAll(async () => {
  await apiInstance?.stop();
  await Promise.all(workers.map((worker) => worker.stop()));
  await sim?.close();
  await receiver?.close();
  await database?.close();
});

const until = <T>(what: string, probe: () => Promise<T | undefined | null | false> | T | undefined | null | false) =>
  waitForValue(async () => (await probe()) || undefined, Boolean, {
    timeoutMs: 90_000,
    intervalMs: 200,
    what,
    detail: output,
  }) as Promise<T>;

async function login(email: string, password = PASSWORD): Promise<string> {
  const res = await api(null, 'POST', '/api/auth/login', { email, password });
  expect(res.status).toBe(200);
  return res.body.accessToken;
}

async function staff(): Promise<{ reviewer: string; disburser: string }> {
  const boss = await login('boss@example.com', 'tracing admin password');
  const tokens: Record<string, string> = {};
  for (const role of ['reviewer', 'disburser']) {
    const email = `${role}-${crypto.randomUUID().slice(0, 8)}@example.com`;
    expect((await api(boss, 'POST', '/api/admins', { email, password: PASSWORD, roles: [role] })).status).toBe(201);
    tokens[role] = await login(email);
  }
  return tokens as { reviewer: string; disburser: string };
}

const hex = (bytes: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, '0')).join('');

/** The one span matching, with a message naming what was received when there is none or more. */
function one(spans: ReceivedSpan[], what: string, match: (span: ReceivedSpan) => boolean): ReceivedSpan {
  const found = spans.filter(match);
  const names = spans.map((s) => `${s.service}:${s.name}`).join(', ');
  expect(found.length, `${what} among [${names}]`).toBe(1);
  return found[0]!;
}

it('one trace from the upload through OCR and approval to the payment, with parent-child spans and linked logs', async () => {
  const t = await staff();
  const created = await api(t.reviewer, 'POST', '/api/applications', sampleApplication(9_500, 36));
  expect(created.status).toBe(201);
  const id: string = created.body._id;
  // Under review first, and scored once without evidence (no decision without OCR): the approval that
  // follows is then the one the upload's OCR leads to.
  expect(
    (await api(t.reviewer, 'PUT', `/api/applications/${id}`, { status: 'under_review' }, { 'if-match': '*' })).status,
  ).toBe(200);
  await until(
    'the first score, without OCR',
    async () => (await api(t.reviewer, 'GET', `/api/applications/${id}`)).body.recommendation,
  );

  // The caller's own trace context: the API continues it.
  const traceId = hex(16);
  const callerSpanId = hex(8);
  const form = new FormData();
  form.append(
    'file',
    new Blob([Buffer.from(formPng({ ...sampleForm, loanAmount: '$9,500' }))], { type: 'image/png' }),
    'form.png',
  );
  const uploaded = await api(t.reviewer, 'POST', `/api/applications/${id}/documents`, form, {
    traceparent: `00-${traceId}-${callerSpanId}-01`,
  });
  expect(uploaded.status).toBe(202);
  const approved = await until('the approval worker approving it', async () => {
    const app = (await api(t.reviewer, 'GET', `/api/applications/${id}`)).body;
    return app.status === 'approved' ? app : null;
  });
  expect(approved.approvedBy).toBe('approval-worker');
  expect(approved.approvalTrace, 'the stored trace context is not in answers').toBeUndefined();

  // Another admin disburses (four eyes: the reviewer uploaded, so may not).
  const paid = await api(t.disburser, 'POST', `/api/applications/${id}/disburse`, undefined, {
    'idempotency-key': `trace-${crypto.randomUUID()}`,
  });
  expect(paid.status, JSON.stringify(paid.body)).toBe(200);

  // ---- The spans -----------------------------------------------------------------------------------
  const disburseRequestOf = (spans: ReceivedSpan[]) =>
    spans.find((s) => s.kind === SERVER && s.name === 'POST /api/applications/:id/disburse');
  // A span is exported when it ends, so a child (a command) can arrive a batch before its parent (a run
  // still going, like the repayment plan's job the approval enqueued): wait until no received span of the
  // trace misses its parent.
  const hangsFromTrace = (trace: ReceivedSpan[]) => {
    const ids = new Set(trace.map((s) => s.spanId));
    return (span: ReceivedSpan) => span.parentSpanId === callerSpanId || ids.has(span.parentSpanId);
  };
  const spans = await until('every span of the pipeline at the receiver, each with its parent', () => {
    const all = receiver.spans();
    const trace = all.filter((s) => s.traceId === traceId);
    const done = ['run application.score', 'disburse', 'POST'].every((name) => trace.some((s) => s.name === name));
    return done && disburseRequestOf(all) && trace.every(hangsFromTrace(trace)) ? all : null;
  });
  // One trace: the wait above held only once every span of it hung from a span of it, but the root, whose
  // parent is the caller's span (a span whose parent never arrives times the wait out).
  const trace = spans.filter((s) => s.traceId === traceId);
  const upload = one(
    trace,
    'the upload request',
    (s) => s.kind === SERVER && s.name === 'POST /api/applications/:id/documents',
  );
  expect(upload).toMatchObject({ service: 'trace-api', parentSpanId: callerSpanId });
  expect(upload.attributes).toMatchObject({
    'http.route': '/api/applications/:id/documents',
    'http.response.status_code': 202,
  });
  const childOf = (parent: ReceivedSpan, what: string, match: (s: ReceivedSpan) => boolean) =>
    one(trace, what, (s) => s.parentSpanId === parent.spanId && match(s));

  const enqueueOcr = childOf(
    upload,
    'enqueue document.ocr',
    (s) => s.name === 'enqueue document.ocr' && s.kind === PRODUCER,
  );
  const ocrRun = childOf(enqueueOcr, 'the OCR run', (s) => s.name === 'run document.ocr' && s.kind === CONSUMER);
  expect(ocrRun.service).toBe('trace-ocr');
  expect(ocrRun.attributes['loan_admin.job.outcome']).toBe('completed');
  const enqueueScore = childOf(ocrRun, 'enqueue application.score', (s) => s.name === 'enqueue application.score');
  const scoreRun = childOf(
    enqueueScore,
    'the approval run',
    (s) => s.name === 'run application.score' && s.kind === CONSUMER,
  );
  expect(scoreRun.service).toBe('trace-approval');
  // Its approval starts the repayment plan's job in the same trace.
  const enqueuePlan = childOf(
    scoreRun,
    'enqueue application.approved',
    (s) => s.name === 'enqueue application.approved',
  );
  expect(enqueuePlan.kind).toBe(PRODUCER);

  // The disbursement continues the approval's trace, and is linked both ways with the request that asked.
  const disbursement = childOf(scoreRun, 'the disbursement', (s) => s.name === 'disburse');
  expect(disbursement.service).toBe('trace-api');
  const request = disburseRequestOf(spans)!;
  expect(request.traceId).not.toBe(traceId);
  expect(disbursement.links).toContainEqual({ traceId: request.traceId, spanId: request.spanId });
  expect(request.links).toContainEqual({ traceId, spanId: disbursement.spanId });
  const payment = childOf(disbursement, 'the provider call', (s) => s.name === 'POST' && s.kind === CLIENT);
  expect(payment.attributes).toMatchObject({ 'http.request.method': 'POST', 'http.response.status_code': 200 });
  // The provider received the call's own context.
  expect(sim.state().payments.find((p) => p.applicationId === id)?.traceparent).toBe(
    `00-${traceId}-${payment.spanId}-01`,
  );

  // Database commands are CLIENT spans under what ran them, in every process.
  const commandsUnder = (parent: ReceivedSpan) =>
    trace.filter((s) => s.parentSpanId === parent.spanId && s.attributes['db.system.name'] === 'mongodb');
  for (const [parent, collection] of [
    [upload, 'applications'],
    [enqueueOcr, 'jobs'],
    [ocrRun, 'applications'],
    [scoreRun, 'applications'],
    [disbursement, 'disbursements'],
  ] as const) {
    const commands = commandsUnder(parent);
    expect(
      commands.map((c) => c.attributes['db.collection.name']),
      `${parent.name}'s commands`,
    ).toContain(collection);
    for (const command of commands) expect(command.kind).toBe(CLIENT);
  }
  expect(commandsUnder(enqueueOcr).map((c) => c.name)).toContain('insert jobs');

  // ---- The log lines carry the trace --------------------------------------------------------------
  const lines = (text: string) =>
    text
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  const requestLine = lines(apiInstance!.output()).find(
    (line) => line.msg === 'request' && line.path === `/api/applications/${id}/documents`,
  );
  expect(requestLine).toMatchObject({ trace_id: traceId, span_id: upload.spanId });
  const ocrLine = lines(workers[0]!.output()).find(
    (line) => line.msg === 'job completed' && line.name === 'document.ocr',
  );
  expect(ocrLine).toMatchObject({ trace_id: traceId, span_id: ocrRun.spanId });
  const decided = lines(workers[1]!.output()).find(
    (line) => line.msg === 'application decided' && line.applicationId === id,
  );
  expect(decided).toMatchObject({ trace_id: traceId, span_id: scoreRun.spanId });
}, 180_000);
