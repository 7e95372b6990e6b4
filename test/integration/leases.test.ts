import { connect, createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  claimFence,
  fencedUpdate,
  fenceField,
  type Lease,
  LOCKS_COLLECTION,
  type LockDoc,
  LockManager,
} from '../../shared/concurrency/leases.ts';
import type { Clock } from '../../shared/core/clock.ts';
import { LockLostError, LockTimeoutError, StaleTokenError } from '../../shared/core/errors.ts';
import { mongoUrl, openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';
import { startNode } from '../support/processes.ts';
import { sleep } from '../support/wait.ts';

interface Counter {
  _id: string;
  value: number;
}

const skewed = (offsetMs: number): Clock => ({ now: () => performance.now() + offsetMs });

/** Resolves when the signal aborts, or after timeoutMs (so a missing abort fails an assertion, not the run). */
function aborted(signal: AbortSignal, timeoutMs: number): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** A TCP relay to the database that can be frozen: bytes stop flowing both ways, connections stay open. */
async function freezableProxy(host: string, port: number) {
  const sockets: Socket[] = [];
  let frozen = false;
  const server: Server = createServer((downstream) => {
    const upstream = connect(port, host);
    sockets.push(downstream, upstream);
    for (const [from, to] of [
      [downstream, upstream],
      [upstream, downstream],
    ] as const) {
      from.on('data', (chunk) => {
        if (!frozen) to.write(chunk);
      });
      from.on('error', () => to.destroy());
      from.on('close', () => to.destroy());
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    freeze: () => {
      frozen = true;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe(`shared/concurrency/leases on ${target().kind}`, () => {
  let t: TestDatabase;
  const extraClients: MongoClient[] = [];

  beforeAll(async () => {
    t = await openTestDatabase(import.meta.filename);
  });
  afterAll(async () => {
    await Promise.all(extraClients.map((client) => client.close()));
    await t?.close();
  });

  async function otherClient(): Promise<MongoClient> {
    const client = new MongoClient(mongoUrl(), { maxPoolSize: 10 });
    await client.connect();
    extraClients.push(client);
    return client;
  }

  it('20 contenders x 50 read-wait-write sections on one counter over 4 connection pools: exactly 1000, tokens increasing', async () => {
    const clients = [t.client, await otherClient(), await otherClient(), await otherClient()];
    const counters = t.db.collection<Counter>('counters');
    await counters.insertOne({ _id: 'c', value: 0 });
    const sections: { token: number; read: number }[] = [];
    const started = performance.now();
    await Promise.all(
      Array.from({ length: 20 }, async (_, contender) => {
        const db = clients[contender % clients.length]!.db(t.name);
        const counter = db.collection<Counter>('counters');
        const locks = new LockManager(db, { owner: `contender-${contender}` });
        for (let i = 0; i < 50; i++) {
          await locks.withLock(
            'counter',
            async (lease) => {
              const doc = await counter.findOne({ _id: 'c' });
              sections.push({ token: lease.token, read: doc!.value });
              await sleep(Math.random() * 2);
              await counter.updateOne({ _id: 'c' }, { $set: { value: doc!.value + 1 } });
            },
            { ttlMs: 10_000, waitMs: 60_000 },
          );
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    console.log(`1000 sections by 20 contenders in ${seconds.toFixed(1)} s`);
    expect((await counters.findOne({ _id: 'c' }))?.value).toBe(1000);
    // Sections are exclusive, so the order of pushes is the order of acquisition.
    expect(sections.map((s) => s.read)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    const tokens = sections.map((s) => s.token);
    expect(new Set(tokens).size).toBe(1000);
    expect(tokens.every((token, i) => i === 0 || token > tokens[i - 1]!)).toBe(true);
    const lockDoc = await t.db.collection<LockDoc>(LOCKS_COLLECTION).findOne({ _id: 'counter' });
    expect(lockDoc?.token).toBe(1000); // never deleted on release, so it counts every acquisition
  }, 180_000); // 5-9 s on a quiet machine; a busy 2-core box can take minutes

  it('tokens are distinct and strictly increasing per key across managers on separate clients', async () => {
    const clients = [t.client, await otherClient()];
    const keys = ['tok-a', 'tok-b', 'tok-c'];
    const seen = new Map<string, number[]>(keys.map((key) => [key, []]));
    await Promise.all(
      Array.from({ length: 6 }, async (_, contender) => {
        const locks = new LockManager(clients[contender % 2]!.db(t.name));
        for (let i = 0; i < 30; i++) {
          const key = keys[(contender + i) % keys.length]!;
          await locks.withLock(key, (lease) => void seen.get(key)!.push(lease.token), { waitMs: 30_000 });
        }
      }),
    );
    for (const key of keys) {
      const tokens = seen.get(key)!;
      expect(tokens.length).toBe(60);
      expect(tokens).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    }
  });

  it('a holder frozen (SIGSTOP) past its TTL loses the lease, and its guarded writes are refused by token', async () => {
    const key = 'ledger-1';
    const ttlMs = 1500;
    const ledgers = t.db.collection<{ _id: string; entries: string[] }>('ledgers');
    await ledgers.insertOne({ _id: key, entries: [] });
    const fixture = fileURLToPath(new URL('../fixtures/lease-holder.ts', import.meta.url));
    const holder = startNode(fixture, { args: [mongoUrl(), t.name, key, String(ttlMs), '--with-lock'], stdin: true });
    const locks = new LockManager(t.db, { owner: 'test' });
    try {
      const childToken = (await holder.event('acquired')).token as number;
      holder.child.kill('SIGSTOP');
      expect(await locks.acquire(key, { waitMs: 0 })).toBeNull(); // still live: its TTL has not run out
      const lease = await locks.acquire(key, { ttlMs: 30_000, waitMs: 20_000 });
      expect(lease).not.toBeNull();
      expect(lease!.token).toBeGreaterThan(childToken);
      await fencedUpdate(ledgers, { _id: key }, { $push: { entries: `test:${lease!.token}` } }, lease!);
      await claimFence(t.db, `payout:${key}`, lease!);

      expect(await holder.resume('go')).toBe(0);
      expect(holder.reported('fencedUpdate')?.outcome).toBe('stale_token');
      expect(holder.reported('claimFence')?.outcome).toBe('stale_token');
      expect(holder.reported('withLock')?.outcome).toBe('lock_lost');

      const stored = await ledgers.findOne({ _id: key });
      expect(stored?.entries).toEqual([`test:${lease!.token}`]);
      expect(await locks.release(lease!)).toBe(true);
    } finally {
      await holder.kill();
    }
  });

  it('withLock renews the lease (every ttl/3) while fn outlasts its TTL; nobody else gets it meanwhile', async () => {
    const holder = new LockManager(t.db);
    const rival = new LockManager(t.db);
    // Renewed every 0.5 s, the 1.5 s TTL leaves a renewal 1 s of slack on a loaded machine (with 0.6 s,
    // 0.4 s: the queue's equivalent test lost its lease that way); fn runs for two TTLs.
    const ttlMs = 1_500;
    let seen: Lease | undefined;
    const stolen: (Lease | null)[] = [];
    const result = await holder.withLock(
      'long-section',
      async (lease) => {
        seen = lease;
        for (let i = 0; i < 4; i++) {
          await sleep(ttlMs / 2);
          stolen.push(await rival.acquire('long-section', { waitMs: 0 }));
        }
        return lease.token;
      },
      { ttlMs },
    );
    expect(result).toBe(seen!.token);
    expect(stolen).toEqual([null, null, null, null]);
    await sleep(ttlMs / 2);
    expect(seen!.signal.aborted).toBe(false); // released cleanly, never reported lost
    expect(await rival.acquire('long-section', { waitMs: 0 })).not.toBeNull();
  });

  it('withLock: a lease taken over while fn runs aborts lease.signal and raises LockLostError though fn resolves', async () => {
    const holder = new LockManager(t.db, { owner: 'holder' });
    const rival = new LockManager(t.db, { owner: 'rival' });
    let seen: Lease | undefined;
    const run = holder.withLock(
      'takeover',
      async (lease) => {
        seen = lease;
        // As if the holder had stalled past its TTL: the server now considers the lease expired.
        await t.db
          .collection<LockDoc>(LOCKS_COLLECTION)
          .updateOne({ _id: 'takeover' }, { $set: { stampedAt: new Date(0) } });
        const taken = await rival.acquire('takeover', { ttlMs: 30_000 });
        expect(taken?.token).toBe(lease.token + 1);
        expect(await aborted(lease.signal, 5_000)).toBe(true); // the next renewal (ttl/3) finds it gone
        return 'finished anyway';
      },
      // Renewals every 1 s with 3 s to spare: even on a busy machine a renewal, not the local
      // deadline, is what notices the takeover.
      { ttlMs: 3_000 },
    );
    await expect(run).rejects.toBeInstanceOf(LockLostError);
    expect(seen?.signal.reason).toBeInstanceOf(LockLostError);
    expect(String(seen?.signal.reason.message)).toMatch(/taken over/);
  });

  const single = /^mongodb:\/\/(?:[^@/]*@)?([^/,:]+):(\d+)/.exec(mongoUrl());
  it.skipIf(!single)(
    'withLock: renewals that cannot reach the database abort lease.signal at the local deadline (needs a single-host mongodb:// URL to relay)',
    async () => {
      const proxy = await freezableProxy(single![1]!, Number(single![2]));
      const client = new MongoClient(mongoUrl().replace(`${single![1]}:${single![2]}`, `127.0.0.1:${proxy.port}`), {
        directConnection: true,
        serverSelectionTimeoutMS: 30_000,
      });
      try {
        await client.connect();
        const holder = new LockManager(client.db(t.name));
        const ttlMs = 900;
        let seen: Lease | undefined;
        const started = performance.now();
        const run = holder.withLock(
          'unreachable',
          async (lease) => {
            seen = lease;
            proxy.freeze();
            expect(await aborted(lease.signal, 10_000)).toBe(true);
          },
          { ttlMs },
        );
        await expect(run).rejects.toBeInstanceOf(LockLostError);
        expect(performance.now() - started).toBeGreaterThanOrEqual(ttlMs - 5);
        expect(String(seen?.signal.reason.message)).toMatch(/local deadline/);
        // The server lets the lease go by its own clock: another manager gets it shortly after.
        const next = await new LockManager(t.db).acquire('unreachable', { waitMs: 10_000 });
        expect(next?.token).toBe(seen!.token + 1);
      } finally {
        await proxy.close();
        await client.close(true).catch(() => {});
      }
    },
  );

  it('clock skew of +5 s and -5 s between two managers: no stealing a live lease, re-acquirable right after its TTL', async () => {
    const fast = new LockManager(t.db, { owner: 'fast', clock: skewed(5_000) });
    const slow = new LockManager(t.db, { owner: 'slow', clock: skewed(-5_000) });
    const ttlMs = 1_500;
    for (const [holder, other] of [
      [slow, fast],
      [fast, slow],
    ] as const) {
      const key = `skew-${holder.owner}`;
      const sentAt = performance.now();
      const lease = await holder.acquire(key, { ttlMs });
      expect(lease).not.toBeNull();
      expect(await other.acquire(key, { ttlMs, waitMs: 0 })).toBeNull();
      expect(await other.acquire(key, { ttlMs, waitMs: 300 })).toBeNull();
      const next = await other.acquire(key, { ttlMs, waitMs: 10_000 });
      const waited = performance.now() - sentAt;
      expect(next?.token).toBe(lease!.token + 1);
      expect(waited).toBeGreaterThanOrEqual(ttlMs - 5); // the server's clock decided, not the +-5 s ones
      expect(waited).toBeLessThan(ttlMs + 3_000);
      await sleep(0);
      // The holder's own deadline (its skewed clock, measured from sending) passed before the takeover.
      expect(lease!.signal.aborted).toBe(true);
      expect(lease!.expiresAt.getTime()).toBeLessThanOrEqual(next!.expiresAt.getTime() - ttlMs);
      await other.release(next!);
    }
  });

  it('acquire gives up with null after about waitMs; withLock then throws LockTimeoutError', async () => {
    const holder = new LockManager(t.db);
    const waiter = new LockManager(t.db);
    const lease = await holder.acquire('busy', { ttlMs: 30_000 });
    const started = performance.now();
    expect(await waiter.acquire('busy', { waitMs: 700 })).toBeNull();
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThanOrEqual(700);
    expect(waited).toBeLessThan(700 + 1_500);
    const ran: string[] = [];
    await expect(waiter.withLock('busy', () => ran.push('fn'), { waitMs: 200 })).rejects.toBeInstanceOf(
      LockTimeoutError,
    );
    expect(ran).toEqual([]);
    await holder.release(lease!);
  });

  it("a stale holder's release changes nothing (other owner, or same owner with an old token)", async () => {
    const locks = t.db.collection<LockDoc>(LOCKS_COLLECTION);
    const first = new LockManager(t.db, { owner: 'first' });
    const second = new LockManager(t.db, { owner: 'second' });
    const old = await first.acquire('stale-release', { ttlMs: 400 });
    const current = await second.acquire('stale-release', { ttlMs: 30_000, waitMs: 10_000 });
    expect(current!.token).toBe(old!.token + 1);
    const before = await locks.findOne({ _id: 'stale-release' });
    expect(await first.release(old!)).toBe(false);
    expect(await locks.findOne({ _id: 'stale-release' })).toEqual(before);
    expect(await first.acquire('stale-release', { waitMs: 0 })).toBeNull();

    const mine = await second.acquire('same-owner', { ttlMs: 400 });
    const mineAgain = await second.acquire('same-owner', { ttlMs: 30_000, waitMs: 10_000 });
    expect(mineAgain!.token).toBe(mine!.token + 1);
    expect(await second.release(mine!)).toBe(false);
    expect(await first.acquire('same-owner', { waitMs: 0 })).toBeNull();

    expect(await second.release(current!)).toBe(true);
    expect(await second.release(mineAgain!)).toBe(true);
    expect(await first.acquire('stale-release', { waitMs: 0 })).not.toBeNull();
    expect(await first.acquire('same-owner', { waitMs: 0 })).not.toBeNull();
  });

  it('withLock always releases, also when fn throws', async () => {
    const locks = new LockManager(t.db);
    const other = new LockManager(t.db);
    await expect(
      locks.withLock('throws', () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    const next = await other.acquire('throws', { waitMs: 0 });
    expect(next).not.toBeNull();
    await other.release(next!);
    expect(await locks.withLock('throws', (lease) => lease.token)).toBe(next!.token + 1);
    expect(await other.acquire('throws', { waitMs: 0 })).not.toBeNull();
  });

  it('fencedUpdate: accepts equal or newer tokens, refuses older ones, leaves absent documents alone', async () => {
    const docs = t.db.collection<{ _id: string; v: number }>('fenced');
    await docs.insertOne({ _id: 'd', v: 0 });
    const lease = (token: number) => ({ key: 'loan.7$x', token });
    expect((await fencedUpdate(docs, { _id: 'd' }, { $set: { v: 5 } }, lease(5))).modifiedCount).toBe(1);
    expect((await fencedUpdate(docs, { _id: 'd' }, { $inc: { v: 1 } }, lease(5))).modifiedCount).toBe(1);
    await expect(fencedUpdate(docs, { _id: 'd' }, { $set: { v: 3 } }, lease(3))).rejects.toBeInstanceOf(
      StaleTokenError,
    );
    expect((await fencedUpdate(docs, { _id: 'd' }, { $set: { v: 8 } }, lease(8))).modifiedCount).toBe(1);
    expect((await fencedUpdate(docs, { _id: 'missing' }, { $set: { v: 1 } }, lease(9))).matchedCount).toBe(0);
    const stored = await docs.findOne({ _id: 'd' });
    expect(stored).toEqual({ _id: 'd', v: 8, fences: { 'loan%2E7%24x': 8 } });
    expect(fenceField('loan.7$x')).toBe('fences.loan%2E7%24x');
    // A fence for another lock key is independent.
    expect((await fencedUpdate(docs, { _id: 'd' }, { $set: { v: 9 } }, { key: 'other', token: 1 })).modifiedCount).toBe(
      1,
    );
  });
});
