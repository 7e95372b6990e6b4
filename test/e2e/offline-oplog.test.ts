// The offline server's oplog keeps a window, like a real server's capped oplog: without it every change
// stream's getMore scans every write ever made, and a long-running `npm start` or a test run after a bulk
// load slows down for everyone. Runs its own servers, whatever the suite's target is.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { type OfflineServer, startOfflineServer } from '../../scripts/mongo/offline-server.ts';

const RETENTION_S = 10;
const servers: OfflineServer[] = [];
const clients: MongoClient[] = [];
const dir = mkdtempSync(join(tmpdir(), 'offline-oplog-'));
afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await Promise.all(servers.map((server) => server.stop()));
  rmSync(dir, { recursive: true, force: true });
});

async function open(options: Parameters<typeof startOfflineServer>[0]) {
  const server = await startOfflineServer(options);
  servers.push(server);
  const client = new MongoClient(server.url);
  await client.connect();
  clients.push(client);
  return { server, client, oplog: client.db('local').collection('oplog.rs') };
}

describe('the offline server', () => {
  it.each([
    ['in memory', undefined],
    ['on an H2 file, restarted', 'oplog.h2'],
  ])(
    '%s: drops oplog entries older than its retention, and an open change stream still delivers what comes after',
    async (_, file) => {
      const path = file ? join(dir, file) : undefined;
      if (path) {
        // A file written by an earlier run already has the oplog and its index.
        const first = await open({ file: path });
        await first.client.db('t').collection('seed').insertOne({ n: 0 });
        await first.client.close();
        await first.server.stop();
      }
      const { client, oplog } = await open({ file: path, oplogRetentionSeconds: RETENTION_S });
      const db = client.db('t');
      const stream = db.collection('watched').watch([], { maxAwaitTimeMS: 100 });
      await stream.tryNext(); // opens the cursor: it starts at the oplog's present
      await db.collection('bulk').insertMany(Array.from({ length: 1_000 }, (_, n) => ({ n })));
      // Kept while it is younger than the retention (10 s: a busy machine's insert and count fit in it)...
      expect(await oplog.countDocuments({ ns: 't.bulk' })).toBe(1_000);
      // ...and gone after it (the trimmer runs every second).
      await vi.waitFor(async () => expect(await oplog.countDocuments({ ns: 't.bulk' })).toBe(0), {
        timeout: 60_000,
        interval: 250,
      });
      await db.collection('watched').insertOne({ after: 'trim' });
      const change = await vi.waitFor(
        async () => {
          const next = await stream.tryNext();
          expect(next).not.toBeNull();
          return next!;
        },
        { timeout: 30_000, interval: 50 },
      );
      expect(change).toMatchObject({ operationType: 'insert', fullDocument: { after: 'trim' } });
      await stream.close();
    },
    120_000,
  );
});
