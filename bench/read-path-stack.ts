// What one read-path run stands on: a fresh offline database with 10,000 applications and N load
// admins, the wire counter in front of it (bench/wire-counter.ts), the API of the checkout under
// test (one instance, or three behind nginx, started by that checkout's own scripts), one access
// token per admin and a sampler of the API processes' resident memory.
import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type Db, MongoClient } from 'mongodb';
import type * as ApiInstances from '../scripts/api-instances.ts';
import { freePort, startOfflineServer } from '../scripts/mongo/offline-server.ts';
import type * as Nginx from '../scripts/nginx/nginx.ts';
import { loadApiEnv, loginAll, prepareLoadData } from './load-scenario.ts';
import type { CounterSample, Tree } from './read-path-report.ts';
import { round } from './support.ts';

const here = import.meta.dirname;

export interface Stack {
  origin: string;
  db: Db;
  /** One access token per load admin, valid for the whole run (ACCESS_TOKEN_TTL_S). */
  tokens: string[];
  apiPids: number[];
  snapshot(): Promise<CounterSample>;
  stop(): Promise<void>;
}

/** The wire counter as a child process; resolves once it listens. */
async function forkCounter(databasePort: number) {
  const child = fork(join(here, 'wire-counter.ts'), [`127.0.0.1:${databasePort}`], { stdio: 'inherit' });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port));
    child.once('exit', (code) => reject(new Error(`wire counter exited (${code})`)));
  });
  const snapshot = () =>
    new Promise<CounterSample>((resolve) => {
      child.once('message', (m: { counts: Record<string, number> }) => resolve({ at: Date.now(), counts: m.counts }));
      child.send('snapshot');
    });
  return { port, snapshot, child };
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

export async function startStack(
  tree: Tree,
  options: { instances: number; admins: number; docs: number },
): Promise<Stack> {
  const api: typeof ApiInstances = await import(pathToFileURL(join(tree.path, 'scripts/api-instances.ts')).href);
  const nginxModule: typeof Nginx = await import(pathToFileURL(join(tree.path, 'scripts/nginx/nginx.ts')).href);
  const offline = await startOfflineServer({ heap: '4g' });
  const counter = await forkCounter(offline.port);
  const client = await new MongoClient(offline.url).connect();
  const dbName = `bench_read_path_${Date.now()}`;
  const db = client.db(dbName);
  await prepareLoadData(db, { admins: options.admins, docs: options.docs });
  // directConnection: the API must keep talking to the counter, not to a host the server advertises.
  const env = {
    ...loadApiEnv(`mongodb://127.0.0.1:${counter.port}/?directConnection=true`, dbName),
    ACCESS_TOKEN_TTL_S: '3600',
  };
  const instances = await api.startApiInstances(options.instances, env);
  let nginx: Nginx.RunningNginx | null = null;
  if (options.instances > 1) {
    nginx = await nginxModule.startNginx({
      upstreams: instances.map((i) => i.address),
      listen: `127.0.0.1:${await freePort()}`,
      dir: nginxModule.nginxWorkDir('read-path-'),
    });
  }
  const tokens = await loginAll(instances[0]!.origin, options.admins, 20);
  return {
    origin: nginx?.origin ?? instances[0]!.origin,
    db,
    tokens,
    apiPids: instances.map((i) => i.process.pid!),
    snapshot: counter.snapshot,
    async stop() {
      await nginx?.stop();
      await Promise.all(instances.map((i) => i.stop()));
      await client.close();
      await stopChild(counter.child);
      await offline.stop();
    },
  };
}

/** Resident memory of a process in MiB (Linux /proc), 0 once it is gone. */
export function rssMiB(pid: number): number {
  try {
    const kib = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kib ? Number(kib) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** Samples the API processes' RSS (summed over instances) every 250 ms until stopped. */
export function sampleRss(pids: number[]) {
  const total = () => pids.reduce((sum, pid) => sum + rssMiB(pid), 0);
  const before = total();
  let max = before;
  const timer = setInterval(() => {
    max = Math.max(max, total());
  }, 250);
  return {
    stop() {
      clearInterval(timer);
      const after = total();
      return { before: round(before, 0), after: round(after, 0), max: round(Math.max(max, after), 0) };
    },
  };
}
