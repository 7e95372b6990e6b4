import { type Collection, type CommandStartedEvent, MongoClient, ObjectId } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { updateWithRetry, updateWithVersion } from '../../shared/concurrency/versions.ts';
import { ConflictError, NotFoundError, ValidationError } from '../../shared/core/errors.ts';
import { mongoUrl, openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';

interface Application {
  _id: ObjectId;
  version: number;
  status: string;
  counter: number;
  tags?: string[];
}

describe(`shared/concurrency/versions on ${target().kind}`, () => {
  let database: TestDatabase;
  let apps: Collection<Application>;

  beforeAll(async () => {
    database = await openTestDatabase(import.meta.filename, { poolSize: 120 });
    apps = database.db.collection<Application>('applications');
  });
  afterAll(async () => {
    await database.close();
  });

  async function insertApplication(fields: Partial<Application> = {}): Promise<Application> {
    const doc = { _id: new ObjectId(), version: 1, status: 'pending', counter: 0, ...fields };
    await apps.insertOne(doc);
    return doc;
  }

  describe('updateWithVersion', () => {
    it('lets exactly 1 of 100 concurrent writers of the same version win; 99 get a ConflictError with version 2', async () => {
      const app = await insertApplication();
      const outcomes = await Promise.allSettled(
        Array.from({ length: 100 }, (_, i) => updateWithVersion(apps, app._id, 1, { $set: { status: `writer-${i}` } })),
      );
      const wins = outcomes.filter((o) => o.status === 'fulfilled');
      const losses = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason] : []));
      expect(wins).toHaveLength(1);
      expect(losses).toHaveLength(99);
      const winner = wins[0]!.value;
      expect(winner.version).toBe(2);
      for (const error of losses) {
        expect(error).toBeInstanceOf(ConflictError);
        expect((error as ConflictError<Application>).code).toBe('conflict');
        // Every loser learns what the winner wrote.
        expect((error as ConflictError<Application>).current).toEqual(winner);
      }
      expect(await apps.findOne({ _id: app._id })).toEqual(winner);
    });

    it('returns the updated document with version + 1, merging the version bump into the caller $inc', async () => {
      const app = await insertApplication({ version: 4, tags: ['a'] });
      const updated = await updateWithVersion(apps, app._id, 4, {
        $set: { status: 'approved' },
        $inc: { counter: 3 },
        $push: { tags: 'b' },
      });
      expect(updated).toEqual({ ...app, version: 5, status: 'approved', counter: 3, tags: ['a', 'b'] });
      expect(await apps.findOne({ _id: app._id })).toEqual(updated);
    });

    it('throws ConflictError carrying the current document for a stale version, and writes nothing', async () => {
      const app = await insertApplication();
      const fresh = await updateWithVersion(apps, app._id, 1, { $set: { status: 'in_review' } });
      const stale = await updateWithVersion(apps, app._id, 1, { $set: { status: 'approved' } }).catch((e) => e);
      expect(stale).toBeInstanceOf(ConflictError);
      expect(stale.current).toEqual(fresh);
      expect(await apps.findOne({ _id: app._id })).toEqual(fresh);
    });

    it('throws NotFoundError for a missing id, and creates nothing', async () => {
      const missing = new ObjectId();
      const error = await updateWithVersion(apps, missing, 1, { $set: { status: 'approved' } }).catch((e) => e);
      expect(error).toBeInstanceOf(NotFoundError);
      expect(error.code).toBe('not_found');
      expect(await apps.countDocuments({ _id: missing })).toBe(0);
    });

    it.each([
      ['$set version', { $set: { version: 9 } }],
      ['$inc version', { $inc: { version: 1 } }],
      ['$unset version', { $unset: { version: '' } }],
      ['$set a path inside version', { $set: { 'version.major': 2 } }],
      ['$rename onto version', { $rename: { counter: 'version' } }],
      ['$rename version away', { $rename: { version: 'v' } }],
      ['$set _id', { $set: { _id: new ObjectId() } }],
    ])('refuses an update that touches version or _id (%s) with ValidationError, before writing', async (_, update) => {
      const app = await insertApplication();
      const error = await updateWithVersion(apps, app._id, 1, update as never).catch((e) => e);
      expect(error).toBeInstanceOf(ValidationError);
      expect(error.code).toBe('validation');
      expect(error.details.fields).toHaveLength(1);
      expect(await apps.findOne({ _id: app._id })).toEqual(app);
    });

    it.each([
      ['a replacement document', { status: 'approved' }],
      ['a pipeline', [{ $set: { status: 'approved' } }]],
      ['an empty update', {}],
      ['an operator without fields', { $set: 'approved' }],
    ])('refuses %s with ValidationError', async (_, update) => {
      const app = await insertApplication();
      await expect(updateWithVersion(apps, app._id, 1, update as never)).rejects.toBeInstanceOf(ValidationError);
      expect(await apps.findOne({ _id: app._id })).toEqual(app);
    });

    it.each([0, -1, 1.5, Number.NaN])('refuses the expected version %s with ValidationError', async (version) => {
      const app = await insertApplication();
      await expect(updateWithVersion(apps, app._id, version, { $set: { status: 'x' } })).rejects.toBeInstanceOf(
        ValidationError,
      );
    });
  });

  describe('updateWithRetry', () => {
    it('50 concurrent read-modify-write increments all land: counter 50, version 51', async () => {
      const app = await insertApplication();
      // Each failed attempt of a writer is caused by another writer's success after its last read,
      // so with 50 writers no one can lose more than 49 times: 50 attempts always suffice.
      const results = await Promise.all(
        Array.from({ length: 50 }, () =>
          updateWithRetry(apps, app._id, (current) => ({ counter: current.counter + 1 }), { attempts: 50 }),
        ),
      );
      const final = await apps.findOne({ _id: app._id });
      expect(final?.counter).toBe(50);
      expect(final?.version).toBe(51);
      // Each writer got back its own write: 50 distinct versions 2..51, each with counter = version - 1.
      expect(results.map((r) => r.version).sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 2));
      for (const r of results) expect(r.counter).toBe(r.version - 1);
    });

    it('re-applies the mutation to the conflict current without another read (counted by command monitoring)', async () => {
      const app = await insertApplication();
      const monitored = new MongoClient(mongoUrl(), { monitorCommands: true, maxPoolSize: 2 });
      const commands: string[] = [];
      monitored.on('commandStarted', (event: CommandStartedEvent) => commands.push(event.commandName));
      try {
        const coll = monitored.db(database.name).collection<Application>('applications');
        await monitored.db('admin').command({ ping: 1 });
        commands.length = 0;
        const seen: number[] = [];
        const result = await updateWithRetry(coll, app._id, async (current) => {
          seen.push(current.version);
          // Another admin writes first, twice: the first two attempts must conflict.
          if (seen.length <= 2) await apps.updateOne({ _id: app._id }, { $inc: { version: 1 } });
          return { status: 'approved' };
        });
        expect(seen).toEqual([1, 2, 3]);
        expect(result).toMatchObject({ version: 4, status: 'approved' });
        // 1 initial read + 3 conditional writes + 2 reads after the 2 misses.
        expect(commands.filter((c) => c === 'find')).toHaveLength(3);
        expect(commands.filter((c) => c === 'findAndModify')).toHaveLength(3);
        expect(commands).toHaveLength(6);
      } finally {
        await monitored.close();
      }
    });

    it('gives up after `attempts` conflicts with the last ConflictError', async () => {
      const app = await insertApplication();
      let calls = 0;
      const error = await updateWithRetry(
        apps,
        app._id,
        async () => {
          calls++;
          await apps.updateOne({ _id: app._id }, { $inc: { version: 1 } });
          return { status: 'approved' };
        },
        { attempts: 3, backoff: { delay: 1 } },
      ).catch((e) => e);
      expect(calls).toBe(3);
      expect(error).toBeInstanceOf(ConflictError);
      expect(error.current.version).toBe(4);
      expect(error.current.status).toBe('pending');
    });

    it('accepts an update document of operators as the mutation', async () => {
      const app = await insertApplication({ tags: [] });
      const result = await updateWithRetry(apps, app._id, () => ({ $push: { tags: 'x' }, $inc: { counter: 2 } }));
      expect(result).toEqual({ ...app, version: 2, counter: 2, tags: ['x'] });
    });

    it('writes nothing and keeps the version when the mutation returns {}', async () => {
      const app = await insertApplication();
      expect(await updateWithRetry(apps, app._id, () => ({}))).toEqual(app);
      expect(await apps.findOne({ _id: app._id })).toEqual(app);
    });

    it('propagates NotFoundError without calling the mutation', async () => {
      let called = false;
      const error = await updateWithRetry(apps, new ObjectId(), () => {
        called = true;
        return { status: 'approved' };
      }).catch((e) => e);
      expect(error).toBeInstanceOf(NotFoundError);
      expect(called).toBe(false);
    });

    it('refuses a mutation that mixes fields and operators, or sets version', async () => {
      const app = await insertApplication();
      await expect(
        updateWithRetry(apps, app._id, () => ({ status: 'x', $inc: { counter: 1 } }) as never),
      ).rejects.toBeInstanceOf(ValidationError);
      await expect(updateWithRetry(apps, app._id, (c) => ({ ...c, status: 'x' }))).rejects.toBeInstanceOf(
        ValidationError,
      );
      expect(await apps.findOne({ _id: app._id })).toEqual(app);
    });

    it('refuses to write a document that has no version yet (the collection needs migrateToVersioned)', async () => {
      const _id = new ObjectId();
      await database.db.collection('applications').insertOne({ _id, status: 'pending', counter: 0 });
      await expect(updateWithRetry(apps, _id, () => ({ status: 'x' }))).rejects.toBeInstanceOf(ValidationError);
      expect(await apps.findOne({ _id })).toEqual({ _id, status: 'pending', counter: 0 });
    });

    it('propagates an error thrown by the mutation, writing nothing', async () => {
      const app = await insertApplication();
      await expect(
        updateWithRetry(apps, app._id, () => {
          throw new Error('illegal transition');
        }),
      ).rejects.toThrow('illegal transition');
      expect(await apps.findOne({ _id: app._id })).toEqual(app);
    });
  });
});
