// Text out of a document: images through tesseract.js with the English model installed from npm
// (@tesseract.js-data/eng, read from disk: no network at run time), PDFs through pdf.js's text layer.
// One tesseract worker per process, created once (it costs a few hundred ms to seconds) and reused.
import { createRequire } from 'node:module';
import { getDocument } from 'pdfjs-dist/legacy/build/pdf.mjs';
import Tesseract from 'tesseract.js';
import { configSchema } from '../../shared/core/config.ts';
import { UnreadableDocumentError } from '../../shared/core/errors.ts';
import { type DocumentType, oversizedImage } from '../../shared/loans/documents.ts';
import { type Line, linesFromText } from './extract.ts';

export interface Recognition {
  source: 'ocr' | 'pdf-text';
  text: string;
  lines: Line[];
  /** Pages read (1 for an image). */
  pages: number;
}

const require = createRequire(import.meta.url);
const englishModel = require('@tesseract.js-data/eng') as { code: string; gzip: boolean; langPath: string };

/** A PDF with more pages than this is read up to here: a loan form is a page or two. */
export const MAX_PDF_PAGES = 20;

export class Recognizer {
  /** Images whose header declares more pixels are refused unread (DOCUMENT_MAX_PIXELS). */
  maxImagePixels: number = configSchema.shape.DOCUMENT_MAX_PIXELS.parse(undefined);
  private worker: Promise<Tesseract.Worker> | null = null;
  /** Tesseract runs one recognition at a time; callers queue here instead of inside the worker. */
  private queue: Promise<unknown> = Promise.resolve();

  /** Creates the tesseract worker now rather than on the first image (for a worker's readiness). */
  async start(): Promise<void> {
    await this.tesseract();
  }

  private tesseract(): Promise<Tesseract.Worker> {
    this.worker ??= Tesseract.createWorker(englishModel.code, Tesseract.OEM.LSTM_ONLY, {
      langPath: englishModel.langPath,
      gzip: englishModel.gzip,
      cacheMethod: 'none',
      // A crashed tesseract thread is replaced on the next image.
      errorHandler: () => {
        this.worker = null;
      },
    }).catch((error: unknown) => {
      this.worker = null;
      throw new Error(`cannot start tesseract: ${String(error)}`);
    });
    return this.worker;
  }

  async recognize(bytes: Uint8Array, type: DocumentType): Promise<Recognition> {
    if (type === 'application/pdf') return readPdfText(bytes);
    // Before tesseract, which sizes its buffers by what the header declares: a tiny file declaring
    // 100000x100000 would have it try to allocate 10^10 pixels in the one thread every image waits for.
    const oversized = oversizedImage(bytes, type, this.maxImagePixels);
    if (oversized) throw new UnreadableDocumentError(oversized);
    const recognition = this.queue.then(() => this.recognizeImage(bytes));
    this.queue = recognition.catch(() => {});
    return recognition;
  }

  private async recognizeImage(bytes: Uint8Array): Promise<Recognition> {
    const worker = await this.tesseract();
    let page: Tesseract.Page;
    try {
      ({ data: page } = await worker.recognize(Buffer.from(bytes), {}, { text: true, blocks: true }));
    } catch (error) {
      // tesseract rejects with a string when the image cannot be decoded.
      throw new UnreadableDocumentError(`the image could not be read: ${String(error)}`, undefined, { cause: error });
    }
    const lines: Line[] = [];
    for (const block of page.blocks ?? []) {
      for (const paragraph of block.paragraphs) {
        for (const line of paragraph.lines) {
          lines.push({ words: line.words.map((word) => ({ text: word.text, confidence: word.confidence })) });
        }
      }
    }
    return { source: 'ocr', text: page.text ?? '', lines, pages: 1 };
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = null;
    if (worker) await (await worker.catch(() => null))?.terminate();
  }
}

interface TextItem {
  str: string;
  hasEOL?: boolean;
  transform?: number[];
}

/** The text layer of a PDF, line by line; throws UnreadableDocumentError when there is none. */
export async function readPdfText(bytes: Uint8Array): Promise<Recognition> {
  // pdf.js takes ownership of (detaches) the buffer it is given: hand it a copy.
  const task = getDocument({
    data: bytes.slice(),
    disableFontFace: true,
    useSystemFonts: false,
    verbosity: 0,
  });
  try {
    let pdf: Awaited<typeof task.promise>;
    try {
      pdf = await task.promise;
    } catch (error) {
      const reason = (error as Error).message ?? String(error);
      throw new UnreadableDocumentError(`the PDF could not be opened: ${reason}`, undefined, { cause: error });
    }
    const pages = Math.min(pdf.numPages, MAX_PDF_PAGES);
    const lines: string[] = [];
    for (let number = 1; number <= pages; number++) {
      const content = await (await pdf.getPage(number)).getTextContent();
      let current = '';
      let lastY: number | undefined;
      for (const item of content.items as TextItem[]) {
        if (typeof item.str !== 'string') continue;
        const y = item.transform?.[5];
        // A jump in the baseline starts a new line even without an end-of-line mark.
        if (lastY !== undefined && y !== undefined && Math.abs(y - lastY) > 2 && current.trim()) {
          lines.push(current);
          current = '';
        }
        current += item.str;
        lastY = y;
        if (item.hasEOL) {
          lines.push(current);
          current = '';
        }
      }
      if (current.trim()) lines.push(current);
    }
    const text = lines.join('\n').trim();
    if (!text) {
      throw new UnreadableDocumentError(
        'the PDF has no text layer (a scan?): only PDFs with text are read, send the scan as PNG or JPEG',
      );
    }
    return { source: 'pdf-text', text, lines: linesFromText(text), pages };
  } finally {
    await task.destroy().catch(() => {});
  }
}

let shared: Recognizer | null = null;

/** The process's recognizer: one tesseract worker, reused by every job. */
export function sharedRecognizer(): Recognizer {
  shared ??= new Recognizer();
  return shared;
}
