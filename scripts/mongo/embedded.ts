// The embedded default database for `npm start` when MONGO_URL is unset: a real mongod through
// mongodb-memory-server where its binary can be obtained, else the offline mongo-java-server
// persisted to an H2 file (development only: not crash-safe, no transactions, no TTL expiry).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startOfflineServer } from './offline-server.ts';

export interface EmbeddedDatabase {
  url: string;
  description: string;
  stop(): Promise<void>;
}

async function startMongod(dataDir: string): Promise<EmbeddedDatabase> {
  const { MongoMemoryServer } = await import('mongodb-memory-server-core');
  const dbPath = join(dataDir, 'mongod');
  mkdirSync(dbPath, { recursive: true });
  // mongodb-memory-server prints a whole stack trace when its download fails; we say it in one line.
  const warn = console.warn;
  console.warn = () => {};
  const server = await MongoMemoryServer.create({ instance: { dbPath, storageEngine: 'wiredTiger' } }).finally(() => {
    console.warn = warn;
  });
  return {
    url: server.getUri(),
    description: `mongod (mongodb-memory-server), data in ${dbPath}`,
    stop: async () => {
      await server.stop({ doCleanup: false });
    },
  };
}

export async function startEmbedded(dataDir: string, log: (line: string) => void): Promise<EmbeddedDatabase> {
  mkdirSync(dataDir, { recursive: true });
  if (process.env.EMBEDDED_DB !== 'offline') {
    try {
      return await startMongod(dataDir);
    } catch (error) {
      log(`mongod could not be obtained (${(error as Error).message.split('\n')[0]}); using the offline server.`);
    }
  }
  const file = join(dataDir, 'offline-mongo.h2');
  const server = await startOfflineServer({ file, heap: '1g' });
  return {
    url: server.url,
    description: `offline mongo-java-server, data in ${file} (FOR DEVELOPMENT ONLY: not crash-safe, no transactions, no TTL expiry)`,
    stop: () => server.stop(),
  };
}
