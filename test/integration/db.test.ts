import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/core/config.ts';
import { connect, type Database, ensureIndexes, ping } from '../../shared/core/db.ts';
import { mongoUrl, target } from '../support/mongo.ts';

describe(`shared/core/db on ${target().kind}`, () => {
  let database: Database;
  const dbName = `t_db_${process.pid}`;

  beforeAll(async () => {
    database = await connect(loadConfig({ MONGO_URL: mongoUrl(), MONGO_DB: dbName, DB_POOL_MAX: '5' }));
  });
  afterAll(async () => {
    await database.db.dropDatabase();
    await database.close();
  });

  it('pings a live server', async () => {
    expect(await ping(database.db)).toBe(true);
  });

  it('reports false, not an exception, when the server is unreachable', async () => {
    const dead = await import('mongodb').then(
      ({ MongoClient }) => new MongoClient('mongodb://127.0.0.1:1', { serverSelectionTimeoutMS: 200 }),
    );
    expect(await ping(dead.db('x'))).toBe(false);
    await dead.close();
  });

  it('ensureIndexes is idempotent', async () => {
    const plans = [{ collection: 'things', indexes: [{ key: { a: 1 }, name: 'a_1', unique: true }] }];
    await ensureIndexes(database.db, plans);
    await ensureIndexes(database.db, plans);
    const names = (await database.db.collection('things').listIndexes().toArray()).map((i) => i.name);
    expect(names.sort()).toEqual(['_id_', 'a_1']);
    await database.db.collection('things').insertOne({ a: 1 });
    await expect(database.db.collection('things').insertOne({ a: 1 })).rejects.toThrow(/E11000/);
  });
});
