// The approval worker's housekeeping: redo the audit entries and jobs of application changes whose
// process died between the versioned write and its effects. One worker at a time, under a lease.
import { Applications } from '../../shared/applications.ts';
import { LockManager } from '../../shared/lock.ts';
import type { WorkerContext } from '../runtime.ts';

/** Changes this recent are replayed: several intervals, so a run that was skipped costs nothing. */
const REPLAY_WINDOW_INTERVALS = 5;

export async function replayRecentChanges(ctx: WorkerContext): Promise<void> {
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
