// The OCR worker process: `node workers/ocr/main.ts` (MONGO_URL, MONGO_DB, QUEUE_LEASE_MS...).
// One tesseract thread per process, so one job at a time: scale OCR by starting more processes.
import { loadDotEnv } from '../../api/dotenv.ts';
import { OCR_JOB } from '../../shared/loans/documents.ts';
import { runWorkerProcess } from '../runtime.ts';
import { createOcrHandler, ocrIndexes } from './handler.ts';
import { ocrMetrics } from './metrics.ts';
import { sharedRecognizer } from './recognize.ts';

loadDotEnv();
const recognizer = sharedRecognizer();

await runWorkerProcess({
  name: 'ocr',
  jobNames: [OCR_JOB],
  handler: createOcrHandler(recognizer),
  concurrency: 1,
  indexes: ocrIndexes,
  // Loading the model takes a moment: readiness waits for it rather than the first job.
  prepare: ({ config }) => {
    recognizer.maxImagePixels = config.DOCUMENT_MAX_PIXELS;
    return recognizer.start();
  },
  dispose: () => recognizer.close(),
  metrics: ocrMetrics,
});
