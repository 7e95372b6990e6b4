// Traces on Deno: the API on Deno (api/deno.ts, started by scripts/runtimes/deno.ts with an OTLP endpoint)
// exports through Deno's built-in OpenTelemetry to an OTLP/HTTP receiver this test starts. A request that
// carries the caller's `traceparent` is one SERVER span (Deno.serve's own, named by the route pattern here,
// not a second one beside it), the caller's child; the MongoDB commands the route sends are CLIENT spans
// under it; the request's log line carries the trace id.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from '../../scripts/otlp-receiver.ts';
import { startDeno } from '../../scripts/runtimes/deno.ts';
import type { RuntimeProcess } from '../../scripts/runtimes/process.ts';
import { seedApplications } from '../../scripts/seed.ts';
import { randomJwtKeys } from '../support/app.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { waitForValue } from '../support/wait.ts';

const SERVER = 2;
const CLIENT = 3;
const ADMIN = { email: 'deno-trace@example.com', password: 'deno tracing password' };

let database: TestDatabase;
let receiver: OtlpReceiver;
let deno: RuntimeProcess | undefined;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  await seedApplications(database.db, 5);
  receiver = await startOtlpReceiver();
  deno = await startDeno({
    env: {
      MONGO_URL: mongoUrl(),
      MONGO_DB: database.name,
      JWT_KEYS: randomJwtKeys('deno-trace'),
      LEDGER_KEYS: randomJwtKeys('ledger'),
      PASSWORD_ITERATIONS: '1000',
      ADMIN_EMAIL: ADMIN.email,
      ADMIN_PASSWORD: ADMIN.password,
      LOG_LEVEL: 'info',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_SERVICE_NAME: 'trace-deno',
    },
  });
}, 120_000);

afterAll(async () => {
  await deno?.stop();
  await receiver?.close();
  await database?.close();
});

const hex = (bytes: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, '0')).join('');

/** Sends a request as a caller whose own span is `callerSpanId` in `traceId`. */
async function traced(path: string, traceId: string, callerSpanId: string, init: RequestInit = {}) {
  const headers = new Headers(init.headers);
  headers.set('traceparent', `00-${traceId}-${callerSpanId}-01`);
  return fetch(`${deno!.origin}${path}`, { ...init, headers });
}

/** The spans of `traceId` once its SERVER span has arrived and no span of it misses its parent. */
function traceOf(traceId: string, callerSpanId: string): Promise<ReceivedSpan[]> {
  return waitForValue(
    () => receiver.spans().filter((span) => span.traceId === traceId),
    (spans) => {
      const ids = new Set(spans.map((span) => span.spanId));
      return (
        spans.some((span) => span.kind === SERVER) &&
        spans.every((span) => span.parentSpanId === callerSpanId || ids.has(span.parentSpanId))
      );
    },
    { timeoutMs: 60_000, intervalMs: 200, what: `the spans of trace ${traceId}`, detail: () => deno!.output() },
  );
}

it('a request on Deno is one SERVER span under the caller, named by its route, with its MongoDB commands beneath', async () => {
  const loginTrace = hex(16);
  const loginCaller = hex(8);
  const login = await traced('/api/auth/login', loginTrace, loginCaller, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(ADMIN),
  });
  expect(login.status).toBe(200);
  const { accessToken } = (await login.json()) as { accessToken: string };

  const listTrace = hex(16);
  const listCaller = hex(8);
  const list = await traced('/api/applications?limit=5', listTrace, listCaller, {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  expect(list.status).toBe(200);

  for (const [traceId, caller, route, collection] of [
    [loginTrace, loginCaller, '/api/auth/login', 'admins'],
    [listTrace, listCaller, '/api/applications', 'applications'],
  ] as const) {
    const spans = await traceOf(traceId, caller);
    const servers = spans.filter((span) => span.kind === SERVER);
    // One SERVER span: Deno's, described by the app (not a second span of the app's own beside it).
    expect(servers.map((span) => span.name)).toEqual([`${route === '/api/auth/login' ? 'POST' : 'GET'} ${route}`]);
    const server = servers[0]!;
    expect(server.service).toBe('trace-deno');
    expect(server.parentSpanId).toBe(caller);
    expect(server.attributes['http.route']).toBe(route);
    // Deno sets the status itself when the response leaves, as a string.
    expect(String(server.attributes['http.response.status_code'])).toBe('200');
    const commands = spans.filter((span) => span.attributes['db.system.name'] === 'mongodb');
    expect(commands.map((span) => span.attributes['db.collection.name'])).toContain(collection);
    for (const command of commands) {
      expect(command.kind).toBe(CLIENT);
      expect(command.parentSpanId).toBe(server.spanId);
    }
  }

  // The request's log line carries its trace.
  const requestLine = deno!
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .find((line) => line.msg === 'request' && line.path === '/api/applications');
  expect(requestLine).toMatchObject({ trace_id: listTrace });
});
