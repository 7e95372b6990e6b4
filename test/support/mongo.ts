// Each test file gets its own database on the run's MongoDB target.
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import { type Db, MongoClient } from 'mongodb';
import { inject } from 'vitest';

export const mongoUrl = () => inject('mongoUrl');
export const target = () => inject('mongoTarget');

export interface TestDatabase {
  client: MongoClient;
  db: Db;
  name: string;
  close(): Promise<void>;
}

/** A fresh database named after the test file; dropped on close. */
export async function openTestDatabase(file: string, options: { poolSize?: number } = {}): Promise<TestDatabase> {
  const stem = basename(file)
    .replace(/\.test\.ts$/, '')
    .replace(/[^A-Za-z0-9]/g, '_')
    .slice(0, 40);
  const name = `t_${stem}_${randomBytes(3).toString('hex')}`;
  const client = new MongoClient(mongoUrl(), { maxPoolSize: options.poolSize ?? 100 });
  await client.connect();
  const db = client.db(name);
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
