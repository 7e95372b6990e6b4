// A worker context on a test database, for calling job handlers in-process.

import type { Db } from 'mongodb';
import { createLogger } from '../../api/log.ts';
import { Queue } from '../../shared/concurrency/queue/index.ts';
import { ServerClock } from '../../shared/core/clock.ts';
import { loadConfig } from '../../shared/core/config.ts';
import type { WorkerContext } from '../../workers/runtime.ts';
import { mongoUrl } from './mongo.ts';

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
