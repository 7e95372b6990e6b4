// The approval worker process: `node workers/approval/main.ts` (MONGO_URL, MONGO_DB, QUEUE_CONCURRENCY...).
import { runWorkerProcess } from '../runtime.ts';
import { approvalJobNames, handleApproval } from './handler.ts';

await runWorkerProcess({ name: 'approval', jobNames: approvalJobNames, handler: handleApproval });
