// The upload refuses an image whose header declares more pixels than DOCUMENT_MAX_PIXELS (or a side over
// MAX_IMAGE_SIDE) with 422 image_too_large, before storing anything or queueing OCR.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JOBS_COLLECTION } from '../../shared/concurrency/queue/index.ts';
import { DOCUMENT_FILES_COLLECTION, MAX_IMAGE_SIDE } from '../../shared/loans/documents.ts';
import { formPng } from '../fixtures/documents.ts';
import { jpegDeclaring, pngDeclaring } from '../fixtures/image-headers.ts';
import { createTestApp } from '../support/app.ts';
import { adminsByRole, call } from '../support/http.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
});
afterAll(() => database?.close());

async function setUp(overrides: Record<string, string> = {}) {
  const { app, services } = await createTestApp(database.db, overrides);
  const { tokens } = await adminsByRole(app, services, ['admin']);
  const created = await call(app, tokens.admin, 'POST', '/api/applications', {
    body: { applicantName: 'Maria Jensen', monthlyIncome: 4250, loanAmount: 18_500, termMonths: 36 },
  });
  const upload = async (bytes: Uint8Array, name: string) => {
    const body = new FormData();
    body.append('file', new File([bytes as Uint8Array<ArrayBuffer>], name));
    const res = await app.request(`/api/applications/${created.body._id}/documents`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens.admin}` },
      body,
    });
    return { status: res.status, body: await res.json() };
  };
  return { app, upload };
}

const counts = async () => ({
  files: await database.db.collection(DOCUMENT_FILES_COLLECTION).countDocuments(),
  jobs: await database.db.collection(JOBS_COLLECTION).countDocuments({ name: 'document.ocr' }),
});

describe('upload of an image declaring huge dimensions', () => {
  it('answers 422 image_too_large for a tiny PNG declaring 100000x100000 and a JPEG declaring 65000x64000, storing nothing', async () => {
    const { upload } = await setUp();
    const before = await counts();
    const png = pngDeclaring(100_000, 100_000);
    expect(png.length).toBeLessThan(1024);
    for (const [bytes, name, size] of [
      [png, 'bomb.png', '100000x100000'],
      [jpegDeclaring(65_000, 64_000), 'bomb.jpg', '65000x64000'],
      [pngDeclaring(MAX_IMAGE_SIDE + 1, 10), 'strip.png', `${MAX_IMAGE_SIDE + 1}x10`],
    ] as const) {
      const res = await upload(bytes, name);
      expect(res.status, name).toBe(422);
      expect(res.body.error.code).toBe('image_too_large');
      expect(res.body.error.message).toContain(size);
      expect(res.body.error.details).toEqual({ maxPixels: 40_000_000, maxSide: MAX_IMAGE_SIDE });
    }
    expect(await counts()).toEqual(before);
    // A real scan-sized form still goes through.
    expect((await upload(formPng(), 'form.png')).status).toBe(202);
  });

  it('takes its bound from DOCUMENT_MAX_PIXELS, and the spec lists the 422', async () => {
    const { app, upload } = await setUp({ DOCUMENT_MAX_PIXELS: '10000' });
    const res = await upload(formPng(), 'form.png');
    expect(res.status).toBe(422);
    expect(res.body.error.details.maxPixels).toBe(10_000);
    expect((await upload(pngDeclaring(100, 100), 'small.png')).status).toBe(202);
    const spec = await (await app.request('/openapi.json')).json();
    expect(spec.paths['/api/applications/{id}/documents'].post.responses['422'].description).toMatch(/image_too_large/);
  });
});
