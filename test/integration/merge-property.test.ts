// Field-level merge against a sequential model, on the real database: random patches, disjoint and
// overlapping, from random recent bases, several at once. Every accepted patch is one a sequential
// server would accept in the order of the versions they produced (nothing it overlaps landed between its
// base and its own version); every refusal names real overlaps, with the value that was set; the final
// document is the model's. A seeded generator (named in every failure) makes the patches reproducible; their
// interleaving is the database's. This test found that the offline server can show a read the new log entry
// beside the old version (history.ts: isConsistentLog, and the reads again).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Queue } from '../../shared/concurrency/queue/index.ts';
import { systemClock } from '../../shared/core/clock.ts';
import { ConflictError } from '../../shared/core/errors.ts';
import {
  type ApplicationPatch,
  ApplicationPatches,
  Applications,
  type ApplicationsOptions,
  leavesOf,
  type MergeConflict,
  overlaps,
} from '../../shared/loans/applications.ts';
import { AuditLog } from '../../shared/loans/audit.ts';
import { ocrQueries } from '../../workers/ocr/handler.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
let options: ApplicationsOptions;
const actor = (n: number) => ({ id: `ADM-${n}` });
const applicant = { applicantName: 'Ada', monthlyIncome: 5_000, loanAmount: 20_000, termMonths: 36 };

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  options = { clock: systemClock, queue: new Queue(database.db) };
});
afterAll(() => database.close());

/** mulberry32: a small seeded generator, so a failing run can be replayed from its seed. */
function generator(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { int, pick: <T>(items: readonly T[]) => items[int(items.length)]! };
}

/** The parts of a patch the generator draws from: fields, fields inside objects, whole objects, deletions. */
const pieces: ((n: number) => ApplicationPatch)[] = [
  (n) => ({ purpose: `purpose ${n}` }),
  (n) => ({ contact: { phone: `+1 555 ${String(n).padStart(4, '0')}` } }),
  () => ({ contact: { phone: null } }),
  (n) => ({ contact: { email: `a${n}@example.com` } }),
  () => ({ contact: null }),
  (n) => ({ notes: { a: { text: `note a ${n}` } } }),
  (n) => ({ notes: { b: { text: `note b ${n}` } } }),
  () => ({ notes: { a: null } }),
  () => ({ notes: null }),
  (n) => ({ checklist: { x: { done: n % 2 === 0 } } }),
  (n) => ({ checklist: { y: { done: n % 3 === 0 } } }),
];

/** One or two pieces whose paths do not overlap each other (one patch cannot set `contact` and `contact.phone`). */
function randomPatch(random: ReturnType<typeof generator>, n: number): ApplicationPatch {
  const first = random.pick(pieces)(n);
  const second = random.pick(pieces)(n);
  const paths = (patch: ApplicationPatch) => leavesOf(patch).map((leaf) => leaf.path.split('.')[0]);
  return paths(first).some((path) => paths(second).includes(path)) ? first : { ...first, ...second };
}

/** RFC 7396 on the model: set or delete each leaf, notes and checklist entries as the client sent them. */
function applyToModel(model: Record<string, unknown>, patch: ApplicationPatch): void {
  for (const leaf of leavesOf(patch)) {
    const [top, key] = leaf.path.split('.') as [string, string | undefined];
    if (key === undefined) {
      if (leaf.value === null) delete model[top];
      else model[top] = leaf.value;
      continue;
    }
    if (model[top] === undefined) model[top] = {};
    const inner = model[top] as Record<string, unknown>;
    if (leaf.value === null) delete inner[key];
    else inner[key] = leaf.value;
  }
}

/** The merge-able parts of a stored document, without the server's stamps and empty objects. */
function comparable(doc: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const top of ['purpose', 'contact', 'notes', 'checklist']) {
    const value = doc[top];
    if (value === undefined || value === null) continue;
    if (typeof value !== 'object') {
      out[top] = value;
      continue;
    }
    const entries = Object.entries(value as Record<string, unknown>).map(([key, entry]) => {
      if (entry && typeof entry === 'object') {
        const { by: _by, at: _at, ...rest } = entry as Record<string, unknown>;
        return [key, rest];
      }
      return [key, entry];
    });
    if (entries.length > 0) out[top] = Object.fromEntries(entries);
  }
  return out;
}

interface Accepted {
  base: number;
  version: number;
  paths: string[];
  patch: ApplicationPatch;
  values: Map<string, unknown>;
}

