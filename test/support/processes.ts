// Child Node processes for tests (workers, fixtures, entries): started with the test's environment,
// their output kept, waited on for a line they print or a JSON event they report, stopped or killed.
import { type ChildProcess, spawn } from 'node:child_process';
import { stopProcess } from '../../scripts/processes.ts';
import { waitForValue } from './wait.ts';

export interface NodeProcess {
  child: ChildProcess;
  pid: number;
  /** Resolves with the exit code (null when a signal ended it). */
  exited: Promise<number | null>;
  stdout(): string;
  /** stdout and stderr together, in the order they arrived. */
  output(): string;
  /** Resolves once `text` appears (on stdout, or on either stream); rejects if the process exits first. */
  printed(text: string, from?: 'stdout' | 'all'): Promise<void>;
  /** The JSON lines it wrote on stdout so far. */
  events(): Record<string, unknown>[];
  /** The first JSON event with this `event` name, once reported; throws if the process exits or time runs out. */
  event(name: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Writes a line to its stdin (started with `stdin: true`). */
  send(line: string): void;
  /** SIGTERM and wait for the exit (SIGKILL after `killAfterMs`, if given). */
  stop(killAfterMs?: number): Promise<void>;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>;
}

export interface StartOptions {
  args?: string[];
  env?: Record<string, string>;
  cwd?: string;
  stdin?: boolean;
}

const started = new Set<NodeProcess>();

/** Runs `script` with this Node; the environment is the test's plus `env`. */
export function startNode(script: string, { args = [], env = {}, cwd, stdin = false }: StartOptions = {}): NodeProcess {
  const child = spawn(process.execPath, [script, ...args], {
    cwd,
    env: { ...process.env, ...env },
    stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let all = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    all += chunk.toString();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    all += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  const events = () =>
    out
      .split('\n')
      .filter((line) => line.startsWith('{') && line.endsWith('}'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  const handle: NodeProcess = {
    child,
    pid: child.pid!,
    exited,
    stdout: () => out,
    output: () => all,
    printed(text, from = 'stdout') {
      const seen = () => (from === 'stdout' ? out : all).includes(text);
      const failure = () =>
        new Error(`${script} exited (${child.exitCode ?? child.signalCode}) before printing "${text}":\n${all}`);
      return new Promise<void>((resolve, reject) => {
        if (seen()) return resolve();
        if (gone()) return reject(failure());
        const check = () => {
          if (seen()) resolve();
        };
        child.stdout!.on('data', check);
        if (from === 'all') child.stderr!.on('data', check);
        child.once('exit', () => reject(failure()));
      });
    },
    events,
    async event(name, timeoutMs = 20_000) {
      const found = await waitForValue(
        () => events().find((e) => e.event === name),
        (event) => event !== undefined || gone(),
        { timeoutMs, intervalMs: 10, what: `${script} reporting "${name}"`, detail: () => all },
      );
      if (!found) throw new Error(`${script} exited without reporting "${name}"; it wrote:\n${all}`);
      return found;
    },
    send(line) {
      child.stdin!.write(`${line}\n`);
    },
    stop: (killAfterMs) => stopProcess(child, killAfterMs),
    async kill() {
      if (gone()) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
  started.add(handle);
  void exited.then(() => started.delete(handle));
  return handle;
}

/** SIGKILLs every process this file started that is still running (for afterAll). */
export async function killStarted(): Promise<void> {
  await Promise.all([...started].map((p) => p.kill()));
}
