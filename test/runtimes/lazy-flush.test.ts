// The shared rate limiter without a background timer (workerd): flushIfDue() flushes at most once
// per flushMs, shares a flush in flight, and stays out of the way where start() runs (Node, Deno).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SharedRateLimiter } from '../../shared/concurrency/rate-limit.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
});
afterAll(() => database.close());

const FLUSH_MS = 300;

/** A clock that moves only when told, at the start of a rate window, so no stall can pass flushMs. */
function manualClock() {
  let now = Math.ceil(Date.now() / 60_000) * 60_000;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

const limiter = (name: string, clock = manualClock()) =>
  new SharedRateLimiter(database.db, { name, limit: 1_000, windowMs: 60_000, clock, flushMs: FLUSH_MS });

async function stored(name: string): Promise<number> {
  const docs = await database.db
    .collection<{ _id: string; count: number }>('rate_limits')
    .find({ _id: { $regex: `^${name}:` } })
    .toArray();
  return docs.reduce((sum, doc) => sum + doc.count, 0);
}

it('flushes lazily: at once the first time, then not again until flushMs has passed', async () => {
  const clock = manualClock();
  const lazy = limiter('lazy', clock);
  lazy.hit('a');
  const first = lazy.flushIfDue();
  expect(first).not.toBeNull();
  // A second caller while the first flush runs shares it instead of starting another.
  expect(lazy.flushIfDue()).toBeNull();
  await first;
  expect(await stored('lazy')).toBe(1);
  lazy.hit('a');
  clock.advance(FLUSH_MS - 1);
  expect(lazy.flushIfDue()).toBeNull();
  expect(lazy.flushes).toBe(1);
  clock.advance(1);
  const second = lazy.flushIfDue();
  expect(second).not.toBeNull();
  await second;
  expect(lazy.flushes).toBe(2);
  expect(await stored('lazy')).toBe(2);
});

it('leaves flushing to the background timer where start() runs', async () => {
  const timed = limiter('timed');
  timed.start();
  try {
    timed.hit('a');
    expect(timed.flushIfDue()).toBeNull();
  } finally {
    await timed.stop();
  }
  expect(await stored('timed')).toBe(1);
});
