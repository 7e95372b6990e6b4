// The README's start command on a machine with no MONGO_URL: embedded database, API up, clean stop.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../scripts/mongo/offline-server.ts';
import { waitFor, waitForValue } from '../support/wait.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'loan-admin-start-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('npm start (scripts/start.ts) with no MONGO_URL', () => {
  it('starts the embedded database and the API with a demo admin and demo data, and stops everything on SIGTERM', async () => {
    const port = await freePort();
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), DATA_DIR: dataDir };
    delete env.MONGO_URL;
    const child = spawn(process.execPath, ['scripts/start.ts'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });

    const ready = await waitForValue(
      () => fetch(`http://127.0.0.1:${port}/ready`).catch(() => undefined),
      (reply) => reply?.status === 200,
      { timeoutMs: 90_000, intervalMs: 250, what: 'npm start ready', detail: () => output },
    );
    expect(ready?.status, output).toBe(200);
    expect(await ready?.json()).toEqual({ status: 'ready' });
    expect(output).toMatch(/\[start\] database: (mongod|offline mongo-java-server)/);
    expect(output).toContain(`http://localhost:${port}`);
    // The demo admin it printed can log in and sees the demo applications.
    const credentials = /login: (\S+) \/ (\S+)/.exec(output);
    expect(credentials, output).not.toBeNull();
    const login = await fetch(`http://127.0.0.1:${port}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: credentials![1], password: credentials![2] }),
    });
    expect(login.status).toBe(200);
    const { accessToken } = await login.json();
    const list = await fetch(`http://127.0.0.1:${port}/api/applications?limit=5`, {
      headers: { authorization: `Bearer ${accessToken}` },
    });
    expect(list.status).toBe(200);
    expect(await list.json()).toMatchObject({ total: 200, limit: 5 });
    expect((await fetch(`http://127.0.0.1:${port}/docs`)).status).toBe(200);
    // A development ledger key was made in the data folder (owner-only) and keys the chain the API verifies.
    expect(readFileSync(join(dataDir, 'ledger-keys'), 'utf8')).toMatch(/^ledger1:[A-Za-z0-9+/]{43}=\n$/);
    expect(statSync(join(dataDir, 'ledger-keys')).mode & 0o777).toBe(0o600);
    const verify = await fetch(`http://127.0.0.1:${port}/api/ledger/verify`, {
      headers: { authorization: `Bearer ${accessToken}` },
    });
    expect(await verify.json()).toMatchObject({ ok: true, mismatches: [] });
    // The workers run beside the API.
    for (const worker of ['approval', 'ocr']) {
      await waitFor(() => output.includes(`"msg":"worker started","worker":"${worker}"`), {
        timeoutMs: 20_000,
        intervalMs: 100,
        what: `the ${worker} worker started`,
        detail: () => output,
      });
      expect(output).toContain(`"msg":"worker started","worker":"${worker}"`);
    }

    const dbPort = Number(/MONGO_URL=mongodb:\/\/127\.0\.0\.1:(\d+)/.exec(output)?.[1]);
    expect(dbPort).toBeGreaterThan(0);

    const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(await portAnswers(port)).toBe(false);
    expect(await portAnswers(dbPort)).toBe(false);
  }, 120_000);
});

describe('api/node.ts with a bad configuration', () => {
  it('exits with code 2 and one message that lists every problem', async () => {
    const child = spawn(process.execPath, ['api/node.ts'], {
      env: { ...process.env, MONGO_URL: 'localhost', PORT: 'eighty', DB_POOL_MAX: '0', LEDGER_KEYS: 'no-kid' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toMatch(/^Invalid configuration:/);
    for (const name of ['MONGO_URL', 'PORT', 'DB_POOL_MAX', 'LEDGER_KEYS']) expect(stderr).toContain(`- ${name}:`);
    expect(stderr).not.toMatch(/\n\s+at /);
  });
});
