// A thousand admins each make one edit at once, each from the version they read a moment before (a read,
// a random pause, a write): with PUT (exact version: any change since the read is a 409) and with PATCH
// (field-level merge: a 409 only when the same path changed since the read), side by side, plus the
// database commands per successful edit, counted exactly with the driver's command monitoring (the
// admin's own read, the writes, the reads a miss costs, audit inserts and jobs; failed edits' commands
// are shared out over the successful ones). "same-path edits" counts the edits no merge can save: another
// admin of the same application edits the same path. Runs against the repositories, not HTTP: the figures are the
// merge's, not the web server's. Starts its own offline server unless MONGO_URL is set.
//
//   npm run bench:merge -- [--admins 1000] [--applications 100] [--pause-ms 20]
import { parseArgs } from 'node:util';
import { type CommandStartedEvent, MongoClient, ObjectId } from 'mongodb';
import { startOfflineServer } from '../scripts/mongo/offline-server.ts';
import { probeFeatures } from '../scripts/mongo/targets.ts';
import { Queue } from '../shared/concurrency/queue/index.ts';
import { sleep, systemClock } from '../shared/core/clock.ts';
import { ConflictError } from '../shared/core/errors.ts';
import {
  type ApplicationPatch,
  ApplicationPatches,
  Applications,
  editableFields,
} from '../shared/loans/applications.ts';

const { values } = parseArgs({
  options: {
    admins: { type: 'string', default: '1000' },
    applications: { type: 'string', default: '100' },
    'pause-ms': { type: 'string', default: '20' },
  },
});
const admins = Number(values.admins);
const applicationCount = Number(values.applications);
const pauseMs = Number(values['pause-ms']);

const server = process.env.MONGO_URL ? null : await startOfflineServer();
const url = process.env.MONGO_URL ?? server!.url;
const { server: serverName } = await probeFeatures(url);
const client = new MongoClient(url, { monitorCommands: true, maxPoolSize: 100 });
const commands = new Map<string, number>();
client.on('commandStarted', (event: CommandStartedEvent) => {
  commands.set(event.commandName, (commands.get(event.commandName) ?? 0) + 1);
});
const db = client.db(`bench_merge_${new ObjectId().toHexString()}`);
const options = { clock: systemClock, queue: new Queue(db) };
const applications = new Applications(db, options);
const patches = new ApplicationPatches(db, options);

/** One admin's edit: the same edit goes through PUT (applicant fields only) or PATCH. */
type Edit = { field: string; value: unknown; patch: ApplicationPatch };

/** A fixed scramble of the admin's number: which field, item or share it picks (the same on every run). */
function pick(n: number, salt: number, of: number): number {
  let h = Math.imul(n ^ (salt * 0x9e3779b9), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return ((h ^ (h >>> 16)) >>> 0) % of;
}

function applicantEdit(n: number): Edit {
  const field = editableFields[pick(n, 1, editableFields.length)]!;
  const value =
    field === 'email'
      ? `a${n}@example.com`
      : field === 'identityNumber'
        ? `ID-${n}`
        : ['monthlyIncome', 'loanAmount'].includes(field)
          ? 1_000 + n
          : field === 'termMonths'
            ? 12 + (n % 100)
            : `value ${n}`;
  return { field, value, patch: { [field]: value } };
}

/** 20 % applicant fields, 30 % one of 20 checklist items, 50 % a new note. */
function mixedEdit(n: number): Edit {
  const roll = pick(n, 2, 10);
  if (roll < 2) return applicantEdit(n);
  if (roll < 5)
    return { field: 'checklist', value: null, patch: { checklist: { [`item-${pick(n, 3, 20)}`]: { done: true } } } };
  return { field: 'notes', value: null, patch: { notes: { [`n-${n}`]: { text: `note ${n}` } } } };
}

interface Row {
  scenario: string;
  edits: number;
  /** Edits of a path another admin of the same application also edits: the 409s no merge can avoid. */
  samePath: number;
  succeeded: number;
  conflicts: number;
  writes: number;
  commands: number;
  seconds: number;
}

/** Edits minus the distinct (application, path) pairs: on each path of each application one edit can win. */
function samePathEdits(editOf: (n: number) => Edit): number {
  const paths = new Set<string>();
  for (let n = 0; n < admins; n++) {
    const edit = editOf(n);
    const [top, inner] = Object.entries(edit.patch)[0]!;
    const key = inner && typeof inner === 'object' ? Object.keys(inner)[0] : '';
    paths.add(`${n % applicationCount}:${top}.${key}`);
  }
  return admins - paths.size;
}

async function run(scenario: string, mode: 'put' | 'patch', editOf: (n: number) => Edit): Promise<Row> {
  const ids: string[] = [];
  for (let i = 0; i < applicationCount; i++) {
    const app = await applications.create(
      { applicantName: `Applicant ${i}`, monthlyIncome: 5_000, loanAmount: 20_000, termMonths: 36 },
      { id: 'bench-creator' },
    );
    ids.push(app._id);
  }
  commands.clear();
  let succeeded = 0;
  let conflicts = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: admins }, async (_, n) => {
      const id = ids[n % ids.length]!;
      const actor = { id: `admin-${n}` };
      const read = await applications.get(id);
      await sleep(Math.random() * pauseMs);
      const edit = editOf(n);
      try {
        if (mode === 'put') {
          await applications.update(id, { fields: { [edit.field]: edit.value } }, { version: read!.version }, actor);
        } else {
          await patches.patch(id, edit.patch, { version: read!.version, from: 'body' }, actor);
        }
        succeeded++;
      } catch (error) {
        if (!(error instanceof ConflictError)) throw error;
        conflicts++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const total = [...commands.values()].reduce((sum, count) => sum + count, 0);
  const writes = (commands.get('findAndModify') ?? 0) + (commands.get('update') ?? 0);
  return {
    scenario,
    edits: admins,
    samePath: samePathEdits(editOf),
    succeeded,
    conflicts,
    writes,
    commands: total,
    seconds,
  };
}

try {
  const rows = [
    await run('PUT, applicant fields', 'put', applicantEdit),
    await run('PATCH, applicant fields', 'patch', applicantEdit),
    await run('PATCH, mixed: 20% fields, 30% checklist, 50% notes', 'patch', mixedEdit),
  ];
  const pct = (part: number, whole: number) => `${((100 * part) / whole).toFixed(1)} %`;
  console.log(
    `\n${admins} admins, one edit each, on ${applicationCount} applications (${admins / applicationCount} per application), ` +
      `each written 0-${pauseMs} ms after its read; ${serverName}\n`,
  );
  console.log(
    '| scenario | edits | same-path edits | succeeded | 409 | conflict rate | conditional writes | commands per successful edit | seconds |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const row of rows) {
    console.log(
      `| ${row.scenario} | ${row.edits} | ${row.samePath} | ${row.succeeded} | ${row.conflicts} | ${pct(row.conflicts, row.edits)} | ` +
        `${row.writes} | ${(row.commands / Math.max(1, row.succeeded)).toFixed(2)} | ${row.seconds.toFixed(1)} |`,
    );
  }
  console.log(`\nnpm run bench:merge -- --admins ${admins} --applications ${applicationCount} --pause-ms ${pauseMs}`);
} finally {
  await db.dropDatabase().catch(() => {});
  await client.close();
  await server?.stop();
}
