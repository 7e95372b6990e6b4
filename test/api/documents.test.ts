// Documents over HTTP: upload by magic bytes (not by declared type), size cap without reading past it,
// nothing stored on any refusal, 404/403, the published OCR job, download round trip, the list.
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { DOCUMENT_CHUNKS_COLLECTION, DOCUMENT_FILES_COLLECTION } from '../../shared/loans/documents.ts';
import { exeBytes, formJpeg, formPdf, formPng, htmlBytes } from '../fixtures/documents.ts';
import { createTestApp } from '../support/app.ts';
import { adminsByRole, call } from '../support/http.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
let tokens: Record<Role, string>;
let appId: string;
const MAX = 10 * 1024 * 1024;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app, services } = await createTestApp(database.db));
  ({ tokens } = await adminsByRole(app, services, ['viewer', 'reviewer', 'admin']));
  const created = await call(app, tokens.admin, 'POST', '/api/applications', {
    body: { applicantName: 'Maria Jensen', monthlyIncome: 4250, loanAmount: 18_500, termMonths: 36 },
  });
  expect(created.status).toBe(201);
  appId = created.body._id;
});

afterAll(async () => {
  await database?.close();
});

async function stored() {
  return {
    files: await database.db.collection(DOCUMENT_FILES_COLLECTION).countDocuments(),
    chunks: await database.db.collection(DOCUMENT_CHUNKS_COLLECTION).countDocuments(),
  };
}

function form(bytes: Uint8Array, filename = 'upload.bin', type = 'application/octet-stream', field = 'file') {
  const body = new FormData();
  body.append(field, new File([bytes as Uint8Array<ArrayBuffer>], filename, { type }));
  return body;
}

