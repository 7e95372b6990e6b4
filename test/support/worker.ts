// A worker context on a test database, for calling job handlers in-process; an OCR suite's database.

import type { Db } from 'mongodb';
import { createLogger } from '../../api/log.ts';
import { apiIndexes } from '../../api/services.ts';
import { Queue } from '../../shared/concurrency/queue/index.ts';
import { ServerClock } from '../../shared/core/clock.ts';
import { loadConfig } from '../../shared/core/config.ts';
import { Applications } from '../../shared/loans/applications.ts';
import { Documents } from '../../shared/loans/documents.ts';
import type { OcrContext } from '../../workers/ocr/handler.ts';
import type { WorkerContext } from '../../workers/runtime.ts';
import { mongoUrl, openTestDatabase } from './mongo.ts';

export async function workerContext(db: Db, env: Record<string, string> = {}): Promise<WorkerContext> {
  const clock = new ServerClock(db);
  await clock.sync();
  return {
    db,
    clock,
    queue: new Queue(db, { clock }),
    logger: createLogger('silent'),
    config: loadConfig({ MONGO_URL: mongoUrl(), LOG_LEVEL: 'silent', ...env }),
  };
}

/** A job as a handler sees it. */
export function jobOf<Data>(name: string, data: Data) {
  return {
    id: `${name}:${crypto.randomUUID()}`,
    name,
    data,
    priority: 0,
    attemptsMade: 0,
    attemptsStarted: 1,
    stalledCount: 0,
    runAt: new Date(),
    createdAt: new Date(),
  };
}

/** An OCR suite's own database: the API's indexes, a synced server clock and a queue, the applications and documents. */
export async function openOcrDatabase(file: string) {
  const tdb = await openTestDatabase(file, { indexes: apiIndexes });
  const clock = new ServerClock(tdb.db);
  await clock.sync();
  const queue = new Queue(tdb.db, { clock });
  const ctx: OcrContext = { db: tdb.db, clock, queue };
  return { tdb, ctx, applications: new Applications(tdb.db, { clock, queue }), documents: new Documents(tdb.db) };
}
