// The approval worker's housekeeping: redo the audit entries and jobs of application changes whose
// process died between the versioned write and its effects, from a checkpoint kept in MongoDB, so a
// change is redone however long no approval worker ran. One worker at a time, under a lease.

import { LockManager } from '../../shared/concurrency/leases.ts';
import { Applications, type ReplayResult } from '../../shared/loans/applications.ts';
import type { WorkerContext } from '../runtime.ts';

/**
 * Long enough for a large backlog (the first run on a database replays every change once). A run that
 * outlasts it may overlap the next worker's: harmless, both effects and the checkpoint are idempotent.
 */
const REPLAY_LEASE_MS = 60_000;

/** Null when another worker holds the replay lease. */
export async function replayChanges(ctx: WorkerContext): Promise<ReplayResult | null> {
  const locks = new LockManager(ctx.db);
  const lease = await locks.acquire('replay:last-changes', { ttlMs: REPLAY_LEASE_MS });
  if (!lease) return null;
  try {
    const applications = new Applications(ctx.db, { clock: ctx.clock, queue: ctx.queue });
    const result = await applications.replayChanges({ marginMs: ctx.config.REPLAY_MARGIN_MS });
    if (result.replayed > 0) ctx.logger.debug('replayed changes', { ...result });
    return result;
  } finally {
    await locks.release(lease);
  }
}
