// One MongoClient per process, the indexes every module needs, and a readiness ping.
import { type Db, type IndexDescription, MongoClient, type MongoClientOptions } from 'mongodb';
import type { Config } from './config.ts';
import { traceCommands } from './db-tracing.ts';

export type DbConfig = Pick<Config, 'MONGO_URL' | 'MONGO_DB' | 'DB_POOL_MAX' | 'DB_TIMEOUT_MS'>;

export interface Database {
  client: MongoClient;
  db: Db;
  close(): Promise<void>;
}

export function clientOptions(config: DbConfig): MongoClientOptions {
  return {
    maxPoolSize: config.DB_POOL_MAX,
    serverSelectionTimeoutMS: config.DB_TIMEOUT_MS,
    connectTimeoutMS: config.DB_TIMEOUT_MS,
    // Notice a server that stopped answering within seconds, not the default 10 s.
    heartbeatFrequencyMS: 2_000,
    // Our writes are acknowledged by a majority where there is one (journaled on a standalone).
    writeConcern: { w: 'majority', journal: true },
    retryWrites: true,
  };
}

/**
 * Connects once; callers keep the returned object for the life of the process. `traced`: a span per
 * command run under a recording span (the driver's command monitoring is on only then).
 */
export async function connect(config: DbConfig, options: { traced?: boolean } = {}): Promise<Database> {
  const client = new MongoClient(config.MONGO_URL, {
    ...clientOptions(config),
    ...(options.traced ? { monitorCommands: true } : {}),
  });
  const untrace = options.traced ? traceCommands(client) : () => {};
  await client.connect();
  const db = client.db(config.MONGO_DB);
  return {
    client,
    db,
    close: async () => {
      await client.close();
      untrace();
    },
  };
}

export async function ping(db: Db): Promise<boolean> {
  try {
    await db.command({ ping: 1 });
    return true;
  } catch {
    return false;
  }
}

/** The indexes of one collection, declared by the module that owns it. */
export interface IndexPlan {
  collection: string;
  indexes: IndexDescription[];
}

/** Idempotent: creating an index that exists with the same options is a no-op. */
export async function ensureIndexes(db: Db, plans: IndexPlan[]): Promise<void> {
  for (const plan of plans) {
    await db.collection(plan.collection).createIndexes(plan.indexes);
  }
}

/** E11000: a unique index refused the write because another one holds that key. */
export function isDuplicateKeyError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 11000;
}

/** An unordered bulk write whose every failure was a duplicate key (the rest were written). */
export function onlyDuplicateKeyErrors(error: unknown): boolean {
  const writeErrors = (error as { writeErrors?: unknown } | null)?.writeErrors;
  if (writeErrors === undefined) return isDuplicateKeyError(error);
  const list = Array.isArray(writeErrors) ? writeErrors : writeErrors ? [writeErrors] : [];
  return list.length > 0 && list.every(isDuplicateKeyError);
}
