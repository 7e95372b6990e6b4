// `npm run mongo`: the script names a file that exists, answers --help through npm, refuses a bad
// option, and starts an offline server a driver can use, stopped by SIGTERM.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { freePort } from '../../scripts/mongo/offline-server.ts';
import { stopProcess } from '../../scripts/processes.ts';

const root = join(import.meta.dirname, '..', '..');
const script = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts.mongo as string;
const started: ReturnType<typeof spawn>[] = [];
afterAll(async () => {
  await Promise.all(started.map((child) => stopProcess(child, 10_000)));
});

describe('npm run mongo', () => {
  it('names a file that exists, and prints its usage through npm with --help', () => {
    const file = /^node (\S+)$/.exec(script)?.[1];
    expect(file, script).toBeDefined();
    expect(existsSync(join(root, file!))).toBe(true);
    const help = spawnSync('npm', ['run', '--silent', 'mongo', '--', '--help'], { cwd: root, encoding: 'utf8' });
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: npm run mongo/);
    expect(help.stdout).toContain('--data <file>');
  });

  it('refuses an unknown option or a bad port with exit 2 and the usage', () => {
    for (const args of [['--bogus'], ['--port', 'eighty']]) {
      const run = spawnSync(process.execPath, [join(root, 'scripts/mongo/cli.ts'), ...args], { encoding: 'utf8' });
      expect(run.status, args.join(' ')).toBe(2);
      expect(run.stderr).toContain('Usage: npm run mongo');
    }
  });

  it('starts a server on the port asked for, which a driver reads and writes, and stops on SIGTERM', async () => {
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [join(root, 'scripts/mongo/cli.ts'), '--port', String(port), '--heap', '256m'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    started.push(child);
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const url = await vi.waitFor(
      () => {
        if (child.exitCode !== null) return null; // died: fail now, not after the wait
        const found = /^MONGO_URL=(\S+)$/m.exec(output)?.[1];
        if (!found) throw new Error(`no MONGO_URL yet: ${output}`);
        return found;
      },
      { timeout: 90_000, interval: 100 },
    );
    expect(url, output).toBe(`mongodb://127.0.0.1:${port}`);
    const client = await new MongoClient(url!, { serverSelectionTimeoutMS: 5_000 }).connect();
    try {
      await client
        .db('cli')
        .collection('c')
        .insertOne({ _id: 'x' as never, n: 1 });
      expect(
        await client
          .db('cli')
          .collection('c')
          .findOne({ _id: 'x' as never }),
      ).toMatchObject({ n: 1 });
    } finally {
      await client.close();
    }
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(output).toContain('SIGTERM: stopping');
    // The Java server went with it: nothing listens on the port any more.
    const after = new MongoClient(url!, { serverSelectionTimeoutMS: 500 });
    await expect(after.db('cli').command({ ping: 1 })).rejects.toThrow();
    await after.close();
  }, 120_000);
});
