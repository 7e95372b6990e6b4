import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Collection, ObjectId } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkpointId,
  type MigrationProgress,
  migrateToVersioned,
  migrationsCollection,
  readCheckpoint,
} from '../../shared/concurrency/versions.ts';
import { mongoUrl, openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = join(root, 'scripts', 'migrate-versioned.ts');

interface Doc {
  _id: ObjectId;
  n: number;
  version?: number;
}

describe(`migrateToVersioned on ${target().kind}`, () => {
  let database: TestDatabase;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    database = await openTestDatabase(import.meta.filename);
  });
  afterAll(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await database.close();
  });

  /** `count` small documents n = 0..count-1; those for which `preversioned(n)` already carry version 7. */
  async function seed(name: string, count: number, preversioned: (n: number) => boolean = () => false) {
    const coll = database.db.collection<Doc>(name);
    for (let start = 0; start < count; start += 5_000) {
      const end = Math.min(count, start + 5_000);
      await coll.insertMany(
        Array.from({ length: end - start }, (_, i) => {
          const n = start + i;
          return preversioned(n) ? { n, version: 7 } : { n };
        }) as Doc[],
        { ordered: false },
      );
    }
    return coll;
  }

  async function versionCounts(coll: Collection<Doc>) {
    const groups = await coll.aggregate<{ _id: number | null; count: number }>([
      { $group: { _id: '$version', count: { $sum: 1 } } },
    ]);
    return Object.fromEntries((await groups.toArray()).map((g) => [String(g._id), g.count]));
  }

  function runCli(args: string[]) {
    const child = spawn(process.execPath, [cli, ...args], {
      cwd: root,
      env: { ...process.env, MONGO_URL: mongoUrl(), MONGO_DB: database.name },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>(
      (resolve) => child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr })),
    );
    return { child, exited };
  }

  it('versions only the documents without a version, and a second run changes nothing', async () => {
    const coll = await seed('small', 25, (n) => n % 10 === 3);
    const progress: MigrationProgress[] = [];
    const first = await migrateToVersioned(database.db, 'small', {
      batchSize: 10,
      onProgress: (p) => progress.push(p),
    });
    expect(first).toEqual({ scanned: 25, versioned: 22, resumed: false, complete: true });
    expect(progress.map((p) => [p.scanned, p.versioned])).toEqual([
      [10, 9],
      [20, 18],
      [25, 22],
    ]);
    expect(await versionCounts(coll)).toEqual({ '1': 22, '7': 3 });
    const checkpoint = await readCheckpoint(database.db, 'small');
    expect(checkpoint).toMatchObject({ _id: checkpointId('small'), scanned: 25, versioned: 22 });
    expect(checkpoint?.finishedAt).toBeInstanceOf(Date);

    const second = await migrateToVersioned(database.db, 'small', { batchSize: 10 });
    expect(second).toEqual({ scanned: 25, versioned: 0, resumed: false, complete: true });
    expect(await versionCounts(coll)).toEqual({ '1': 22, '7': 3 });
  });

  it('stops after the current batch when aborted, and the next run resumes from the checkpoint', async () => {
    const coll = await seed('aborted', 35);
    const controller = new AbortController();
    const stopped = await migrateToVersioned(database.db, 'aborted', {
      batchSize: 10,
      signal: controller.signal,
      onProgress: (p) => {
        if (p.scanned >= 20) controller.abort();
      },
    });
    expect(stopped).toEqual({ scanned: 20, versioned: 20, resumed: false, complete: false });
    const twentieth = await coll.find().sort({ _id: 1 }).skip(19).limit(1).next();
    expect((await readCheckpoint(database.db, 'aborted'))?.lastId).toEqual(twentieth?._id);
    expect(await coll.countDocuments({ version: 1 })).toBe(20);

    const progress: number[] = [];
    const resumed = await migrateToVersioned(database.db, 'aborted', {
      batchSize: 10,
      onProgress: (p) => progress.push(p.scanned),
    });
    expect(resumed).toEqual({ scanned: 35, versioned: 35, resumed: true, complete: true });
    expect(progress).toEqual([30, 35]);
    expect(await versionCounts(coll)).toEqual({ '1': 35 });
  });

  it('rerunning a batch whose checkpoint was lost leaves versions alone', async () => {
    const coll = await seed('rerun', 20);
    await migrateToVersioned(database.db, 'rerun', { batchSize: 10 });
    // As if the run had died after the second batch's update but before its checkpoint, and an
    // admin had meanwhile written one of that batch's documents.
    const tenth = await coll.find().sort({ _id: 1 }).skip(9).limit(1).next();
    const fifteenth = await coll.find().sort({ _id: 1 }).skip(14).limit(1).next();
    await database.db
      .collection(migrationsCollection)
      .updateOne(
        { _id: checkpointId('rerun') as never },
        { $set: { lastId: tenth?._id, scanned: 10, versioned: 10 }, $unset: { finishedAt: '' } },
      );
    await coll.updateOne({ _id: fifteenth!._id }, { $set: { version: 2 } });
    const result = await migrateToVersioned(database.db, 'rerun', { batchSize: 10 });
    expect(result).toEqual({ scanned: 20, versioned: 10, resumed: true, complete: true });
    expect(await versionCounts(coll)).toEqual({ '1': 19, '2': 1 });
  });

  it('finishes at once on an empty collection', async () => {
    expect(await migrateToVersioned(database.db, 'empty', { batchSize: 10 })).toEqual({
      scanned: 0,
      versioned: 0,
      resumed: false,
      complete: true,
    });
  });

  it('100k documents: the CLI killed (SIGKILL) half way, then resumed, versions every document once', async () => {
    const total = 100_000;
    const batchSize = 2_000;
    const started = performance.now();
    // Ten documents spread over both halves already carry version 7.
    const preversioned = (n: number) => n % 10_000 === 4_321;
    const coll = await seed('big', total, preversioned);
    const seeded = performance.now();

    // A short pause between batches keeps a fast server from finishing before we can kill it.
    const { child, exited } = runCli(['big', '--batch-size', String(batchSize), '--pause-ms', '10']);
    let killedAt: Awaited<ReturnType<typeof readCheckpoint>> = null;
    while (child.exitCode === null) {
      const checkpoint = await readCheckpoint(database.db, 'big');
      if (checkpoint && checkpoint.scanned >= total / 2) {
        child.kill('SIGKILL');
        killedAt = checkpoint;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const run = await exited;
    expect(run.signal, `the CLI ended by itself before half way: ${run.stdout}${run.stderr}`).toBe('SIGKILL');
    const afterKill = await readCheckpoint(database.db, 'big');
    expect(afterKill?.finishedAt).toBeUndefined();
    expect(afterKill!.scanned).toBeGreaterThanOrEqual(killedAt!.scanned);
    expect(afterKill!.scanned).toBeLessThan(total);
    const unversionedAfterKill = await coll.countDocuments({ version: { $exists: false } });
    expect(unversionedAfterKill).toBeGreaterThan(0);
    expect(unversionedAfterKill).toBeLessThan(total / 2);
    const killed = performance.now();

    const firstBatches: number[] = [];
    const resumed = await migrateToVersioned(database.db, 'big', {
      batchSize,
      onProgress: (p) => firstBatches.length < 1 && firstBatches.push(p.scanned),
    });
    const expected = total - 10;
    expect(resumed.resumed).toBe(true);
    expect(resumed.complete).toBe(true);
    expect(resumed.scanned).toBe(total);
    // A batch updated after the last checkpoint was written is versioned but not counted.
    expect(resumed.versioned).toBeLessThanOrEqual(expected);
    expect(resumed.versioned).toBeGreaterThanOrEqual(expected - batchSize);
    // It continued after the checkpoint instead of starting over.
    expect(firstBatches[0]).toBe(afterKill!.scanned + batchSize);
    expect(await versionCounts(coll)).toEqual({ '1': expected, '7': 10 });
    const resumedAt = performance.now();

    // A second full run, through the CLI again, finds nothing to do.
    const again = await runCli(['big', '--batch-size', String(batchSize)]).exited;
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`big: ${total.toLocaleString('en-US')} scanned, 0 versioned`);
    expect(again.stderr).toContain('100.0%');
    expect(await versionCounts(coll)).toEqual({ '1': expected, '7': 10 });
    const seconds = (a: number, b: number) => ((b - a) / 1000).toFixed(1);
    process.stdout.write(
      `migrate 100k on ${target().kind}: seed ${seconds(started, seeded)} s, CLI until kill ${seconds(seeded, killed)} s, ` +
        `resume ${seconds(killed, resumedAt)} s, second run ${seconds(resumedAt, performance.now())} s\n`,
    );
  }, 180_000);
});
