// Starts the offline MongoDB wire server (mongo-java-server, see README: MongoDB targets).
// Node-only: used by tests, benchmarks and the start command, never by api/ or shared/.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mavenClasspath } from '../maven.ts';

const here = dirname(fileURLToPath(import.meta.url));

/** Resolves the server's jars through Maven once (about 20 s on a cold ~/.m2) and caches the classpath. */
export function resolveClasspath(): string {
  return mavenClasspath(here, 'offline-mongo');
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface OfflineServer {
  url: string;
  port: number;
  pid: number;
  /** Graceful stop (SIGTERM): the H2 backend flushes its file. */
  stop(): Promise<void>;
}

export interface OfflineServerOptions {
  port?: number;
  /** Persist to this H2 file instead of memory. */
  file?: string;
  /** Java heap; the default suits the test suite. */
  heap?: string;
  /** How long the oplog keeps an entry (change streams read within it); Launch.java's default is 60 s. */
  oplogRetentionSeconds?: number;
}

export async function startOfflineServer(options: OfflineServerOptions = {}): Promise<OfflineServer> {
  const classpath = resolveClasspath();
  const port = options.port ?? (await freePort());
  const args = [
    `-Xmx${options.heap ?? '2g'}`,
    '-XX:+UseParallelGC',
    ...(options.oplogRetentionSeconds === undefined
      ? []
      : [`-Doplog.retention.seconds=${options.oplogRetentionSeconds}`]),
    '-cp',
    classpath,
    join(here, 'Launch.java'),
    String(port),
  ];
  if (options.file) args.push(options.file);
  const child = spawn('java', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`offline MongoDB did not start within 60 s\n${stderr}`)), 60_000);
    child.stdout.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`offline MongoDB exited with code ${code}\n${stderr}`));
    });
  });
  child.stdout.resume();
  // A script that dies (an uncaught error, process.exit) must not leave its database running; SIGTERM
  // lets the server flush its H2 file on the way out.
  const orphanGuard = () => child.kill('SIGTERM');
  process.once('exit', orphanGuard);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      process.off('exit', orphanGuard);
      resolve();
    }),
  );
  return {
    url: `mongodb://127.0.0.1:${port}`,
    port,
    pid: child.pid ?? -1,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
  };
}
