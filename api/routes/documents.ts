// Documents of an application: upload (multipart, type by magic bytes, size cap, stored in GridFS, OCR job
// published), download, and the list with each document's OCR state.
import { createRoute, type OpenAPIHono, type RouteHandler, z } from '@hono/zod-openapi';
import { Applications } from '../../shared/loans/applications.ts';
import {
  concatBytes,
  Documents,
  type DocumentType,
  documentIdPattern,
  documentTypes,
  MAX_IMAGE_SIDE,
  OCR_JOB,
  ocrJobId,
  ocrJobOptions,
  oversizedImage,
  type StoredDocument,
  sniffDocumentType,
} from '../../shared/loans/documents.ts';
import type { AppEnv } from '../auth.ts';
import { HttpError } from '../http-errors.ts';
import { ApplicationIdParam, errorResponses, signedIn } from '../openapi.ts';
import type { Services } from '../services.ts';

/** Room for the multipart boundaries and part headers around the file itself. */
const MULTIPART_OVERHEAD_BYTES = 16 * 1024;
const uploadPath = /^\/api\/applications\/[^/]+\/documents\/?$/;

/**
 * The one route whose body is multipart and larger than BODY_LIMIT_BYTES: the app's JSON-only and
 * body-limit middleware let it through, and the route enforces DOCUMENT_MAX_BYTES itself.
 */
export const isDocumentUpload = (method: string, path: string) => method === 'POST' && uploadPath.test(path);

const DocumentIdParam = z.object({
  id: z.string().regex(documentIdPattern, 'not a document id').openapi({ example: 'DOC-0b5f...' }),
});

const UploadAccepted = z
  .object({ documentId: z.string(), jobId: z.string(), contentType: z.enum(documentTypes), sha256: z.string() })
  .openapi('DocumentAccepted');

const OcrState = z.object({
  state: z.enum(['waiting', 'active', 'completed', 'failed', 'unknown']),
  attemptsMade: z.number().int(),
  error: z.string().optional(),
  /** This document's fields are the ones stored on the application. */
  applied: z.boolean(),
  fields: z.unknown().optional(),
});

const DocumentJson = z
  .object({
    documentId: z.string(),
    filename: z.string(),
    contentType: z.enum(documentTypes),
    size: z.number().int(),
    sha256: z.string(),
    uploadedAt: z.string(),
    uploadedBy: z.string(),
    ocr: OcrState,
  })
  .openapi('Document');

/**
 * Reads a body up to `cap` bytes; past it, stops reading (cancels the stream) and returns null. Not
 * hono/body-limit: it trusts a Content-Length header and then reads the stream uncapped, so a body that
 * understates its length is read whole (bench/body-limit.ts: 100 MiB read, 200), and it never cancels.
 */
export async function readCapped(body: ReadableStream<Uint8Array> | null, cap: number): Promise<Uint8Array | null> {
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > cap) {
      await reader.cancel().catch(() => {});
      return null;
    }
    parts.push(value);
  }
  return concatBytes(parts, size);
}

const tooLarge = (max: number) =>
  new HttpError(413, 'payload_too_large', `The document is larger than ${max} bytes.`, { maxBytes: max });

const uploadRoute = createRoute({
  method: 'post',
  path: '/api/applications/{id}/documents',
  tags: ['documents'],
  summary: 'Upload a document (PNG, JPEG or PDF) for OCR',
  description:
    'multipart/form-data with one file field `file`. The type is decided by the content (magic bytes), not by ' +
    'the declared type or the filename. Answers 202 with the document id and the OCR job id; 409 (evidence_frozen) ' +
    'once the application is approved, rejected or disbursed. The uploader becomes one of its preparers.',
  ...signedIn('applications:edit'),
  request: {
    params: ApplicationIdParam,
    body: {
      required: true,
      // A plain schema object: documented, but no validator reads the body before the size check.
      content: {
        'multipart/form-data': {
          schema: {
            type: 'object',
            required: ['file'],
            properties: { file: { type: 'string', format: 'binary' } },
          },
        },
      },
    },
  },
  responses: {
    202: { description: 'Stored; OCR queued', content: { 'application/json': { schema: UploadAccepted } } },
    ...errorResponses(400, 401, 403, 404, 409, 413, 415, 422, 429),
  },
});

