// The approval worker process: `node workers/approval/main.ts` (MONGO_URL, MONGO_DB, QUEUE_CONCURRENCY...).
// It also redoes, every REPLAY_INTERVAL_MS, the audit entries and jobs of recent application changes
// whose process died between the write and its effects (one worker at a time, under a lease).
import { loadDotEnv } from '../../api/dotenv.ts';
import { Applications } from '../../shared/applications.ts';
import { LockManager } from '../../shared/lock.ts';
import { runWorkerProcess, type WorkerContext } from '../runtime.ts';
import { approvalJobNames, handleApproval } from './handler.ts';

/** Changes this recent are replayed: several intervals, so a run that was skipped costs nothing. */
const REPLAY_WINDOW_INTERVALS = 5;

async function replayRecentChanges(ctx: WorkerContext): Promise<void> {
  const locks = new LockManager(ctx.db);
  const lease = await locks.acquire('replay:last-changes', { ttlMs: 60_000 });
  if (!lease) return; // another worker is on it
  try {
    const applications = new Applications(ctx.db, { clock: ctx.clock, queue: ctx.queue });
    const since = new Date(ctx.clock.now() - REPLAY_WINDOW_INTERVALS * ctx.config.REPLAY_INTERVAL_MS);
    const replayed = await applications.replayLastChanges(since);
    if (replayed > 0) ctx.logger.debug('replayed recent changes', { replayed });
  } finally {
    await locks.release(lease);
  }
}

loadDotEnv();
await runWorkerProcess({
  name: 'approval',
  jobNames: approvalJobNames,
  handler: handleApproval,
  every: { ms: (config) => config.REPLAY_INTERVAL_MS, run: replayRecentChanges },
});
