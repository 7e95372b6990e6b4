// Runs the repository's nginx.conf unprivileged on this machine: the same file, with the upstream
// servers, the listen address and every file path (pid, logs, temp dirs) substituted, so a test or
// a benchmark puts Debian's nginx in front of API processes on loopback.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from '../../shared/core/clock.ts';

export const nginxConfPath = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'nginx.conf');

/** The nginx binary: on PATH, or Debian's /usr/sbin/nginx (not on a non-root user's PATH); null if absent. */
export function findNginx(): string | null {
  for (const candidate of ['nginx', '/usr/sbin/nginx', '/usr/local/sbin/nginx']) {
    try {
      execFileSync(candidate, ['-v'], { stdio: 'ignore' });
      return candidate;
    } catch {}
  }
  return null;
}

/**
 * A temp folder for nginx's files. Readable by all: started as root, nginx's workers run as
 * `nobody` and must reach the temp folders below it (else a buffered request body is a 500).
 */
export function nginxWorkDir(prefix = 'nginx-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

export interface RenderOptions {
  /** host:port of each API instance, e.g. ['127.0.0.1:3001', '127.0.0.1:3002']. */
  upstreams: string[];
  /** Where nginx listens, e.g. '127.0.0.1:8080'. */
  listen: string;
  /** A writable folder for the pid file, the logs and the temp folders (see nginxWorkDir). */
  dir: string;
  /** worker_processes (default 1: a test shares two cores with everything else). */
  workers?: number;
}

/** Replaces exactly one match of `pattern`, so a change to nginx.conf that breaks a substitution is noticed. */
function replaceOnce(text: string, pattern: RegExp, replacement: string | ((...groups: string[]) => string)): string {
  const matches = text.match(new RegExp(pattern.source, `${pattern.flags.replace('g', '')}g`));
  if (matches?.length !== 1)
    throw new Error(`nginx.conf: expected one match of ${pattern}, found ${matches?.length ?? 0}`);
  return text.replace(pattern, replacement as string);
}

/** nginx.conf with test addresses and paths; every other directive stays as written. */
export function renderNginxConfig(source: string, options: RenderOptions): string {
  if (options.upstreams.length === 0) throw new Error('at least one upstream');
  const path = (name: string) => join(options.dir, name);
  let conf = source;
  // Not root in general, and no "nginx" user here: the workers run as whoever starts nginx.
  conf = replaceOnce(conf, /^user\s+[^;]+;\n/m, '');
  conf = replaceOnce(conf, /^worker_processes\s+[^;]+;/m, `worker_processes ${options.workers ?? 1};`);
  conf = replaceOnce(conf, /^pid\s+[^;]+;/m, `pid ${path('nginx.pid')};`);
  conf = replaceOnce(conf, /^error_log\s+\S+/m, `error_log ${path('error.log')}`);
  conf = replaceOnce(conf, /^(\s*)access_log\s+\S+/m, (_m, indent) => `${indent}access_log ${path('access.log')}`);
  conf = replaceOnce(
    conf,
    /^(\s*)client_body_temp_path\s+[^;]+;/m,
    (_m, indent) => `${indent}client_body_temp_path ${path('client_temp')};`,
  );
  // nginx creates a temp folder for every compiled-in proxy module at start, used or not.
  conf = replaceOnce(conf, /^(\s*)proxy_temp_path\s+[^;]+;/m, (_m, indent) =>
    ['proxy', 'fastcgi', 'uwsgi', 'scgi']
      .map((kind) => `${indent}${kind}_temp_path ${path(`${kind}_temp`)};`)
      .join('\n'),
  );
  conf = replaceOnce(conf, /^(\s*)listen\s+80;/m, (_m, indent) => `${indent}listen ${options.listen};`);
  // The upstream's one `server` line becomes one line per instance, with the same parameters.
  conf = replaceOnce(conf, /^(\s*)server\s+api:\d+([^;]*);/m, (_m, indent, params) =>
    options.upstreams.map((address) => `${indent}server ${address}${params};`).join('\n'),
  );
  return conf;
}

export interface RunningNginx {
  origin: string;
  dir: string;
  process: ChildProcess;
  /** The access log's JSON lines, parsed (nginx writes each line as the request ends). */
  accessLog(): AccessLogEntry[];
  errorLog(): string;
  stop(): Promise<void>;
}

export interface AccessLogEntry {
  request_id: string;
  method: string;
  uri: string;
  status: number;
  /** "127.0.0.1:3001" or, after a retry, "127.0.0.1:3001, 127.0.0.1:3002". */
  upstream: string;
  upstream_status: string;
  remote: string;
}

async function waitForPort(port: number, timeoutMs: number, exited: () => boolean) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (exited()) throw new Error('nginx exited before listening');
    if (Date.now() > deadline) throw new Error(`nginx did not listen on ${port} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Checks (`nginx -t`) and starts nginx in the foreground with the rendered configuration. */
export async function startNginx(options: RenderOptions & { source?: string }): Promise<RunningNginx> {
  const binary = findNginx();
  if (!binary) throw new Error('nginx is not installed: `npm run setup` installs it (Debian: apt-get install nginx)');
  const port = Number(options.listen.split(':').at(-1));
  mkdirSync(options.dir, { recursive: true, mode: 0o755 });
  const confFile = join(options.dir, 'nginx.conf');
  writeFileSync(confFile, renderNginxConfig(options.source ?? readFileSync(nginxConfPath, 'utf8'), options));
  // -e: the error log before the configuration is read (the compiled-in default may not be writable).
  const args = ['-p', options.dir, '-c', confFile, '-e', join(options.dir, 'error.log')];
  execFileSync(binary, [...args, '-t', '-q'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const child = spawn(binary, [...args, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'inherit'] });
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );
  await waitForPort(port, 10_000, () => exited);
  const read = (name: string) =>
    existsSync(join(options.dir, name)) ? readFileSync(join(options.dir, name), 'utf8') : '';
  return {
    origin: `http://${options.listen}`,
    dir: options.dir,
    process: child,
    accessLog: () =>
      read('access.log')
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as AccessLogEntry),
    errorLog: () => read('error.log'),
    async stop() {
      if (exited) return;
      child.kill('SIGQUIT'); // graceful: finish requests in flight
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exit;
      clearTimeout(timer);
    },
  };
}