const downloadRoute = createRoute({
  method: 'get',
  path: '/api/documents/{id}',
  tags: ['documents'],
  summary: 'Download a document, as the type its content showed',
  description:
    '`disposition=inline` shows it in the page (the console previews images and PDFs); the answer then carries ' +
    'a Content-Security-Policy that lets it run nothing and be framed by this origin only.',
  ...signedIn('applications:read'),
  request: {
    params: DocumentIdParam,
    query: z.object({
      disposition: z
        .enum(['attachment', 'inline'])
        .default('attachment')
        .openapi({ description: 'attachment (a download, the default) or inline (a preview)' }),
    }),
  },
  responses: {
    200: {
      description: 'The document',
      content: Object.fromEntries(
        documentTypes.map((type) => [type, { schema: { type: 'string' as const, format: 'binary' } }]),
      ),
    },
    ...errorResponses(400, 401, 403, 404, 429),
  },
});

const listRoute = createRoute({
  method: 'get',
  path: '/api/applications/{id}/documents',
  tags: ['documents'],
  summary: "An application's documents with their OCR state",
  ...signedIn('applications:read'),
  request: { params: ApplicationIdParam },
  responses: {
    200: {
      description: 'Documents in upload order',
      content: { 'application/json': { schema: z.object({ items: z.array(DocumentJson) }) } },
    },
    ...errorResponses(400, 401, 403, 404, 429),
  },
});

interface DocumentDeps {
  documents: Documents;
  applications: Applications;
  services: Services;
}

/**
 * The upload's one file, its type by content, and 413/415/422 for what we refuse: the declared length and
 * then the stream are cut at the cap, so an oversized body is never read whole.
 */
async function readUpload(
  body: ReadableStream<Uint8Array> | null,
  contentType: string,
  declared: number,
  config: Services['config'],
) {
  const maxBytes = config.DOCUMENT_MAX_BYTES;
  if (!/^multipart\/form-data\s*;/i.test(contentType)) {
    throw new HttpError(415, 'unsupported_media_type', 'Send the document as multipart/form-data (field "file").');
  }
  const cap = maxBytes + MULTIPART_OVERHEAD_BYTES;
  if (Number.isFinite(declared) && declared > cap) throw tooLarge(maxBytes);
  const bytesRead = await readCapped(body, cap);
  if (!bytesRead) throw tooLarge(maxBytes);
  const file = await fileField(bytesRead, contentType);
  if (file.size > maxBytes) throw tooLarge(maxBytes);
  const bytes = new Uint8Array(await file.arrayBuffer());
  const type = sniffDocumentType(bytes);
  if (!type) {
    throw new HttpError(415, 'unsupported_media_type', 'The file is not a PNG, JPEG or PDF (judged by its content).', {
      accepted: documentTypes,
    });
  }
  // A few header bytes tell: an image too large to decode is refused now, not dead-lettered later.
  const oversized = oversizedImage(bytes, type, config.DOCUMENT_MAX_PIXELS);
  if (oversized) {
    throw new HttpError(422, 'image_too_large', `The image cannot be read: ${oversized}.`, {
      maxPixels: config.DOCUMENT_MAX_PIXELS,
      maxSide: MAX_IMAGE_SIDE,
    });
  }
  return { name: file.name, bytes, type };
}

