// The shared rate limiter without a background timer (workerd): flushIfDue() flushes at most once
// per flushMs, shares a flush in flight, and stays out of the way where start() runs (Node, Deno).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { systemClock } from '../../shared/clock.ts';
import { SharedRateLimiter } from '../../shared/rate-limit.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
});
afterAll(() => database.close());

const limiter = (name: string) =>
  new SharedRateLimiter(database.db, { name, limit: 1_000, windowMs: 60_000, clock: systemClock, flushMs: 300 });

async function stored(name: string): Promise<number> {
  const docs = await database.db
    .collection<{ _id: string; count: number }>('rate_limits')
    .find({ _id: { $regex: `^${name}:` } })
    .toArray();
  return docs.reduce((sum, doc) => sum + doc.count, 0);
}

it('flushes lazily: at once the first time, then not again until flushMs has passed', async () => {
  const lazy = limiter('lazy');
  lazy.hit('a');
  const first = lazy.flushIfDue();
  expect(first).not.toBeNull();
  // A second caller while the first flush runs shares it instead of starting another.
  expect(lazy.flushIfDue()).toBeNull();
  await first;
  expect(await stored('lazy')).toBe(1);
  lazy.hit('a');
  expect(lazy.flushIfDue()).toBeNull();
  expect(lazy.flushes).toBe(1);
  await new Promise((resolve) => setTimeout(resolve, 400));
  await lazy.flushIfDue();
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
