// The 'document.ocr' job: load the document from GridFS, read it (tesseract or the PDF's text layer),
// extract the loan fields, store them on the application with a versioned update, then ask for a score.
// Idempotent: a re-run that reads the same fields writes nothing (the version does not move) and
// re-publishes the same score job id, which the queue de-duplicates. The write's filter pins the statuses
// that still take evidence: a decided application keeps the evidence it was decided on.
import type { Collection, Filter, UpdateFilter } from 'mongodb';
import { z } from 'zod';
import type { Job } from '../../shared/concurrency/queue/index.ts';
import { retryOnConflict, writeMissed } from '../../shared/concurrency/versions.ts';
import type { IndexPlan } from '../../shared/core/db.ts';
import { ConflictError, NotFoundError, UnreadableDocumentError, ValidationError } from '../../shared/core/errors.ts';
import {
  APPLICATIONS_COLLECTION,
  type ApplicationDoc,
  changeEntry,
  evidenceStatuses,
  jobRetry,
  withChange,
} from '../../shared/loans/applications.ts';
import { Documents, type DocumentType, documentIndexes } from '../../shared/loans/documents.ts';
import type { WorkerContext } from '../runtime.ts';
import { type ExtractedFields, extractFields, fieldNames } from './extract.ts';
import { type Recognizer, sharedRecognizer } from './recognize.ts';

export const SCORE_JOB = 'application.score';
export const scoreJobId = (applicationId: string, documentId: string) => `${SCORE_JOB}:${applicationId}:${documentId}`;
export const scoreJobOptions = (applicationId: string, documentId: string) => ({
  jobId: scoreJobId(applicationId, documentId),
  ...jobRetry,
});

/** The worker's own reads: documents by id (GridFS); applications are read and written by _id. */
export const ocrIndexes: IndexPlan[] = documentIndexes;

const EXCERPT_CHARS = 500;

export const ocrJobDataSchema = z.object({ documentId: z.string().min(1), applicationId: z.string().min(1) });
export type OcrJobData = z.infer<typeof ocrJobDataSchema>;

/** What the application carries after OCR: the fields of its most recently uploaded document that was read. */
export interface OcrRecord {
  documentId: string;
  sha256: string;
  contentType: DocumentType;
  source: 'ocr' | 'pdf-text';
  fields: ExtractedFields;
  textExcerpt: string;
  uploadedAt: Date;
  at: Date;
}

export type ApplicationWithOcr = ApplicationDoc & { ocr?: OcrRecord };

export interface OcrResult {
  documentId: string;
  applicationId: string;
  source: 'ocr' | 'pdf-text';
  fields: ExtractedFields;
  /**
   * written: stored now; unchanged: stored already by an earlier run; superseded: a newer document's fields
   * stay; frozen: the application was decided (approved, rejected, disbursed) and takes no more evidence.
   */
  outcome: 'written' | 'unchanged' | 'superseded' | 'frozen';
  version: number;
}

export type OcrContext = Pick<WorkerContext, 'db' | 'clock' | 'queue'>;

const MAX_WRITE_ATTEMPTS = 10;
const OCR_ACTOR = 'ocr-worker';

export const ocrQueries = {
  byId: (id: string): Filter<ApplicationWithOcr> => ({ _id: id }),
  /** The version read, and still in a status that takes evidence. */
  writable: (id: string, version: number): Filter<ApplicationWithOcr> => ({
    _id: id,
    version,
    status: { $in: [...evidenceStatuses] },
  }),
  /** Its change-log entry names the path it wrote (ocr), with the version it produces. */
  store: (record: OcrRecord, version: number): UpdateFilter<ApplicationWithOcr> =>
    withChange(
      // updatedAt too: list order and the change feed (GET /api/events) read every write by it.
      { $set: { ocr: record, updatedAt: record.at }, $inc: { version: 1 } },
      changeEntry({
        version,
        at: record.at,
        by: OCR_ACTOR,
        action: 'ocr',
        paths: [{ path: 'ocr', new: record.documentId }],
      }),
    ),
};

function sameFields(a: ExtractedFields | undefined, b: ExtractedFields): boolean {
  if (!a) return false;
  return fieldNames.every((name) => {
    const x = a[name];
    const y = b[name];
    if (!x || !y) return x === y;
    return x.value === y.value && x.confidence === y.confidence && x.label === y.label;
  });
}