function uploadHandler({ documents, applications, services }: DocumentDeps): RouteHandler<typeof uploadRoute, AppEnv> {
  return async (c) => {
    const { id } = c.req.valid('param');
    // 404, or 409 evidence_frozen once decided, before reading the body.
    await applications.assertOpenToEvidence(id);
    const contentType = c.req.header('content-type') ?? '';
    const declared = Number(c.req.header('content-length'));
    const file = await readUpload(c.req.raw.body, contentType, declared, services.config);
    const actor = { id: c.get('auth').sub, requestId: c.get('requestId') };
    // The uploader becomes a preparer before the document exists (four eyes), in a write that also
    // proves the application is still undecided.
    await applications.recordUploader(id, actor);
    const stored = await documents.store(
      { applicationId: id, filename: file.name, bytes: file.bytes, uploadedBy: actor.id },
      file.type,
    );
    let jobId: string;
    try {
      // A decision taken while the bytes were stored did not see this document: take it back.
      await applications.assertOpenToEvidence(id);
      jobId = (
        await services.queue.add(OCR_JOB, { documentId: stored.id, applicationId: id }, ocrJobOptions(stored.id))
      ).id;
    } catch (error) {
      // Decided meanwhile, or without its job the document would never be read: take it back.
      await documents.bucket.delete(stored.id as never).catch(() => {});
      throw error;
    }
    c.header('Location', `/api/documents/${stored.id}`);
    return c.json({ documentId: stored.id, jobId, contentType: file.type, sha256: stored.metadata.sha256 }, 202);
  };
}

/** A document as the list shows it, with the state of its OCR job. */
async function describe(services: Services, doc: StoredDocument, appliedId: string | undefined) {
  const job = await services.queue.getJob<unknown, { fields?: unknown }>(ocrJobId(doc.id));
  return {
    documentId: doc.id,
    filename: doc.filename,
    contentType: doc.metadata.contentType as DocumentType,
    size: doc.metadata.size,
    sha256: doc.metadata.sha256,
    uploadedAt: doc.uploadedAt.toISOString(),
    uploadedBy: doc.metadata.uploadedBy,
    ocr: {
      state: job?.state ?? ('unknown' as const),
      attemptsMade: job?.attemptsMade ?? 0,
      ...(job?.lastError && job.state !== 'completed' ? { error: job.lastError.message } : {}),
      applied: appliedId === doc.id,
      ...(job?.result?.fields ? { fields: job.result.fields } : {}),
    },
  };
}

export function documentRoutes(app: OpenAPIHono<AppEnv>, services: Services) {
  const documents = new Documents(services.db);
  const applications = new Applications(services.db, {
    clock: services.clock,
    queue: services.queue,
    historyVersions: services.config.MERGE_HISTORY_VERSIONS,
    listCache: services.listCache,
  });

  app.openapi(uploadRoute, uploadHandler({ documents, applications, services }));

  app.openapi(downloadRoute, async (c) => {
    const { id } = c.req.valid('param');
    const { disposition } = c.req.valid('query');
    const found = await documents.get(id);
    if (!found) throw new HttpError(404, 'not_found', `Document ${id} not found.`);
    return c.body(documents.stream(id), 200, {
      'Content-Type': found.metadata.contentType,
      'Content-Length': String(found.metadata.size),
      'Content-Disposition': `${disposition}; filename="${found.filename}"`,
      'Cache-Control': 'private, no-store',
      ...(disposition === 'inline' ? { 'Content-Security-Policy': "default-src 'none'; frame-ancestors 'self'" } : {}),
    });
  });

  app.openapi(listRoute, async (c) => {
    const { id } = c.req.valid('param');
    const application = (await applications.get(id)) as ({ ocr?: { documentId?: string } } & object) | null;
    if (!application) throw new HttpError(404, 'not_found', `Application ${id} not found.`);
    const found = await documents.listOf(id);
    const items = await Promise.all(found.map((doc) => describe(services, doc, application.ocr?.documentId)));
    return c.json({ items }, 200);
  });
}

/** The single `file` part of a multipart body; 400 when the body is not multipart or the part is missing. */
async function fileField(body: Uint8Array, contentType: string): Promise<File> {
  let form: FormData;
  try {
    form = await new Response(body as Uint8Array<ArrayBuffer>, { headers: { 'content-type': contentType } }).formData();
  } catch {
    throw new HttpError(400, 'validation', 'The body is not valid multipart/form-data.', [
      { path: 'file', message: 'malformed multipart body' },
    ]);
  }
  const files = form.getAll('file');
  const file = files[0];
  if (files.length !== 1 || typeof file === 'string' || file === undefined) {
    throw new HttpError(400, 'validation', 'Send exactly one file in the field "file".', [
      { path: 'file', message: files.length === 0 ? 'required' : 'exactly one file' },
    ]);
  }
  return file;
}