async function upload(body: FormData | BodyInit, options: { as?: Role; id?: string; headers?: HeadersInit } = {}) {
  const res = await app.request(`/api/applications/${options.id ?? appId}/documents`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tokens[options.as ?? 'reviewer']}`, ...options.headers },
    body,
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}

/** Expects a refusal with `status` and that GridFS holds exactly what it held before. */
async function expectRefused(
  send: () => Promise<{ status: number; body: { error: { code: string } } }>,
  status: number,
) {
  const before = await stored();
  const res = await send();
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body.error.code).toBeTruthy();
  expect(await stored()).toEqual(before);
  return res;
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

describe('upload', () => {
  it('accepts PNG, JPEG and PDF by their magic bytes, stores them with metadata and queues OCR (202)', async () => {
    const cases = [
      { bytes: formPng(), name: 'form.png', type: 'image/png' },
      { bytes: formJpeg(), name: 'form.jpg', type: 'image/jpeg' },
      { bytes: await formPdf(), name: 'form.pdf', type: 'application/pdf' },
    ];
    for (const { bytes, name, type } of cases) {
      const res = await upload(form(bytes, name, 'application/octet-stream'));
      expect(res.status, JSON.stringify(res.body)).toBe(202);
      expect(res.body.documentId).toMatch(/^DOC-/);
      expect(res.body.jobId).toBe(`document.ocr:${res.body.documentId}`);
      expect(res.body.contentType).toBe(type);
      expect(res.headers.get('location')).toBe(`/api/documents/${res.body.documentId}`);
      const file = await database.db.collection(DOCUMENT_FILES_COLLECTION).findOne({ _id: res.body.documentId });
      expect(file?.metadata).toMatchObject({ applicationId: appId, contentType: type, size: bytes.byteLength });
      expect(file?.metadata.sha256).toBe(sha256(bytes));
      expect(file?.metadata.uploadedBy).toBeTruthy();
      const job = await services.queue.getJob(res.body.jobId);
      expect(job).toMatchObject({
        name: 'document.ocr',
        state: 'waiting',
        attempts: 3,
        data: { documentId: res.body.documentId, applicationId: appId },
        backoff: { type: 'exponential', delay: 1000 },
      });
    }
  });

  it('stores a PNG declared as a PDF (header and filename) as a PNG', async () => {
    const res = await upload(form(formPng(), 'statement.pdf', 'application/pdf'));
    expect(res.status).toBe(202);
    expect(res.body.contentType).toBe('image/png');
    const file = await database.db.collection(DOCUMENT_FILES_COLLECTION).findOne({ _id: res.body.documentId });
    expect(file?.metadata.contentType).toBe('image/png');
    expect(file?.filename).toBe('statement.png');
  });

  it('takes a document larger than the JSON body limit (1 MiB) up to DOCUMENT_MAX_BYTES', async () => {
    const bytes = new Uint8Array(3 * 1024 * 1024);
    bytes.set(formPng().subarray(0, 64));
    const res = await upload(form(bytes, 'big.png', 'image/png'));
    expect(res.status).toBe(202);
    const file = await database.db.collection(DOCUMENT_FILES_COLLECTION).findOne({ _id: res.body.documentId });
    expect(file?.length).toBe(bytes.byteLength);
  });

  it('refuses an executable and an HTML page declared as images with 415, storing nothing', async () => {
    await expectRefused(() => upload(form(exeBytes(), 'photo.png', 'image/png')), 415);
    await expectRefused(() => upload(form(htmlBytes(), 'scan.pdf', 'application/pdf')), 415);
    await expectRefused(() => upload(form(new Uint8Array(0), 'empty.png', 'image/png')), 415);
  });

  it('refuses a body that is not multipart with 415, and a multipart body without a file with 400', async () => {
    await expectRefused(
      () => upload(JSON.stringify({ file: 'x' }), { headers: { 'content-type': 'application/json' } }),
      415,
    );
    const noFile = new FormData();
    noFile.append('note', 'no file here');
    await expectRefused(() => upload(noFile), 400);
    await expectRefused(() => upload(form(formPng(), 'a.png', 'image/png', 'document')), 400);
    const two = form(formPng(), 'a.png');
    two.append('file', new File([formPng() as Uint8Array<ArrayBuffer>], 'b.png'));
    await expectRefused(() => upload(two), 400);
    const broken = await expectRefused(
      () => upload('not a multipart body', { headers: { 'content-type': 'multipart/form-data; boundary=xyz' } }),
      400,
    );
    expect(broken.body.error.code).toBe('validation');
  });

  it('refuses a file one byte over DOCUMENT_MAX_BYTES with 413, storing nothing', async () => {
    const bytes = new Uint8Array(MAX + 1);
    bytes.set(formPng().subarray(0, 64));
    const res = await expectRefused(() => upload(form(bytes, 'huge.png', 'image/png')), 413);
    expect(res.body.error.code).toBe('payload_too_large');
  });

  it('stops reading a streamed body (no Content-Length) soon after the cap', async () => {
    const chunk = new Uint8Array(64 * 1024);
    let pulled = 0;
    const boundary = 'capboundary';
    const head = new TextEncoder().encode(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n`,
    );
    let sentHead = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (!sentHead) {
          sentHead = true;
          controller.enqueue(head);
          return;
        }
        if (pulled >= 100 * 1024 * 1024) return controller.close();
        pulled += chunk.byteLength;
        controller.enqueue(chunk);
      },
    });
    const before = await stored();
    const res = await app.request(
      new Request(`http://localhost/api/applications/${appId}/documents`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${tokens.reviewer}`,
          'content-type': `multipart/form-data; boundary=${boundary}`,
        },
        body,
        duplex: 'half',
      } as RequestInit),
    );
    expect(res.status).toBe(413);
    expect(pulled).toBeGreaterThan(MAX);
    expect(pulled).toBeLessThan(MAX + 1024 * 1024);
    expect(await stored()).toEqual(before);
  });

  it('answers 404 for an unknown application and 403 for a viewer, storing nothing', async () => {
    await expectRefused(
      () => upload(form(formPng(), 'a.png'), { id: 'APP-00000000-0000-0000-0000-000000000000' }),
      404,
    );
    await expectRefused(() => upload(form(formPng(), 'a.png'), { as: 'viewer' }), 403);
    const res = await expectRefused(() => upload(form(formPng(), 'a.png'), { id: 'not-an-id' }), 400);
    expect(res.body.error.code).toBe('validation');
  });
});

describe('download and list', () => {
  it('returns the exact bytes with the sniffed type and a safe attachment filename', async () => {
    const bytes = formJpeg();
    const up = await upload(form(bytes, '../../etc/"quoted" name;.png', 'image/png'));
    expect(up.status).toBe(202);
    const res = await app.request(`/api/documents/${up.body.documentId}`, {
      headers: { authorization: `Bearer ${tokens.viewer}` },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/jpeg');
    expect(res.headers.get('content-disposition')).toBe('attachment; filename="quoted_name.jpg"');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const back = new Uint8Array(await res.arrayBuffer());
    expect(back.byteLength).toBe(bytes.byteLength);
    expect(sha256(back)).toBe(sha256(bytes));
    expect(sha256(back)).toBe(up.body.sha256);
  });

  it('shows a document inline for a preview, under a CSP that runs nothing and lets only this origin frame it', async () => {
    const up = await upload(form(formPng(), 'preview.png'));
    expect(up.status).toBe(202);
    const get = (query: string) =>
      app.request(`/api/documents/${up.body.documentId}${query}`, {
        headers: { authorization: `Bearer ${tokens.viewer}` },
      });
    const inline = await get('?disposition=inline');
    expect(inline.status).toBe(200);
    expect(inline.headers.get('content-disposition')).toBe('inline; filename="preview.png"');
    expect(inline.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'self'");
    const download = await get('');
    expect(download.headers.get('content-disposition')).toBe('attachment; filename="preview.png"');
    expect((await get('?disposition=render')).status).toBe(400);
  });

  it('answers 404 for an unknown document and 400 for a malformed id', async () => {
    const missing = await call(app, tokens.viewer, 'GET', `/api/documents/DOC-${crypto.randomUUID()}`);
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('not_found');
    const malformed = await call(app, tokens.viewer, 'GET', '/api/documents/..%2F..%2Fetc');
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.code).toBe('validation');
  });

  it("lists an application's documents in upload order with their OCR state", async () => {
    const created = await call(app, tokens.admin, 'POST', '/api/applications', {
      body: { applicantName: 'List Case', monthlyIncome: 3000, loanAmount: 5000, termMonths: 12 },
    });
    const id = created.body._id as string;
    const first = await upload(form(formPng(), 'one.png'), { id });
    const second = await upload(await formPdf().then((b) => form(b, 'two.pdf')), { id });
    const res = await call(app, tokens.viewer, 'GET', `/api/applications/${id}/documents`);
    expect(res.status).toBe(200);
    expect(res.body.items.map((item: { documentId: string }) => item.documentId)).toEqual([
      first.body.documentId,
      second.body.documentId,
    ]);
    expect(res.body.items[0]).toMatchObject({
      filename: 'one.png',
      contentType: 'image/png',
      ocr: { state: 'waiting', attemptsMade: 0, applied: false },
    });
    expect(res.body.items[1].contentType).toBe('application/pdf');
    const unknown = await call(
      app,
      tokens.viewer,
      'GET',
      '/api/applications/APP-00000000-0000-0000-0000-000000000000/documents',
    );
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('not_found');
  });

  it('keeps the JSON-only rule for every other route', async () => {
    // Every route of the served spec that takes a body, so a route added later is covered too.
    const spec = (await (await app.request('/openapi.json')).json()) as { paths: Record<string, object> };
    const routes = Object.entries(spec.paths).flatMap(([path, methods]) =>
      Object.keys(methods)
        .filter((method) => ['post', 'put', 'patch'].includes(method))
        .map((method) => ({ method: method.toUpperCase(), path: path.replace('{id}', appId) }))
        .filter(({ method, path }) => !(method === 'POST' && path.endsWith('/documents'))),
    );
    expect(routes.map(({ method, path }) => `${method} ${path}`)).toEqual(
      expect.arrayContaining([
        'POST /api/auth/login',
        'POST /api/applications',
        `PUT /api/applications/${appId}`,
        'POST /api/applications/batch-update',
        `POST /api/applications/${appId}/disburse`,
        'POST /api/admins',
        `PATCH /api/admins/${appId}`,
      ]),
    );
    const applications = () => database.db.collection('applications').find().sort({ _id: 1 }).toArray();
    const before = { stored: await stored(), applications: await applications() };
    const multipart = form(formPng(), 'a.png', 'image/png');
    for (const { method, path } of routes) {
      const res = await app.request(path, {
        method,
        headers: { authorization: `Bearer ${tokens.admin}` },
        body: multipart,
      });
      expect(res.status, `${method} ${path}`).toBe(415);
      expect((await res.json()).error.code, `${method} ${path}`).toBe('unsupported_media_type');
    }
    expect({ stored: await stored(), applications: await applications() }).toEqual(before);
  });
});
