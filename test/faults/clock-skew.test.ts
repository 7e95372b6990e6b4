// Fault: instances whose clocks disagree by seconds. Leases are covered by test/integration/leases.test.ts
// ("clock skew of +5 s and -5 s between two managers"); here: access-token expiry and not-before across
// skewed instances, logout-all across instances that correct their clocks against the server, and queue
// backoff and delays written by a worker or producer whose local clock is off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type JobDocument, Queue, queueIndexes, Worker } from '../../shared/concurrency/queue/index.ts';
import { type Clock, ServerClock } from '../../shared/core/clock.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { Revocations, revocationIndexes } from '../../shared/identity/revocations.ts';
import { parseJwtKeys, Sessions, sessionIndexes } from '../../shared/identity/sessions.ts';
import { openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';
import { waitFor } from '../support/wait.ts';

const secret = btoa(String.fromCharCode(...new Uint8Array(32).fill(7)));
const keys = parseJwtKeys(`k1:${secret}`);
const admin = { id: 'admin-skew', roles: ['admin' as const] };
const TTL_S = 30;

/** A clock that runs `offsetMs` off the machine's; the offset may be changed to move time. */
const offsetClock = (offsetMs: number) => {
  const clock = { offsetMs, now: () => Date.now() + clock.offsetMs };
  return clock;
};

let t: TestDatabase;

function instance(clock: Clock) {
  const revocations = new Revocations(t.db, { retainMs: TTL_S * 1000, maxStalenessMs: 100, clock });
  return new Sessions(t.db, { keys, signingKid: 'k1', accessTtlS: TTL_S, refreshTtlS: 3_600, clock, revocations });
}

beforeAll(async () => {
  t = await openTestDatabase(import.meta.filename);
  await ensureIndexes(t.db, [sessionIndexes, revocationIndexes, queueIndexes]);
});
afterAll(async () => {
  await t.close();
});

describe(`token expiry across instances whose clocks disagree, on ${target().kind}`, () => {
  for (const skewMs of [5_000, -5_000]) {
    it(`a token issued by an instance ${skewMs > 0 ? '+' : ''}${skewMs / 1000} s off verifies on another within the 5 s tolerance, and is refused once expired`, async () => {
      const issuer = instance(offsetClock(skewMs));
      const verifierClock = offsetClock(0);
      const verifier = instance(verifierClock);
      const { accessToken } = await issuer.issue(admin);
      await expect(verifier.verify(accessToken)).resolves.toMatchObject({ sub: admin.id });
      // The token's exp is the issuer's now + TTL: on the verifier's clock that is TTL + skew from now,
      // and the verifier grants 5 s of tolerance past it, no more.
      const expiresIn = TTL_S * 1000 + skewMs;
      verifierClock.offsetMs = expiresIn - 1_500;
      await expect(verifier.verify(accessToken)).resolves.toMatchObject({ sub: admin.id });
      verifierClock.offsetMs = expiresIn + 3_000;
      await expect(verifier.verify(accessToken)).resolves.toMatchObject({ sub: admin.id });
      verifierClock.offsetMs = expiresIn + 6_500;
      await expect(verifier.verify(accessToken)).rejects.toMatchObject({ code: 'token_expired' });
      verifierClock.offsetMs = 3_600_000;
      await expect(verifier.verify(accessToken)).rejects.toMatchObject({ code: 'token_expired' });
    });
  }

  it('a token issued by an instance 30 s ahead (beyond the tolerance) is not yet valid elsewhere', async () => {
    const ahead = instance(offsetClock(30_000));
    const verifier = instance(offsetClock(0));
    const { accessToken } = await ahead.issue(admin);
    await expect(verifier.verify(accessToken)).rejects.toMatchObject({ code: 'unauthorized' });
    // ...and it becomes valid once the verifier's clock has caught up to within the tolerance.
    const later = offsetClock(27_000);
    await expect(instance(later).verify(accessToken)).resolves.toMatchObject({ sub: admin.id });
  });

  it('instances whose local clocks are +5 s and -5 s off correct them against the server: logout-all on one refuses a token just issued by the other', async () => {
    const fastLocal = offsetClock(5_000);
    const slowLocal = offsetClock(-5_000);
    const fastClock = new ServerClock(t.db, fastLocal);
    const slowClock = new ServerClock(t.db, slowLocal);
    await Promise.all([fastClock.sync(), slowClock.sync()]);
    expect(Math.abs(fastClock.offset + 5_000)).toBeLessThan(1_000);
    expect(Math.abs(slowClock.offset - 5_000)).toBeLessThan(1_000);
    for (const [issuerClock, issuerLocal, revokerClock, revokerLocal] of [
      [fastClock, fastLocal, slowClock, slowLocal],
      [slowClock, slowLocal, fastClock, fastLocal],
    ] as const) {
      const issuer = instance(issuerClock);
      const revoker = instance(revokerClock);
      const who = { id: `admin-${crypto.randomUUID()}`, roles: ['admin' as const] };
      const { accessToken } = await issuer.issue(who);
      await expect(revoker.verify(accessToken)).resolves.toMatchObject({ sub: who.id });
      await expect(issuer.verify(accessToken)).resolves.toMatchObject({ sub: who.id }); // its cache is now synced
      revokerLocal.offsetMs += 20; // the logout comes after the token, as seen by a clock that both share
      await revoker.logoutAll(who.id);
      await expect(revoker.verify(accessToken)).rejects.toMatchObject({ code: 'token_revoked' });
      // The issuer's cache refreshes once older than its staleness bound (100 ms): move its clock past it
      // rather than sleep, so neither a stall nor a fast machine decides what is tested.
      issuerLocal.offsetMs += 101;
      await expect(issuer.verify(accessToken)).rejects.toMatchObject({ code: 'token_revoked' });
    }
  });
});

describe(`queue backoff and delays with skewed local clocks, on ${target().kind}`, () => {
  for (const skewMs of [5_000, -5_000]) {
    it(`a worker whose clock is ${skewMs > 0 ? '+' : ''}${skewMs / 1000} s off: ServerClock corrects it, a retry never runs before its backoff`, async () => {
      const name = `skew-retry-${skewMs}`;
      const backoffMs = 1_500;
      const queue = new Queue(t.db);
      const job = await queue.add(name, {}, { attempts: 2, backoff: { type: 'fixed', delay: backoffMs } });
      const runs: number[] = [];
      const failedAt: number[] = [];
      const clock = new ServerClock(t.db, offsetClock(skewMs));
      const worker = new Worker(
        t.db,
        name,
        async () => {
          runs.push(Date.now());
          if (runs.length === 1) {
            failedAt.push(Date.now());
            throw new Error('first attempt fails');
          }
          return 'ok';
        },
        { clock, pollMs: 100, leaseMs: 10_000 },
      );
      await worker.run();
      try {
        expect(Math.abs(clock.offset + skewMs)).toBeLessThan(1_000); // it measured its own error
        await waitFor(async () => (await queue.getJob(job.id))?.state === 'completed', {
          timeoutMs: 20_000,
          what: 'the retry completed',
        });
      } finally {
        await worker.close(2_000);
      }
      expect(runs).toHaveLength(2);
      // This machine's clock is the server's (same host): the gap is real time.
      const gap = runs[1]! - failedAt[0]!;
      expect(gap).toBeGreaterThanOrEqual(backoffMs - 100);
      expect(gap).toBeLessThan(backoffMs + 5_000);
      const stored = await t.db.collection<JobDocument>('jobs').findOne({ _id: job.id });
      expect(stored?.attemptsMade).toBe(1);
      console.log(`worker ${skewMs} ms off: retry ran ${gap} ms after the failure (backoff ${backoffMs} ms)`);
    });
  }

  it('a producer 5 s ahead and a worker 5 s behind: a 1.5 s delayed job runs neither early nor 10 s late', async () => {
    const name = 'skew-delay';
    const producer = new Queue(t.db, { clock: new ServerClock(t.db, offsetClock(5_000)) });
    let ranAt = 0;
    const worker = new Worker(
      t.db,
      name,
      async () => {
        ranAt = Date.now();
      },
      { clock: new ServerClock(t.db, offsetClock(-5_000)), pollMs: 100 },
    );
    await worker.run();
    try {
      const addedAt = Date.now();
      const job = await producer.add(name, {}, { delay: 1_500 });
      await waitFor(async () => (await producer.getJob(job.id))?.state === 'completed', {
        timeoutMs: 20_000,
        what: 'the delayed job ran',
      });
      expect(ranAt - addedAt).toBeGreaterThanOrEqual(1_400);
      expect(ranAt - addedAt).toBeLessThan(6_000);
      console.log(`delayed job (1500 ms) ran ${ranAt - addedAt} ms after it was added`);
    } finally {
      await worker.close(2_000);
    }
  });
});
