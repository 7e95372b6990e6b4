// The change log PATCH merges against holds one entry per version, whoever wrote it: create, PUT (fields
// and status), a document upload, the OCR result, the approval worker's recommendation and repayment plan,
// a batch move and both disbursement steps each push exactly one entry, with its head, in the write that
// bumps the version. So a PATCH from any of those versions merges over them, or collides with them.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createLogger } from '../../api/log.ts';
import { MERGE_PATCH_TYPE } from '../../api/routes/application-patch.ts';
import {
  APPLICATIONS_COLLECTION,
  type ApplicationDoc,
  isConsistentLog,
  versionedLog,
} from '../../shared/loans/applications.ts';
import { handleApproval } from '../../workers/approval/handler.ts';
import { ocrQueries } from '../../workers/ocr/handler.ts';
import { formPng } from '../fixtures/documents.ts';
import { openApiSuite } from '../support/app.ts';
import { sampleApplication } from '../support/applications.ts';

let suite: Awaited<ReturnType<typeof openApiSuite>>;

beforeAll(async () => {
  suite = await openApiSuite(import.meta.filename, { APPROVAL_AUTO_DECIDE: 'false' });
});
afterAll(() => suite.database.close());

const stored = async (id: string) =>
  (await suite.database.db.collection<ApplicationDoc>(APPLICATIONS_COLLECTION).findOne({ _id: id })) as ApplicationDoc;

/** The log holds every version since creation, each entry where its version says, the head last. */
async function expectWholeLog(id: string, lastPaths: string[]): Promise<ApplicationDoc> {
  const doc = await stored(id);
  expect(isConsistentLog(doc)).toBe(true);
  expect(doc.changes).toHaveLength(doc.version);
  expect(doc.changeHead).toBe(doc.changes?.at(-1)?.id);
  expect(
    versionedLog(doc)
      .at(-1)
      ?.paths.map((change) => change.path),
  ).toEqual(lastPaths);
  return doc;
}

const workerContext = () => ({
  db: suite.database.db,
  clock: suite.services.clock,
  queue: suite.services.queue,
  logger: createLogger('silent'),
  config: suite.config,
});

it('every writer of an application logs exactly one entry per version', async () => {
  const created = await suite.call('POST', '/api/applications', { as: 'reviewer', body: sampleApplication() });
  const id = created.body._id as string;
  await expectWholeLog(id, []);

  expect((await suite.call('PUT', `/api/applications/${id}`, { body: { version: 1, purpose: 'a car' } })).status).toBe(
    200,
  );
  await expectWholeLog(id, ['purpose']);

  const form = new FormData();
  form.append('file', new File([formPng() as Uint8Array<ArrayBuffer>], 'form.png', { type: 'image/png' }));
  const upload = await suite.app.request(`/api/applications/${id}/documents`, {
    method: 'POST',
    headers: { authorization: `Bearer ${suite.tokens.reviewer}` },
    body: form,
  });
  expect(upload.status).toBe(202);
  await expectWholeLog(id, ['documents']);

  const record = { documentId: 'DOC-1', at: new Date() } as Parameters<typeof ocrQueries.store>[0];
  const before = await stored(id);
  await suite.database.db
    .collection<ApplicationDoc>(APPLICATIONS_COLLECTION)
    .updateOne(ocrQueries.writable(id, before.version) as never, ocrQueries.store(record, before.version + 1) as never);
  await expectWholeLog(id, ['ocr']);

  const moved = await suite.call('PUT', `/api/applications/${id}`, {
    as: 'reviewer',
    body: { version: 4, status: 'under_review' },
  });
  expect(moved.status).toBe(200);
  const review = await expectWholeLog(id, ['status']);
  expect(versionedLog(review).at(-1)?.paths[0]).toMatchObject({ old: 'pending', new: 'under_review' });

  await handleApproval(
    { id: 'j1', name: 'application.score', data: { applicationId: id } } as never,
    new AbortController().signal,
    workerContext(),
  );
  await expectWholeLog(id, ['recommendation']);

  const batch = await suite.call('POST', '/api/applications/batch-update', {
    as: 'approver',
    body: { applicationIds: [id], status: 'approved' },
  });
  expect(batch.body.counts.updated).toBe(1);
  await expectWholeLog(id, ['status']);

  await handleApproval(
    { id: 'j2', name: 'application.approved', data: { applicationId: id } } as never,
    new AbortController().signal,
    workerContext(),
  );
  await expectWholeLog(id, ['repaymentPlan']);

  const disbursed = await suite.call('POST', `/api/applications/${id}/disburse`, {
    as: 'disburser',
    headers: { 'idempotency-key': crypto.randomUUID() },
  });
  expect(disbursed.status).toBe(200);
  const done = await expectWholeLog(id, ['status', 'disbursement']);
  const log = versionedLog(done);
  expect(log.at(-2)?.paths.map((change) => change.path)).toEqual(['disbursement']);
  // Audit and log agree version by version.
  const audit = await suite.database.db.collection('audit').find({ applicationId: id }).sort({ version: 1 }).toArray();
  for (const entry of audit) expect(log.find((logged) => logged.version === entry.version)).toBeDefined();
});

it('a PATCH from before a worker write merges over it and names it', async () => {
  const created = await suite.call('POST', '/api/applications', { as: 'reviewer', body: sampleApplication() });
  const id = created.body._id as string;
  const before = await stored(id);
  await suite.database.db
    .collection<ApplicationDoc>(APPLICATIONS_COLLECTION)
    .updateOne(
      ocrQueries.writable(id, 1) as never,
      ocrQueries.store({ documentId: 'DOC-2', at: new Date() } as never, 2) as never,
    );
  const merged = await suite.call('PATCH', `/api/applications/${id}`, {
    body: { baseVersion: before.version, contact: { email: 'a@example.com' } },
    headers: { 'content-type': MERGE_PATCH_TYPE },
  });
  expect(merged.status).toBe(200);
  expect(merged.body.mergedOver).toEqual([{ version: 2, by: 'ocr-worker', at: expect.any(String), paths: ['ocr'] }]);
  expect(merged.body.ocr).toMatchObject({ documentId: 'DOC-2' });
});
