// Runs Debian's redis-server as a throwaway: a free 127.0.0.1 port, no persistence (no RDB snapshots,
// no AOF), its working folder in a temp directory removed on stop. bench/redis.ts and the Redis adapter
// tests (test/integration/redis-*.test.ts) use it; `npm run redis` runs one and prints its REDIS_URL
// (`-- --port <port>` to pick the port); Ctrl-C stops it.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort } from './mongo/offline-server.ts';
import { findExecutable, startServerProcess } from './processes.ts';

/** Debian's `redis-server` (package redis-server); null if absent. */
export const findRedisServer = () => findExecutable(['redis-server', '/usr/bin/redis-server']);

export interface RunningRedis {
  url: string;
  port: number;
  pid: number;
  process: ChildProcess;
  /** Stops it (SIGTERM, SIGKILL after 5 s) and removes its folder. */
  stop(): Promise<void>;
  /** SIGKILL: the server is gone at once (tests of what the adapters do without Redis). */
  kill(): Promise<void>;
}

/** Answers PING with PONG within 1 s: the server is up. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

export async function startRedis(options: { port?: number } = {}): Promise<RunningRedis> {
  const binary = findRedisServer();
  if (!binary) throw new Error('redis-server not found: `npm run setup` installs Debian package redis-server');
  const dir = mkdtempSync(join(tmpdir(), 'redis-'));
  const port = options.port ?? (await freePort());
  const server = await startServerProcess({
    name: 'redis-server',
    binary,
    args: [
      '--bind',
      '127.0.0.1',
      '--port',
      String(port),
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--protected-mode',
      'yes',
      '--loglevel',
      'warning',
      '--daemonize',
      'no',
    ],
    dir,
    ready: () => ping(port),
    deadlineMs: 20_000,
  });
  const child = server.process;
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    process: child,
    stop: server.stop,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { port: { type: 'string' }, help: { type: 'boolean' } } });
  if (values.help) {
    console.log('npm run redis [-- --port <port>]: a throwaway redis-server on 127.0.0.1, no persistence');
    process.exit(0);
  }
  const running = await startRedis({ port: values.port ? Number(values.port) : undefined });
  console.log(`REDIS_URL=${running.url}   (redis-server pid ${running.pid}; Ctrl-C stops it)`);
  const stop = () => void running.stop().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