/** A later upload wins; the id breaks a tie, so every worker orders two documents the same way. */
const isNewer = (a: { uploadedAt: Date; documentId: string }, b: { uploadedAt: Date; documentId: string }) =>
  a.uploadedAt.getTime() > b.uploadedAt.getTime() ||
  (a.uploadedAt.getTime() === b.uploadedAt.getTime() && a.documentId > b.documentId);

export function createOcrHandler(recognizer: Recognizer = sharedRecognizer()) {
  return async function handleOcrJob(job: Job<unknown>, signal: AbortSignal, ctx: OcrContext): Promise<OcrResult> {
    const parsed = ocrJobDataSchema.safeParse(job.data);
    if (!parsed.success) throw new ValidationError(`job ${job.id} has no documentId/applicationId`);
    const { documentId, applicationId } = parsed.data;
    const documents = new Documents(ctx.db);
    const document = await documents.get(documentId);
    if (!document) throw new NotFoundError(`document ${documentId} not found`);
    if (document.metadata.applicationId !== applicationId) {
      throw new ValidationError(
        `document ${documentId} belongs to ${document.metadata.applicationId}, not ${applicationId}`,
      );
    }
    const bytes = await documents.read(documentId);
    const recognition = await recognizer.recognize(bytes, document.metadata.contentType);
    // The lease is gone (another worker has the job now): leave the write to it.
    signal.throwIfAborted();
    const text = recognition.text.trim();
    if (!text) throw new UnreadableDocumentError(`no text found in ${document.metadata.contentType} ${documentId}`);
    const fields = extractFields(recognition.lines);
    if (Object.keys(fields).length === 0) {
      throw new UnreadableDocumentError(
        `no loan fields (name, income, amount, identity number) found in ${documentId}; read: "${text.slice(0, 120)}"`,
      );
    }
    const record: OcrRecord = {
      documentId,
      sha256: document.metadata.sha256,
      contentType: document.metadata.contentType,
      source: recognition.source,
      fields,
      textExcerpt: text.slice(0, EXCERPT_CHARS),
      uploadedAt: document.uploadedAt,
      at: new Date(ctx.clock.now()),
    };
    const applications = ctx.db.collection<ApplicationWithOcr>(
      APPLICATIONS_COLLECTION,
    ) as Collection<ApplicationWithOcr>;
    const written = await storeRecord(applications, applicationId, record);
    if (written.outcome === 'written' || written.outcome === 'unchanged') {
      await ctx.queue.add(SCORE_JOB, { applicationId, documentId }, scoreJobOptions(applicationId, documentId));
    }
    return {
      documentId,
      applicationId,
      source: recognition.source,
      fields,
      outcome: written.outcome,
      version: written.version,
    };
  };
}

/** Decides on the version read and writes pinned to it (and to an undecided status); again on a miss. */
async function storeRecord(
  applications: Collection<ApplicationWithOcr>,
  applicationId: string,
  record: OcrRecord,
): Promise<{ outcome: OcrResult['outcome']; version: number }> {
  return retryOnConflict(
    MAX_WRITE_ATTEMPTS,
    async () => {
      const current = await applications.findOne(ocrQueries.byId(applicationId));
      if (!current) throw new NotFoundError(`application ${applicationId} not found`);
      const stored = current.ocr;
      let outcome: OcrResult['outcome'] | null = null;
      if (!evidenceStatuses.includes(current.status)) outcome = 'frozen';
      else if (stored?.documentId === record.documentId && sameFields(stored.fields, record.fields))
        outcome = 'unchanged';
      else if (stored && stored.documentId !== record.documentId && isNewer(stored, record)) outcome = 'superseded';
      if (outcome) return { outcome, version: current.version };
      const written = await applications.findOneAndUpdate(
        ocrQueries.writable(applicationId, current.version),
        ocrQueries.store(record, current.version + 1),
        { returnDocument: 'after', projection: { version: 1 } },
      );
      if (written) return { outcome: 'written', version: written.version };
      // Changed (or decided) since the read: judge what is there now.
      return writeMissed;
    },
    () => new ConflictError(`application ${applicationId} kept changing; the job will be retried`, null),
  );
}
