// A worker's log says where a failure began: a failed job's line carries the error's stack and the
// error it wraps (with its own stack); a database unreachable at start is reported with its cause.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Queue, queueIndexes } from '../../shared/concurrency/queue/index.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { startWorker } from '../../workers/runtime.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  await ensureIndexes(database.db, [queueIndexes]);
});
afterAll(() => database?.close());

/** Where the failing handler below throws from: its stack names this function. */
function failDeepInside(): never {
  const inner = new Error('the disk said no');
  throw new Error('could not store the result', { cause: inner });
}

describe('worker logs', () => {
  it("a failed job's log line carries the stack and the cause", async () => {
    const lines: Record<string, unknown>[] = [];
    const capture = (line: unknown) => {
      if (typeof line === 'string' && line.includes('"job failed')) lines.push(JSON.parse(line));
    };
    const log = vi.spyOn(console, 'log').mockImplementation(capture);
    const error = vi.spyOn(console, 'error').mockImplementation(capture);
    const running = await startWorker(
      { name: 'stack-log', jobNames: ['test.stack'], handler: async () => failDeepInside() },
      { MONGO_URL: mongoUrl(), MONGO_DB: database.name, HOST: '127.0.0.1', LOG_LEVEL: 'warn' },
    );
    try {
      const queue = new Queue(database.db);
      const job = await queue.add('test.stack', {}, { attempts: 1 });
      await vi.waitFor(async () => expect((await queue.getJob(job.id))?.state).toBe('failed'), {
        timeout: 30_000,
        interval: 50,
      });
      await vi.waitFor(() => expect(lines).toHaveLength(1));
      const [line] = lines;
      expect(line).toMatchObject({ level: 'error', job: job.id, error: 'could not store the result' });
      expect(line!.stack).toMatch(/could not store the result\n\s+at failDeepInside .*job-log\.test\.ts/);
      expect(line!.cause).toMatchObject({
        error: 'the disk said no',
        stack: expect.stringMatching(/at failDeepInside/),
      });
    } finally {
      await running.stop('test over');
      log.mockRestore();
      error.mockRestore();
    }
  });

  it('a database unreachable at start: exit code 1, the driver error kept as the cause', async () => {
    const started = startWorker(
      { name: 'no-db', jobNames: ['test.none'], handler: async () => null },
      { MONGO_URL: 'mongodb://127.0.0.1:1', DB_TIMEOUT_MS: '300', HOST: '127.0.0.1', LOG_LEVEL: 'silent' },
    );
    const failure = await started.then(
      () => expect.unreachable('started without a database'),
      (error: Error) => error,
    );
    expect(failure).toMatchObject({ exitCode: 1, message: expect.stringMatching(/^cannot reach MongoDB at start/) });
    expect(failure.cause).toBeInstanceOf(Error);
    expect(failure.message).toContain((failure.cause as Error).message);
  });
});
