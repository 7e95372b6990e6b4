// OCR throughput of one worker process: the 'document.ocr' handler run serially (what one OCR process
// does: one tesseract thread, one job at a time) on a generated loan-form image and on a text-layer PDF,
// with latency percentiles and the exact MongoDB commands per job (command monitoring).
// Run: npx node bench/ocr.ts   (starts the offline server unless MONGO_URL is set)
// Knobs: OCR_BENCH_N (documents of each kind, 10).
import { availableParallelism, cpus } from 'node:os';
import { apiIndexes } from '../api/services.ts';
import { Queue } from '../shared/concurrency/queue/index.ts';
import { ServerClock } from '../shared/core/clock.ts';
import { ensureIndexes } from '../shared/core/db.ts';
import { Applications } from '../shared/loans/applications.ts';
import { Documents, type DocumentType, OCR_JOB } from '../shared/loans/documents.ts';
import { formJpeg, formPdf, formPng } from '../test/fixtures/documents.ts';
import { createOcrHandler } from '../workers/ocr/handler.ts';
import { Recognizer } from '../workers/ocr/recognize.ts';
import { countingClient, markdownTable, printPreamble, round, startBenchServer, summarize } from './support.ts';

const n = Number(process.env.OCR_BENCH_N ?? 10);
const server = await startBenchServer();
const counting = countingClient(server.url, { maxPoolSize: 10 });
await counting.client.connect();
const db = counting.client.db(`bench_ocr_${process.pid}`);
await ensureIndexes(db, apiIndexes);
const clock = new ServerClock(db);
await clock.sync();
const queue = new Queue(db, { clock });
const applications = new Applications(db, { clock, queue });
const documents = new Documents(db);

const recognizer = new Recognizer();
const loadStarted = performance.now();
await recognizer.start();
const modelLoadMs = performance.now() - loadStarted;
const handle = createOcrHandler(recognizer);

interface Kind {
  name: string;
  type: DocumentType;
  bytes: Uint8Array;
}
const kinds: Kind[] = [
  { name: 'PNG image (1400x640, 8 lines), tesseract', type: 'image/png', bytes: formPng() },
  { name: 'JPEG image (same form), tesseract', type: 'image/jpeg', bytes: formJpeg() },
  { name: 'PDF with text layer, pdf.js', type: 'application/pdf', bytes: await formPdf() },
];

const rows: Array<Array<string | number>> = [];
for (const kind of kinds) {
  const jobs = [];
  for (let i = 0; i < n; i++) {
    const app = await applications.create(
      { applicantName: `Bench ${i}`, monthlyIncome: 4000, loanAmount: 18_000, termMonths: 36 },
      { id: 'bench' },
    );
    const doc = await documents.store(
      { applicationId: app._id, filename: 'form', bytes: kind.bytes, uploadedBy: 'bench' },
      kind.type,
    );
    const now = new Date();
    jobs.push({
      id: `${OCR_JOB}:${doc.id}`,
      name: OCR_JOB,
      data: { documentId: doc.id, applicationId: app._id },
      priority: 0,
      attemptsMade: 0,
      attemptsStarted: 1,
      stalledCount: 0,
      runAt: now,
      createdAt: now,
    });
  }
  // One warm-up job outside the measurement (first use of pdf.js / the decoder).
  await handle(jobs[0]!, new AbortController().signal, { db, clock, queue });
  counting.reset();
  const samples: number[] = [];
  const started = performance.now();
  for (const job of jobs.slice(1).concat(jobs.slice(0, 1))) {
    const t = performance.now();
    const result = await handle(job, new AbortController().signal, { db, clock, queue });
    samples.push(performance.now() - t);
    if (Object.keys(result.fields).length < 4) throw new Error(`only ${Object.keys(result.fields).join(', ')} read`);
  }
  const elapsed = performance.now() - started;
  const s = summarize(samples);
  rows.push([
    kind.name,
    round(kind.bytes.byteLength / 1024, 1),
    n,
    round((n / elapsed) * 60_000, 0),
    round(s.p50, 0),
    round(s.p95, 0),
    counting.perOperation(n),
  ]);
}

await recognizer.close();
await db.dropDatabase();
await counting.client.close();
await server.stop();

printPreamble(
  'OCR documents per minute per worker process (serial, one tesseract thread)',
  'npx node bench/ocr.ts',
  server,
);
console.log(
  `${cpus()[0]?.model ?? 'cpu'}, ${availableParallelism()} cores; model load (createWorker): ${round(modelLoadMs, 0)} ms`,
);
console.log('The last job of each kind is a re-run (the warm-up job again): it writes nothing, like a retried job.\n');
console.log(
  markdownTable(['document', 'KiB', 'jobs', 'documents/min', 'p50 ms', 'p95 ms', 'MongoDB commands per job'], rows),
);
