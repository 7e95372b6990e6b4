// Starts N API processes (api/node.ts) on loopback against one database, each ready when this returns,
// as a load balancer would see them (the nginx test and bench put nginx in front) or as tests use one.

import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from '../shared/core/clock.ts';
import { freePort } from './mongo/offline-server.ts';
import { stopProcess } from './processes.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface ApiInstance {
  port: number;
  /** host:port, as an nginx upstream names it. */
  address: string;
  origin: string;
  process: ChildProcess;
  exited: Promise<void>;
  /** What the process wrote (its JSON log lines), the last 1 MiB. */
  output(): string;
  stop(): Promise<void>;
}

/** Starts `count` instances with the same environment (one signing key: a token works on every one). */
export async function startApiInstances(count: number, env: Record<string, string>): Promise<ApiInstance[]> {
  const instances = await Promise.all(
    Array.from({ length: count }, async (): Promise<ApiInstance> => {
      const port = await freePort();
      const child = spawn(process.execPath, [join(root, 'api/node.ts')], {
        env: { ...process.env, ...env, HOST: '127.0.0.1', PORT: String(port) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      const keep = (chunk: Buffer) => {
        output = (output + chunk.toString()).slice(-1024 * 1024);
      };
      child.stdout?.on('data', keep);
      child.stderr?.on('data', (chunk: Buffer) => {
        keep(chunk);
        process.stderr.write(chunk);
      });
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      return {
        port,
        address: `127.0.0.1:${port}`,
        origin: `http://127.0.0.1:${port}`,
        process: child,
        exited,
        output: () => output,
        stop: () => stopProcess(child, 12_000),
      };
    }),
  );
  try {
    await Promise.all(instances.map((instance) => waitReady(instance)));
  } catch (error) {
    await Promise.all(instances.map((instance) => instance.stop()));
    throw error;
  }
  return instances;
}

async function waitReady(instance: ApiInstance, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while ((await fetch(`${instance.origin}/ready`).catch(() => null))?.status !== 200) {
    if (instance.process.exitCode !== null)
      throw new Error(`API on ${instance.port} exited (${instance.process.exitCode})`);
    if (Date.now() > deadline) throw new Error(`API on ${instance.port} not ready within ${timeoutMs} ms`);
    await sleep(100);
  }
}
