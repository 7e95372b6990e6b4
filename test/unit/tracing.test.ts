// Tracing off is nothing: without the SDK (this process never registers it) the shared helpers make no
// span, add no trace field to a job and no ids to a log line; the configuration accepts only an http(s)
// endpoint and a plain service name. The trace itself is checked end to end in test/e2e/tracing.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../api/log.ts';
import { Queue } from '../../shared/concurrency/queue/index.ts';
import { loadConfig } from '../../shared/core/config.ts';
import { ConfigError } from '../../shared/core/errors.ts';
import { contextOf, currentTrace, inSpan, traceLogFields, tracingEnabled } from '../../shared/core/tracing.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
});
afterAll(() => database.close());

describe('tracing off', () => {
  it('makes no span, even for a root or under a caller context, and carries no context', async () => {
    expect(tracingEnabled()).toBe(false);
    const parent = contextOf({ traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' });
    const seen = await inSpan('request', { root: true, parent }, async (span) => ({ span, trace: currentTrace() }));
    expect(seen).toEqual({ span: undefined, trace: undefined });
    expect(traceLogFields()).toBeUndefined();
  });

  it('adds jobs without a trace field, and writes log lines without trace ids', async () => {
    const queue = new Queue(database.db);
    const job = await queue.add('tracing.off', { n: 1 });
    const stored = await queue.collection.findOne({ _id: job.id });
    expect(stored).not.toBeNull();
    expect(stored).not.toHaveProperty('trace');
    const lines: string[] = [];
    const log = console.log;
    console.log = (line: string) => lines.push(line);
    try {
      createLogger('info').info('hello', { a: 1 });
    } finally {
      console.log = log;
    }
    expect(JSON.parse(lines[0]!)).not.toHaveProperty('trace_id');
  });
});

describe('tracing configuration', () => {
  const base = { MONGO_URL: mongoUrl() };
  it('is off unless an endpoint is given; takes http(s) URLs and plain service names only', () => {
    expect(loadConfig(base).OTEL_EXPORTER_OTLP_ENDPOINT).toBeUndefined();
    const on = loadConfig({
      ...base,
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318',
      OTEL_SERVICE_NAME: 'api-1',
    });
    expect(on).toMatchObject({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_SERVICE_NAME: 'api-1' });
    expect(() => loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://collector:4317' })).toThrow(ConfigError);
    expect(() => loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' })).toThrow(
      /OTEL_EXPORTER_OTLP_ENDPOINT/,
    );
    expect(() => loadConfig({ ...base, OTEL_SERVICE_NAME: 'api one' })).toThrow(/OTEL_SERVICE_NAME/);
    expect(loadConfig(base).OTEL_TRACE_DB_COMMANDS).toBe(true);
    expect(loadConfig({ ...base, OTEL_TRACE_DB_COMMANDS: 'false' }).OTEL_TRACE_DB_COMMANDS).toBe(false);
    expect(() => loadConfig({ ...base, OTEL_TRACE_DB_COMMANDS: 'no' })).toThrow(/OTEL_TRACE_DB_COMMANDS/);
  });
});
