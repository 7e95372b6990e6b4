// The approval worker process: `node workers/approval/main.ts` (MONGO_URL, MONGO_DB, QUEUE_CONCURRENCY...).
// It also redoes, at start and every REPLAY_INTERVAL_MS, the audit entries and jobs of application
// changes whose process died between the write and its effects (see replay.ts).
import { loadDotEnv } from '../../api/dotenv.ts';
import { runWorkerProcess } from '../runtime.ts';
import { approvalJobNames, handleApproval } from './handler.ts';
import { replayChanges } from './replay.ts';

loadDotEnv();
await runWorkerProcess({
  name: 'approval',
  jobNames: approvalJobNames,
  handler: handleApproval,
  every: { ms: (config) => config.REPLAY_INTERVAL_MS, run: replayChanges },
});