async function run(seed: number): Promise<void> {
  const random = generator(seed);
  const applications = new Applications(database.db, options);
  const patches = new ApplicationPatches(database.db, options);
  const { _id: id } = await applications.create(applicant, actor(0));
  const accepted = new Map<number, Accepted>();
  const refused: { base: number; conflicts: MergeConflict[]; paths: string[] }[] = [];
  let latest = 1;
  let n = 0;
  for (let batch = 0; batch < 10; batch++) {
    const size = 2 + random.int(7);
    const drawn = Array.from({ length: size }, () => {
      n++;
      const patch = randomPatch(random, n);
      return { patch, base: Math.max(1, latest - random.int(5)), who: actor(n) };
    });
    const outcomes = await Promise.allSettled(
      drawn.map((p) => patches.patch(id, p.patch, { version: p.base, from: 'body' }, p.who)),
    );
    outcomes.forEach((outcome, index) => {
      const { patch, base } = drawn[index]!;
      const paths = leavesOf(patch).map((leaf) => leaf.path);
      if (outcome.status === 'fulfilled') {
        const version = outcome.value.app.version;
        expect(accepted.has(version), `seed ${seed}: version ${version} produced twice`).toBe(false);
        const values = new Map(leavesOf(patch).map((leaf) => [leaf.path, leaf.value]));
        accepted.set(version, { base, version, paths, patch, values });
        latest = Math.max(latest, version);
        return;
      }
      const error = outcome.reason;
      expect(error, `seed ${seed}: ${String(error)}`).toBeInstanceOf(ConflictError);
      expect((error as ConflictError).code, `seed ${seed}`).toBe('merge_conflict');
      refused.push({
        base,
        conflicts: (error as ConflictError & { details: { conflicts: MergeConflict[] } }).details.conflicts,
        paths,
      });
    });
  }
  // Every accepted patch: nothing it overlaps was accepted between its base and the version it produced.
  for (const change of accepted.values()) {
    for (let version = change.base + 1; version < change.version; version++) {
      const between = accepted.get(version);
      expect(between, `seed ${seed}: version ${version} missing`).toBeDefined();
      const clash = between!.paths.some((theirs) => change.paths.some((ours) => overlaps(ours, theirs)));
      expect(clash, `seed ${seed}: v${change.version} (base ${change.base}) merged over v${version}`).toBe(false);
    }
  }
  // Every refusal names real overlaps: a change accepted after its base, on an overlapping path, with its value.
  for (const refusal of refused) {
    expect(refusal.conflicts.length, `seed ${seed}`).toBeGreaterThan(0);
    for (const conflict of refusal.conflicts) {
      const theirs = accepted.get(conflict.version);
      expect(conflict.version, `seed ${seed}`).toBeGreaterThan(refusal.base);
      expect(theirs?.paths, `seed ${seed}`).toContain(conflict.theirPath);
      expect(refusal.paths, `seed ${seed}`).toContain(conflict.path);
      expect(overlaps(conflict.path, conflict.theirPath), `seed ${seed}`).toBe(true);
      const value = theirs!.values.get(conflict.theirPath);
      if (value === null) expect(conflict.theirs, `seed ${seed}`).toBeUndefined();
      else expect(conflict.theirs, `seed ${seed}`).toMatchObject(value as object);
    }
  }
  // The document is the model's: the accepted patches applied one after the other, in version order.
  const model: Record<string, unknown> = {};
  const ordered = [...accepted.values()].sort((a, b) => a.version - b.version);
  for (const change of ordered) applyToModel(model, change.patch);
  const stored = (await applications.get(id)) as unknown as Record<string, unknown>;
  expect(stored.version, `seed ${seed}`).toBe(1 + accepted.size);
  expect(comparable(stored), `seed ${seed}`).toEqual(comparable(model));
  expect(refused.length + accepted.size, `seed ${seed}`).toBe(n);
}

describe('random patches against a sequential model', () => {
  const seeds = Array.from({ length: 40 }, (_, index) => 7_919 * (index + 1));
  it.each(seeds)(
    'seed %i',
    async (seed) => {
      await run(seed);
    },
    60_000,
  );
});

describe('the change log', () => {
  it('refuses a base older than the kept versions with merge_base_too_old', async () => {
    const short = { ...options, historyVersions: 3 };
    const applications = new Applications(database.db, short);
    const patches = new ApplicationPatches(database.db, short);
    const { _id: id } = await applications.create(applicant, actor(0));
    for (let version = 1; version <= 4; version++) {
      await patches.patch(id, { purpose: `p${version}` }, { version, from: 'body' }, actor(version));
    }
    // Version 5 keeps the changes that made versions 3, 4 and 5: base 2 still merges, base 1 does not.
    const merged = await patches.patch(id, { notes: { a: { text: 'x' } } }, { version: 2, from: 'body' }, actor(9));
    expect(merged.mergedOver.map((change) => change.version)).toEqual([3, 4, 5]);
    const old = await patches
      .patch(id, { checklist: { x: { done: true } } }, { version: 2, from: 'body' }, actor(9))
      .catch((error: unknown) => error);
    expect(old).toBeInstanceOf(ConflictError);
    expect(old).toMatchObject({
      code: 'merge_base_too_old',
      details: { baseVersion: 2, oldestMergeableBase: 3, version: 6 },
    });
  });

  it('lets a replay tell the version of a merged change though a later write did not name one', async () => {
    const applications = new Applications(database.db, options);
    const patches = new ApplicationPatches(database.db, options);
    const audit = new AuditLog(database.db);
    const { _id: id } = await applications.create(applicant, actor(0));
    const { app } = await patches.patch(id, { purpose: 'replayed' }, { version: 1, from: 'body' }, actor(5));
    // An OCR result lands after it (its own log entry, no lastChange), then the merge's audit entry is lost.
    const record = { documentId: 'DOC-1', at: new Date() } as Parameters<typeof ocrQueries.store>[0];
    await database.db.collection('applications').updateOne({ _id: id as never }, ocrQueries.store(record, 3) as never);
    await audit.collection.deleteOne({ _id: `${id}:2` });
    await applications.replayChanges({ marginMs: 0 });
    const history = await audit.history(id);
    expect(app.version).toBe(2);
    expect(history.find((entry) => entry.version === 2)).toMatchObject({ actor: 'ADM-5', fields: ['purpose'] });
    expect(history.find((entry) => entry.version === 3)).toBeUndefined();
  });
});
