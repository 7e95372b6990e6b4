// Uploaded documents (loan forms, IDs, payslips) in GridFS: the type is read from the content's magic
// bytes, never from what the client declared; the filename is cleaned and kept only as metadata.
// Runtime-neutral: Web APIs only (crypto.subtle for the digest).
import { type Db, GridFSBucket, type GridFSFile } from 'mongodb';
import type { IndexPlan } from '../core/db.ts';
import { NotFoundError } from '../core/errors.ts';

export const DOCUMENTS_BUCKET = 'documents';
export const DOCUMENT_FILES_COLLECTION = `${DOCUMENTS_BUCKET}.files`;
export const DOCUMENT_CHUNKS_COLLECTION = `${DOCUMENTS_BUCKET}.chunks`;

export const documentTypes = ['image/png', 'image/jpeg', 'application/pdf'] as const;
export type DocumentType = (typeof documentTypes)[number];

const signatures: { type: DocumentType; bytes: number[] }[] = [
  { type: 'image/png', bytes: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a] },
  { type: 'image/jpeg', bytes: [0xff, 0xd8, 0xff] },
  { type: 'application/pdf', bytes: [0x25, 0x50, 0x44, 0x46, 0x2d] }, // %PDF-
];

/** The document's type from its first bytes, or null when it is none we accept. */
export function sniffDocumentType(bytes: Uint8Array): DocumentType | null {
  for (const { type, bytes: magic } of signatures) {
    if (bytes.length >= magic.length && magic.every((byte, i) => bytes[i] === byte)) return type;
  }
  return null;
}

export interface ImageDimensions {
  width: number;
  height: number;
}

/**
 * The width and height an image's header declares, read without decoding it: a PNG's IHDR, a JPEG's
 * frame header (SOF0-SOF15). Null for a PDF, or when the header is missing or cut short.
 */
export function imageDimensions(bytes: Uint8Array, type: DocumentType): ImageDimensions | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (type === 'image/png') {
    // Signature (8), then the first chunk, which must be IHDR: length (4), "IHDR", width (4), height (4).
    const isIhdr = bytes.length >= 24 && String.fromCharCode(...bytes.subarray(12, 16)) === 'IHDR';
    return isIhdr ? { width: view.getUint32(16), height: view.getUint32(20) } : null;
  }
  if (type !== 'image/jpeg') return null;
  let at = 2; // after SOI
  while (at + 4 <= bytes.length) {
    if (bytes[at] !== 0xff) return null;
    const marker = bytes[at + 1]!;
    if (marker === 0xff) {
      at++; // fill byte
      continue;
    }
    // Markers without a length: TEM, RST0-7 (SOI and EOI cannot come before a frame header).
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      at += 2;
      continue;
    }
    if (marker === 0xd9 || marker === 0xda) return null; // end of image, or scan data before any frame
    const length = view.getUint16(at + 2);
    // SOFn: C0-CF except DHT (C4), JPG (C8) and DAC (CC). Length, precision (1), height (2), width (2).
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      if (at + 9 > bytes.length) return null;
      return { width: view.getUint16(at + 7), height: view.getUint16(at + 5) };
    }
    if (length < 2) return null;
    at += 2 + length;
  }
  return null;
}

/** Each side of an image is at most this many pixels; the area is bounded by DOCUMENT_MAX_PIXELS. */
export const MAX_IMAGE_SIDE = 30_000;

/**
 * Why an image is too large to decode, or null when its declared size is within the bounds (or cannot be
 * read here: the decoder then judges it). A decoder allocates what the header declares before reading data.
 */
export function oversizedImage(bytes: Uint8Array, type: DocumentType, maxPixels: number): string | null {
  const size = imageDimensions(bytes, type);
  if (!size) return null;
  const { width, height } = size;
  if (width <= MAX_IMAGE_SIDE && height <= MAX_IMAGE_SIDE && width * height <= maxPixels) return null;
  return `the image declares ${width}x${height} pixels; at most ${MAX_IMAGE_SIDE} per side and ${maxPixels} in all are read`;
}

const extensionOf: Record<DocumentType, string> = {
  'image/png': 'png',
  'image/jpeg': 'jpg',
  'application/pdf': 'pdf',
};

/**
 * A name safe to show and to put in Content-Disposition: the last path segment, ASCII letters, digits,
 * dot, dash and underscore only, at most 100 characters, with the extension of the sniffed type.
 */
export function safeFilename(name: string | undefined, type: DocumentType): string {
  const base = (name ?? '').split(/[\\/]/).pop() ?? '';
  const stem = base
    .replace(/\.[A-Za-z0-9]{1,8}$/, '')
    .normalize('NFKD')
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^[._-]+|[._-]+$/g, '')
    .slice(0, 90);
  return `${stem || 'document'}.${extensionOf[type]}`;
}

/** The job that reads an uploaded document; one per document (its jobId), retried with backoff. */
export const OCR_JOB = 'document.ocr';
export const ocrJobId = (documentId: string) => `${OCR_JOB}:${documentId}`;
export const ocrJobOptions = (documentId: string) => ({
  jobId: ocrJobId(documentId),
  attempts: 3,
  backoff: { type: 'exponential' as const, delay: 1000 },
});

