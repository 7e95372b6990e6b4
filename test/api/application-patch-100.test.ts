// A hundred admins patch one application at once from the same base version, over HTTP. Each on a path of
// its own (applicant fields, contact details, one review checklist item each): all succeed, every value
// holds, the version rises by 100 and the audit trail has one entry per version in the change log's order.
// All on the same field: exactly one succeeds, the other 99 get 409 naming that field and the winner's value.
import { type CommandStartedEvent, MongoClient } from 'mongodb';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import { MERGE_PATCH_TYPE } from '../../api/routes/application-patch.ts';
import type { Services } from '../../api/services.ts';
import { APPLICATIONS_COLLECTION, type ApplicationDoc, versionedLog } from '../../shared/loans/applications.ts';
import { createTestApp } from '../support/app.ts';
import { sampleApplication } from '../support/applications.ts';
import { call, TEST_PASSWORD } from '../support/http.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const ADMINS = 100;
let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
const admins: { id: string; token: string }[] = [];
/** The app's own client, watched: conditional writes on applications are counted. */
let watched: MongoClient;
let applicationWrites = 0;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  watched = new MongoClient(mongoUrl(), { monitorCommands: true, maxPoolSize: 100 });
  watched.on('commandStarted', (event: CommandStartedEvent) => {
    if (event.commandName === 'findAndModify' && event.command.findAndModify === APPLICATIONS_COLLECTION) {
      applicationWrites++;
    }
  });
  // Room for a hundred requests at once on one instance.
  ({ app, services } = await createTestApp(watched.db(database.name), {
    MAX_IN_FLIGHT: '256',
    RATE_LIMIT_PER_MINUTE: '10000',
  }));
  for (let n = 0; n < ADMINS; n++) {
    const email = `reviewer-${n}@example.com`;
    const { _id } = await services.admins.create({ email, password: TEST_PASSWORD, roles: ['reviewer'] });
    const res = await call(app, undefined, 'POST', '/api/auth/login', { body: { email, password: TEST_PASSWORD } });
    admins.push({ id: _id, token: res.body.accessToken });
  }
}, 120_000);
afterAll(async () => {
  await watched.close();
  await database.close();
});

async function createOne(): Promise<string> {
  const res = await call(app, admins[0]!.token, 'POST', '/api/applications', { body: sampleApplication() });
  expect(res.status).toBe(201);
  return res.body._id;
}

const patch = (n: number, id: string, body: unknown) =>
  call(app, admins[n]!.token, 'PATCH', `/api/applications/${id}`, {
    body,
    headers: { 'content-type': MERGE_PATCH_TYPE, 'if-match': '"1"' },
  });

/** A hundred distinct paths: seven applicant fields, three contact details, ninety checklist items. */
function disjointPatch(n: number): { path: string; body: Record<string, unknown>; value: unknown } {
  const applicant: [string, unknown][] = [
    ['applicantName', 'Ada Lovelace'],
    ['email', 'ada@example.com'],
    ['monthlyIncome', 7_000],
    ['loanAmount', 25_000],
    ['termMonths', 48],
    ['purpose', 'a bicycle'],
    ['identityNumber', 'ID-1234'],
  ];
  if (n < applicant.length) {
    const [path, value] = applicant[n]!;
    return { path, body: { [path]: value }, value };
  }
  const contact: [string, string][] = [
    ['phone', '+44 20 7946 0000'],
    ['email', 'ada@home.example'],
    ['address', '12 Analytical Row'],
  ];
  if (n < applicant.length + contact.length) {
    const [field, value] = contact[n - applicant.length]!;
    return { path: `contact.${field}`, body: { contact: { [field]: value } }, value };
  }
  const item = `item-${n}`;
  return { path: `checklist.${item}`, body: { checklist: { [item]: { done: n % 2 === 0 } } }, value: n % 2 === 0 };
}

it('a hundred disjoint patches from one base all land, with one audit entry per version in order', async () => {
  const id = await createOne();
  const patches = Array.from({ length: ADMINS }, (_, n) => disjointPatch(n));
  expect(new Set(patches.map((p) => p.path)).size).toBe(ADMINS);
  applicationWrites = 0;
  const replies = await Promise.all(patches.map((p, n) => patch(n, id, p.body)));
  expect(replies.map((res) => res.status)).toEqual(Array(ADMINS).fill(200));
  // One conditional write each: a patch's filter names what it touches, not the version, so none retried.
  expect(applicationWrites).toBe(ADMINS);
  // Every write produced its own version, and each merged over exactly the ones before it.
  const versions = replies.map((res) => res.body.version as number).sort((a, b) => a - b);
  expect(versions).toEqual(Array.from({ length: ADMINS }, (_, n) => n + 2));
  for (const res of replies) expect(res.body.mergedOver).toHaveLength(res.body.version - 2);

  const doc = (await database.db
    .collection<ApplicationDoc>(APPLICATIONS_COLLECTION)
    .findOne({ _id: id })) as ApplicationDoc;
  expect(doc.version).toBe(1 + ADMINS);
  for (const p of patches) {
    const [top, key] = p.path.split('.') as [keyof ApplicationDoc, string | undefined];
    const stored = key === undefined ? doc[top] : (doc[top] as Record<string, unknown>)[key];
    if (top === 'checklist') expect(stored).toMatchObject({ done: p.value });
    else expect(stored).toEqual(p.value);
  }

  const history = await services.db.collection('audit').find({ applicationId: id }).sort({ version: 1 }).toArray();
  expect(history.map((entry) => entry.version)).toEqual(Array.from({ length: ADMINS + 1 }, (_, n) => n + 1));
  // The audit entry of each version is the change the log holds for that version: same admin, same path.
  const log = new Map(versionedLog(doc).map((entry) => [entry.version, entry]));
  for (const entry of history.slice(1)) {
    const logged = log.get(entry.version)!;
    expect(entry.actor).toBe(logged.by);
    expect(entry.fields).toEqual(logged.paths.map((change) => change.path));
  }
  expect(new Set(history.slice(1).map((entry) => entry.actor)).size).toBe(ADMINS);
}, 120_000);

it('a hundred patches of one field from one base: one lands, 99 get 409 naming it and the winner', async () => {
  const id = await createOne();
  const phone = (n: number) => `+1 555 ${String(n).padStart(4, '0')}`;
  const replies = await Promise.all(
    Array.from({ length: ADMINS }, (_, n) => patch(n, id, { contact: { phone: phone(n) } })),
  );
  const won = replies.filter((res) => res.status === 200);
  const lost = replies.filter((res) => res.status === 409);
  expect(won).toHaveLength(1);
  expect(lost).toHaveLength(ADMINS - 1);
  const winner = won[0]!.body;
  expect(winner.version).toBe(2);
  const winnerIndex = replies.indexOf(won[0]!);
  for (const res of lost) {
    expect(res.body.error.code).toBe('merge_conflict');
    expect(res.body.error.details.conflicts).toEqual([
      expect.objectContaining({
        path: 'contact.phone',
        theirs: winner.contact.phone,
        by: admins[winnerIndex]!.id,
        version: 2,
      }),
    ]);
  }
  const doc = (await call(app, admins[0]!.token, 'GET', `/api/applications/${id}`)).body;
  expect(doc).toMatchObject({ version: 2, contact: { phone: phone(winnerIndex) } });
}, 120_000);
