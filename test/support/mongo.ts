// Each test file gets its own database on the run's MongoDB target.
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import { type Db, MongoClient } from 'mongodb';
import { inject } from 'vitest';
import { ensureIndexes, type IndexPlan } from '../../shared/core/db.ts';

export const mongoUrl = () => inject('mongoUrl');
export const target = () => inject('mongoTarget');

export interface TestDatabase {
  client: MongoClient;
  db: Db;
  name: string;
  close(): Promise<void>;
}

/** A fresh database named after the test file, with the given indexes; dropped on close. */
export async function openTestDatabase(
  file: string,
  options: { poolSize?: number; indexes?: IndexPlan[] } = {},
): Promise<TestDatabase> {
  const stem = basename(file)
    .replace(/\.test\.ts$/, '')
    .replace(/[^A-Za-z0-9]/g, '_')
    .slice(0, 40);
  const name = `t_${stem}_${randomBytes(3).toString('hex')}`;
  const client = new MongoClient(mongoUrl(), { maxPoolSize: options.poolSize ?? 100 });
  await client.connect();
  const db = client.db(name);
  if (options.indexes) await ensureIndexes(db, options.indexes);
  return {
    client,
    db,
    name,
    async close() {
      await db.dropDatabase().catch(() => {});
      await client.close();
    },
  };
}
