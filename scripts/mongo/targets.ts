// Picks the MongoDB server for tests, benchmarks and the start command, in the order of the
// README: MONGO_URL if set; a real mongod in Docker (testcontainers) when an engine answers;
// otherwise the offline mongo-java-server. Node-only.
import { execFile } from 'node:child_process';
import { MongoClient } from 'mongodb';
import { startOfflineServer } from './offline-server.ts';

export type TargetKind = 'mongo-url' | 'testcontainers' | 'offline';

export interface TargetFeatures {
  /** Multi-document transactions (a replica set or sharded cluster). */
  transactions: boolean;
  /** The TTL monitor actually deletes expired documents. */
  ttlExpiry: boolean;
  /** Change streams deliver events. */
  changeStreams: boolean;
}

export interface Target {
  kind: TargetKind;
  url: string;
  description: string;
  features: TargetFeatures;
  stop(): Promise<void>;
}

function dockerEngineAnswers(timeoutMs = 5_000): Promise<boolean> {
  return new Promise((resolve) => {
    execFile('docker', ['info', '--format', '{{.ServerVersion}}'], { timeout: timeoutMs }, (error, stdout) =>
      resolve(!error && stdout.trim().length > 0),
    );
  });
}

/** Asks the server what it can do. mongo-java-server has no `hello` command and no sessions. */
export async function probeFeatures(url: string): Promise<{ features: TargetFeatures; server: string }> {
  const client = new MongoClient(url, { serverSelectionTimeoutMS: 10_000 });
  try {
    const admin = client.db('admin');
    const build = await admin.command({ buildInfo: 1 });
    const hello = await admin.command({ hello: 1 }).catch(() => null);
    if (!hello) {
      return {
        features: { transactions: false, ttlExpiry: false, changeStreams: true },
        server: `mongo-java-server (advertises ${build.version})`,
      };
    }
    const replicated = Boolean(hello.setName) || hello.msg === 'isdbgrid';
    return {
      features: { transactions: replicated, ttlExpiry: true, changeStreams: replicated },
      server: `mongod ${build.version}${hello.setName ? ` (replica set ${hello.setName})` : replicated ? ' (mongos)' : ' (standalone)'}`,
    };
  } finally {
    await client.close();
  }
}

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

export async function startTarget(log: (line: string) => void = () => {}): Promise<Target> {
  const fromEnv = process.env.MONGO_URL;
  if (fromEnv) {
    const { features, server } = await probeFeatures(fromEnv);
    return {
      kind: 'mongo-url',
      url: fromEnv,
      description: `MONGO_URL ${redact(fromEnv)}: ${server}`,
      features,
      stop: async () => {},
    };
  }
  if (await dockerEngineAnswers()) {
    log('Docker engine found: starting mongo:8 as a single-node replica set (testcontainers)...');
    const { MongoDBContainer } = await import('@testcontainers/mongodb');
    const container = await new MongoDBContainer('mongo:8').start();
    const url = `${container.getConnectionString()}?directConnection=true`;
    const { features, server } = await probeFeatures(url);
    return {
      kind: 'testcontainers',
      url,
      description: `testcontainers: ${server}`,
      features,
      stop: async () => {
        await container.stop();
      },
    };
  }
  log('No MONGO_URL and no Docker engine: starting the offline mongo-java-server...');
  // The suite's streams read continuously; a 30 s oplog window keeps a bulk test's writes (the 100k
  // migration writes 200,000 entries) from slowing every change stream of the tests after it.
  const server = await startOfflineServer({ oplogRetentionSeconds: 30 });
  const { features, server: name } = await probeFeatures(server.url);
  return {
    kind: 'offline',
    url: server.url,
    description: `offline ${name} at ${server.url} (for development and tests only)`,
    features,
    stop: () => server.stop(),
  };
}
