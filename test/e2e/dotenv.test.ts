// The Node entries read a .env file in their working directory, with the names an operator may
// bring: MONGO_URI for MONGO_URL, the database named in its path. Real processes, nothing else set.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { freePort } from '../../scripts/mongo/offline-server.ts';
import { stopProcess } from '../../scripts/processes.ts';
import { randomJwtKeys } from '../support/app.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const root = join(import.meta.dirname, '..', '..');
let database: TestDatabase;
let dir: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  dir = mkdtempSync(join(tmpdir(), 'dotenv-e2e-'));
});
afterAll(async () => {
  await Promise.all(children.map((child) => stopProcess(child)));
  rmSync(dir, { recursive: true, force: true });
  await database?.close();
});

/** The run's MongoDB URL with this file's database in its path. */
function uriWithDatabase(): string {
  const [base, query] = mongoUrl().split('?');
  return `${base!.replace(/\/$/, '')}/${database.name}${query ? `?${query}` : ''}`;
}

/** Starts `file` in `cwd` with an environment that has none of the settings (they come from .env). */
function start(file: string, cwd: string) {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) => !/^(MONGO_|JWT_|PORT$|HOST$|WORKER_PROBE_PORT$|ADMIN_|LOG_LEVEL$)/.test(name),
    ),
  );
  const child = spawn(process.execPath, [join(root, file)], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  children.push(child);
  return { child, output: () => output };
}

const status = (url: string) =>
  fetch(url).then(
    (r) => r.status,
    () => 0,
  );

describe('.env in the working directory', () => {
  it('configures the API and a worker: MONGO_URI with the database in its path, no MONGO_URL or MONGO_DB', async () => {
    const [apiPort, probePort] = [await freePort(), await freePort()];
    writeFileSync(
      join(dir, '.env'),
      [
        `MONGO_URI=${uriWithDatabase()}`,
        `JWT_KEYS=${randomJwtKeys('env1')}`,
        `LEDGER_KEYS=${randomJwtKeys('ledger1')}`,
        'HOST=127.0.0.1',
        `PORT=${apiPort}`,
        `WORKER_PROBE_PORT=${probePort}`,
        'LOG_LEVEL=warn',
        'PASSWORD_ITERATIONS=1000',
        'REPLAY_INTERVAL_MS=200',
        'ADMIN_EMAIL=dotenv-admin@example.com',
        'ADMIN_PASSWORD=dotenv-password-123',
      ].join('\n'),
    );
    const api = start('api/node.ts', dir);
    const worker = start('workers/approval/main.ts', dir);
    await vi.waitFor(
      async () => {
        expect(api.child.exitCode, api.output()).toBeNull();
        expect(worker.child.exitCode, worker.output()).toBeNull();
        expect(await status(`http://127.0.0.1:${apiPort}/ready`)).toBe(200);
        expect(await status(`http://127.0.0.1:${probePort}/ready`)).toBe(200);
      },
      { timeout: 60_000, interval: 200 },
    );
    // Both work in the database the URI's path names: the first admin from .env logs in there.
    const login = await fetch(`http://127.0.0.1:${apiPort}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'dotenv-admin@example.com', password: 'dotenv-password-123' }),
    });
    expect(login.status).toBe(200);
    expect(await database.db.collection('admins').countDocuments({ email: 'dotenv-admin@example.com' })).toBe(1);
    // The approval worker's replay runs under a lease that only it takes.
    await vi.waitFor(
      async () =>
        expect(await database.db.collection('locks').findOne({ _id: 'replay:last-changes' as never })).not.toBeNull(),
      { timeout: 20_000, interval: 100 },
    );
  }, 90_000);
});
