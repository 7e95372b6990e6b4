// Starting an API entry as a child process and waiting until it answers, for tests and benchmarks.
// Node-only. Each runtime's script (node.ts, deno.ts, workerd.ts) builds the command line.

import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from '../../shared/core/clock.ts';
import { writeConsoleAssets } from '../build-console.ts';

export const projectRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export type RuntimeName = 'node' | 'workerd' | 'deno';

export interface RuntimeOptions {
  /** The API's configuration (MONGO_URL, MONGO_DB, JWT_KEYS, ...); HOST and PORT are set by the starter. */
  env: Record<string, string>;
  /** Listen here; a free loopback port when omitted. */
  port?: number;
  /** How long to wait for the first 200 from readyPath. */
  deadlineMs?: number;
  /** Echo the runtime's output as it comes (CLI use); otherwise it is kept for output(). */
  inherit?: boolean;
}

export interface RuntimeProcess {
  name: string;
  origin: string;
  pid: number;
  /** Everything the runtime printed so far (stdout and stderr). */
  output(): string;
  /** SIGTERM to the process group, SIGKILL after graceMs; resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnSpec {
  name: string;
  command: string;
  args: string[];
  env: Record<string, string | undefined>;
  origin: string;
  readyPath: string;
  deadlineMs: number;
  inherit?: boolean;
  /** Clean-up after the process has exited (temporary files). */
  cleanup?: () => void;
}

/** Spawns the runtime in its own process group and resolves once readyPath answers 200. */
export async function spawnRuntime(spec: SpawnSpec): Promise<RuntimeProcess> {
  await writeConsoleAssets(); // the console is compiled into the API's bundle: the runtime serves this build
  const child: ChildProcess = spawn(spec.command, spec.args, {
    cwd: projectRoot,
    env: spec.env,
    detached: true,
    stdio: ['ignore', spec.inherit ? 'inherit' : 'pipe', spec.inherit ? 'inherit' : 'pipe'],
  });
  let output = '';
  const keep = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > 200_000) output = output.slice(-100_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exitCode = code ?? (signal ? -1 : null);
      spec.cleanup?.();
      resolve();
    }),
  );

  const runtime: RuntimeProcess = {
    name: spec.name,
    origin: spec.origin,
    pid: child.pid!,
    output: () => output,
    async stop(graceMs = 5_000) {
      if (exitCode !== undefined) return;
      const signal = (name: NodeJS.Signals) => {
        try {
          process.kill(-child.pid!, name);
        } catch {
          // Already gone.
        }
      };
      signal('SIGTERM');
      const timer = setTimeout(() => signal('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };

  await waitUntilReady(spec, runtime, () => exitCode);
  return runtime;
}

/** Polls readyPath until it answers 200; throws (and stops the runtime) when it exits or the deadline passes. */
async function waitUntilReady(
  spec: SpawnSpec,
  runtime: RuntimeProcess,
  exitCode: () => number | null | undefined,
): Promise<void> {
  const deadline = Date.now() + spec.deadlineMs;
  while (true) {
    if (exitCode() !== undefined) {
      throw new Error(
        `${spec.name} exited (${exitCode()}) before it was ready; its output:\n${runtime.output().slice(-8_000)}`,
      );
    }
    if (Date.now() > deadline) {
      await runtime.stop(1_000);
      throw new Error(
        `${spec.name} was not ready at ${spec.origin}${spec.readyPath} within ${spec.deadlineMs} ms; its output:\n${runtime.output().slice(-8_000)}`,
      );
    }
    const res = await fetch(`${spec.origin}${spec.readyPath}`, { signal: AbortSignal.timeout(5_000) }).catch(
      () => null,
    );
    await res?.body?.cancel();
    if (res?.status === 200) return;
    await sleep(200);
  }
}

/** A CLI wrapper: start, forward SIGINT/SIGTERM as a graceful stop, exit with the child. */
export async function runUntilSignal(start: () => Promise<RuntimeProcess>): Promise<void> {
  const runtime = await start();
  console.error(`${runtime.name} ready on ${runtime.origin}`);
  const stop = async () => {
    await runtime.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/** Host and port pairs of a mongodb:// URL (a seed list may name several); SRV lookups are not supported here. */
export function mongoHosts(url: string): string[] {
  const match = /^mongodb:\/\/(?:[^@/]*@)?([^/?]+)/.exec(url);
  if (!match) throw new Error('MONGO_URL must be a mongodb:// URL here (mongodb+srv needs DNS and wider rights)');
  return match[1]!.split(',').map((host) => (/:\d+$/.test(host) ? host : `${host}:27017`));
}
