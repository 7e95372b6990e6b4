// Child processes the scripts start: finding a server binary, starting it until it is ready, and stopping
// it the way an operator would (SIGTERM, then wait for it to exit).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { sleep } from '../shared/core/clock.ts';

/** Sends SIGTERM and resolves once the child has exited; after `killAfterMs`, if given, SIGKILL. */
export function stopProcess(child: ChildProcess, killAfterMs?: number): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** The first of `candidates` that runs (`<candidate> <versionArg>` exits 0), or null. */
export function findExecutable(candidates: string[], versionArg = '--version'): string | null {
  for (const candidate of candidates) {
    try {
      execFileSync(candidate, [versionArg], { stdio: 'ignore' });
      return candidate;
    } catch {}
  }
  return null;
}

export interface ServerProcess {
  process: ChildProcess;
  /** The last 64 KiB it printed (stdout and stderr). */
  output(): string;
  /** SIGTERM (SIGKILL after 5 s), then its folder removed. */
  stop(): Promise<void>;
}

/**
 * Starts a server binary whose files live in `dir` (removed when it stops, or when this process exits
 * first: no orphan left running), keeps the end of its output, and resolves once `ready()` holds. One that
 * exits, or is not ready within `deadlineMs`, is stopped and the error carries its output.
 */
export async function startServerProcess(spec: {
  name: string;
  binary: string;
  args: string[];
  dir: string;
  ready: () => Promise<boolean>;
  deadlineMs?: number;
}): Promise<ServerProcess> {
  const child = spawn(spec.binary, spec.args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-64 * 1024);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const removeDir = () => rmSync(spec.dir, { recursive: true, force: true });
  const orphanGuard = () => {
    child.kill('SIGKILL');
    removeDir();
  };
  process.once('exit', orphanGuard);
  child.once('exit', () => process.off('exit', orphanGuard));
  const stop = async () => {
    await stopProcess(child, 5_000);
    removeDir();
  };
  const deadline = Date.now() + (spec.deadlineMs ?? 30_000);
  while (!(await spec.ready().catch(() => false))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`${spec.name} did not start (${child.exitCode ?? 'timed out'}):\n${output}`);
    }
    await sleep(25);
  }
  return { process: child, output: () => output, stop };
}
