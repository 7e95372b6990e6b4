// The approval worker process: `node workers/approval/main.ts` (MONGO_URL, MONGO_DB, QUEUE_CONCURRENCY...).
// It also redoes, every REPLAY_INTERVAL_MS, the audit entries and jobs of recent application changes
// whose process died between the write and its effects (one worker at a time, under a lease).
import { runWorkerProcess } from '../runtime.ts';
import { approvalJobNames, handleApproval } from './handler.ts';
import { replayRecentChanges } from './replay.ts';

await runWorkerProcess({
  name: 'approval',
  jobNames: approvalJobNames,
  handler: handleApproval,
  every: { ms: (config) => config.REPLAY_INTERVAL_MS, run: replayRecentChanges },
});
