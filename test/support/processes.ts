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
  /** The first JSON event with this `event` name reported so far. */
  reported(name: string): Record<string, unknown> | undefined;
  /** For a process frozen with SIGSTOP: writes `line` to its stdin, sends SIGCONT, resolves with its exit code. */
  resume(line: string): Promise<number | null>;
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

class StartedNode implements NodeProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<number | null>;
  private out = '';
  private all = '';

  private readonly script: string;

  constructor(script: string, { args = [], env = {}, cwd, stdin = false }: StartOptions) {
    this.script = script;
    this.child = spawn(process.execPath, [script, ...args], {
      cwd,
      env: { ...process.env, ...env },
      stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    this.pid = this.child.pid!;
    this.child.stdout!.on('data', (chunk: Buffer) => {
      this.out += chunk.toString();
      this.all += chunk.toString();
    });
    this.child.stderr!.on('data', (chunk: Buffer) => {
      this.all += chunk.toString();
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  stdout = () => this.out;
  output = () => this.all;
  private gone = () => this.child.exitCode !== null || this.child.signalCode !== null;

  printed(text: string, from: 'stdout' | 'all' = 'stdout'): Promise<void> {
    const { child } = this;
    const seen = () => (from === 'stdout' ? this.out : this.all).includes(text);
    const failure = () =>
      new Error(
        `${this.script} exited (${child.exitCode ?? child.signalCode}) before printing "${text}":\n${this.all}`,
      );
    return new Promise<void>((resolve, reject) => {
      if (seen()) return resolve();
      if (this.gone()) return reject(failure());
      const check = () => {
        if (seen()) resolve();
      };
      child.stdout!.on('data', check);
      if (from === 'all') child.stderr!.on('data', check);
      child.once('exit', () => reject(failure()));
    });
  }

  events(): Record<string, unknown>[] {
    return this.out
      .split('\n')
      .filter((line) => line.startsWith('{') && line.endsWith('}'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  reported(name: string) {
    return this.events().find((e) => e.event === name);
  }

  async event(name: string, timeoutMs = 20_000) {
    const found = await waitForValue(
      () => this.reported(name),
      (event) => event !== undefined || this.gone(),
      { timeoutMs, intervalMs: 10, what: `${this.script} reporting "${name}"`, detail: this.output },
    );
    if (!found) throw new Error(`${this.script} exited without reporting "${name}"; it wrote:\n${this.all}`);
    return found;
  }

  send(line: string) {
    this.child.stdin!.write(`${line}\n`);
  }

  resume(line: string) {
    this.send(line);
    this.child.kill('SIGCONT');
    return this.exited;
  }

  stop(killAfterMs?: number) {
    return stopProcess(this.child, killAfterMs);
  }

  async kill() {
    if (this.gone()) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** Runs `script` with this Node; the environment is the test's plus `env`. */
export function startNode(script: string, options: StartOptions = {}): NodeProcess {
  const handle = new StartedNode(script, options);
  started.add(handle);
  void handle.exited.then(() => started.delete(handle));
  return handle;
}

/** SIGKILLs every process this file started that is still running (for afterAll). */
export async function killStarted(): Promise<void> {
  await Promise.all([...started].map((p) => p.kill()));
}
