// Approval jobs per second: N applications under review with OCR results, one 'application.review'
// job each, consumed by the approval worker's handler in a queue Worker in this process (as
// workers/approval/main.ts runs it), at concurrency 1 and 10. Every job decides its application.
//
//   npm run bench:approval        (APPROVAL_BENCH_N=1000)
import { createLogger } from '../api/log.ts';
import { demoApplication } from '../scripts/seed.ts';
import { Queue, queueIndexes, Worker } from '../shared/concurrency/queue/index.ts';
import { ServerClock } from '../shared/core/clock.ts';
import { loadConfig } from '../shared/core/config.ts';
import { ensureIndexes } from '../shared/core/db.ts';
import { APPLICATIONS_COLLECTION, type ApplicationDoc } from '../shared/loans/applications.ts';
import { handleApproval } from '../workers/approval/handler.ts';
import type { WorkerContext } from '../workers/runtime.ts';
import { countingClient, markdownTable, printPreamble, round, startBenchServer } from './support.ts';

const N = Number(process.env.APPROVAL_BENCH_N ?? 1000);
const server = await startBenchServer();
printPreamble('Approval worker: jobs per second', 'npm run bench:approval   (APPROVAL_BENCH_N to change)', server);

const rows: Array<Array<string | number>> = [];
for (const concurrency of [1, 10]) {
  const counting = countingClient(server.url, { maxPoolSize: 20 });
  await counting.client.connect();
  const db = counting.client.db(`bench_approval_${concurrency}_${Date.now()}`);
  await ensureIndexes(db, [queueIndexes]);
  const clock = new ServerClock(db);
  await clock.sync();
  const ctx: WorkerContext = {
    db,
    clock,
    queue: new Queue(db, { clock }),
    logger: createLogger('silent'),
    // The 10,000 loans below are within the automatic approval limit (0, none, by default).
    config: loadConfig({ MONGO_URL: server.url, LOG_LEVEL: 'silent', APPROVAL_AUTO_APPROVE_MAX_AMOUNT: '10000' }),
  };
  // Sound applications whose documents agree: each job ends in an automatic approval.
  const docs: ApplicationDoc[] = Array.from({ length: N }, (_, i) => {
    const app = demoApplication(i, Date.now());
    const field = <T>(value: T) => ({ value, confidence: 0.95 });
    return Object.assign(app, {
      status: 'under_review' as const,
      monthlyIncome: 8000,
      loanAmount: 10_000,
      termMonths: 36,
      ocr: {
        fields: {
          applicantName: field(app.applicantName),
          monthlyIncome: field(8000),
          loanAmount: field(10_000),
          identityNumber: field(app.identityNumber),
        },
      },
    });
  });
  await db.collection<ApplicationDoc>(APPLICATIONS_COLLECTION).insertMany(docs);
  await ctx.queue.addBulk(docs.map((doc) => ({ name: 'application.review', data: { applicationId: doc._id } })));
  counting.reset();
  const started = performance.now();
  const cpu0 = process.cpuUsage();
  let done = 0;
  let allDone: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    allDone = resolve;
  });
  const worker = new Worker(
    db,
    ['application.review'],
    async (job, signal) => {
      const result = await handleApproval(job as never, signal, ctx);
      if (++done === N) allDone();
      return result;
    },
    { concurrency, clock },
  );
  await worker.run();
  await finished;
  await worker.close();
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const approved = await db.collection(APPLICATIONS_COLLECTION).countDocuments({ status: 'approved' });
  rows.push([
    concurrency,
    N,
    approved,
    round(seconds, 2),
    round(N / seconds, 0),
    round(counting.total() / N, 2),
    counting.perOperation(N),
    round((cpu.user + cpu.system) / 1000 / N, 2),
  ]);
  await db.dropDatabase();
  await counting.client.close();
}
console.log(
  markdownTable(
    ['concurrency', 'jobs', 'approved', 'seconds', 'jobs/s', 'db commands / job', 'by command', 'worker CPU ms / job'],
    rows,
  ),
);
await server.stop();