export const newDocumentId = () => `DOC-${crypto.randomUUID()}`;
export const documentIdPattern = /^DOC-[0-9a-f-]{36}$/;

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

export interface DocumentMetadata {
  applicationId: string;
  contentType: DocumentType;
  sha256: string;
  uploadedBy: string;
  size: number;
}

export interface StoredDocument {
  id: string;
  filename: string;
  uploadedAt: Date;
  metadata: DocumentMetadata;
}

/**
 * The bucket's own indexes (what the driver would create on its first write) plus the listing of an
 * application's documents in upload order.
 */
export const documentIndexes: IndexPlan[] = [
  {
    collection: DOCUMENT_FILES_COLLECTION,
    indexes: [
      { key: { filename: 1, uploadDate: 1 }, name: 'filename_1_uploadDate_1' },
      { key: { 'metadata.applicationId': 1, uploadDate: 1 }, name: 'by_application' },
    ],
  },
  {
    collection: DOCUMENT_CHUNKS_COLLECTION,
    indexes: [{ key: { files_id: 1, n: 1 }, name: 'files_id_1_n_1', unique: true }],
  },
];

export const documentQueries = {
  byId: (id: string) => ({ _id: id }),
  ofApplication: (applicationId: string) => ({ 'metadata.applicationId': applicationId }),
  uploadOrder: { uploadDate: 1, _id: 1 } as const,
};

function toStored(file: GridFSFile): StoredDocument {
  return {
    id: String(file._id),
    filename: file.filename,
    uploadedAt: file.uploadDate,
    metadata: file.metadata as DocumentMetadata,
  };
}

export interface StoreInput {
  applicationId: string;
  filename: string | undefined;
  bytes: Uint8Array;
  uploadedBy: string;
}

export class Documents {
  readonly bucket: GridFSBucket;
  private readonly db: Db;

  constructor(db: Db) {
    this.db = db;
    this.bucket = new GridFSBucket(db, { bucketName: DOCUMENTS_BUCKET });
  }

  /**
   * Stores the bytes under a new id; the caller has checked the type (sniffDocumentType) and the size.
   * The files entry is written last, after every chunk, so a crash mid-upload leaves no listed document.
   */
  async store(input: StoreInput, type: DocumentType): Promise<StoredDocument> {
    const id = newDocumentId();
    const filename = safeFilename(input.filename, type);
    const metadata: DocumentMetadata = {
      applicationId: input.applicationId,
      contentType: type,
      sha256: await sha256Hex(input.bytes),
      uploadedBy: input.uploadedBy,
      size: input.bytes.byteLength,
    };
    const upload = this.bucket.openUploadStreamWithId(id as never, filename, { metadata });
    await new Promise<void>((resolve, reject) => {
      upload.once('error', reject);
      upload.once('finish', () => resolve());
      upload.end(input.bytes);
    });
    return { id, filename, uploadedAt: upload.gridFSFile?.uploadDate ?? new Date(), metadata };
  }

  async get(id: string): Promise<StoredDocument | null> {
    const file = await this.db
      .collection<GridFSFile>(DOCUMENT_FILES_COLLECTION)
      .findOne(documentQueries.byId(id) as never);
    return file ? toStored(file) : null;
  }

  async listOf(applicationId: string, limit = 200): Promise<StoredDocument[]> {
    const files = await this.db
      .collection<GridFSFile>(DOCUMENT_FILES_COLLECTION)
      .find(documentQueries.ofApplication(applicationId))
      .sort(documentQueries.uploadOrder)
      .limit(limit)
      .toArray();
    return files.map(toStored);
  }

  /** The content as a web stream, chunk by chunk from GridFS. */
  stream(id: string): ReadableStream<Uint8Array> {
    const download = this.bucket.openDownloadStream(id as never);
    const iterator = download[Symbol.asyncIterator]();
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { value, done } = await iterator.next();
          if (done) controller.close();
          else controller.enqueue(new Uint8Array(value as Uint8Array));
        } catch (error) {
          controller.error(error);
        }
      },
      async cancel() {
        await download.abort().catch(() => {});
      },
    });
  }

  /** The whole content (documents are capped at DOCUMENT_MAX_BYTES). */
  async read(id: string): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let size = 0;
    try {
      for await (const chunk of this.bucket.openDownloadStream(id as never)) {
        parts.push(chunk as Uint8Array);
        size += (chunk as Uint8Array).byteLength;
      }
    } catch (error) {
      if ((error as { code?: string }).code === 'ENOENT' || /FileNotFound/i.test(String(error))) {
        throw new NotFoundError(`document ${id} not found`, { cause: error });
      }
      throw error;
    }
    return concatBytes(parts, size);
  }
}

/** The parts of a stream as one array (`size` is their total length). */
export function concatBytes(parts: Uint8Array[], size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.byteLength;
  }
  return bytes;
}
