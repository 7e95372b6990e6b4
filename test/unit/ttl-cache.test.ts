// The generic TTL + single-flight + bounded cache, on a hand-moved clock and loads the test settles itself.
import { describe, expect, it } from 'vitest';
import { TtlCache } from '../../shared/concurrency/ttl-cache.ts';

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function setup(ttlMs = 1000, maxEntries = 100) {
  const clock = { t: 1_000_000, now: () => clock.t };
  const cache = new TtlCache<string, string | undefined>({ clock, ttlMs, maxEntries });
  let loads = 0;
  const load = (value: string) => () => {
    loads++;
    return Promise.resolve(value);
  };
  return { clock, cache, load, loads: () => loads };
}

describe('TtlCache', () => {
  it('concurrent misses share one load; later gets within the bound are hits', async () => {
    const { cache, load, loads } = setup();
    const reads = await Promise.all(Array.from({ length: 50 }, () => cache.get('k', undefined, load('v'))));
    expect(loads()).toBe(1);
    expect(reads.map((r) => r.outcome).sort()).toEqual(['miss', ...Array(49).fill('collapsed')].sort());
    expect(reads.every((r) => r.value === 'v' && r.stored)).toBe(true);
    expect((await cache.get('k', undefined, load('other'))).outcome).toBe('hit');
    expect(loads()).toBe(1);
  });

  it('an entry serves until ttl after its load was SENT, not after it arrived', async () => {
    const { clock, cache } = setup(1000);
    const slow = deferred<string>();
    const first = cache.get('k', undefined, () => slow.promise);
    clock.t += 400; // the load takes 400 ms
    slow.resolve('old');
    expect((await first).value).toBe('old');
    clock.t += 599; // 999 ms after it was sent
    const hit = await cache.get('k', undefined, () => Promise.resolve('new'));
    expect(hit).toMatchObject({ value: 'old', outcome: 'hit', ttlMs: 1 });
    clock.t += 1; // 1000 ms after it was sent
    expect(await cache.get('k', undefined, () => Promise.resolve('new'))).toMatchObject({
      value: 'new',
      outcome: 'miss',
    });
  });

  it('a failed load reaches its waiters and is not kept', async () => {
    const { cache, load, loads } = setup();
    const failing = () => Promise.reject(new Error('boom'));
    const both = [cache.get('k', undefined, failing), cache.get('k', undefined, failing)];
    for (const read of both) await expect(read).rejects.toThrow('boom');
    expect(cache.size).toBe(0);
    expect((await cache.get('k', undefined, load('v'))).value).toBe('v');
    expect(loads()).toBe(1);
  });

  it("a waiter's abort ends only its own wait: the shared load goes on and is stored", async () => {
    const { cache } = setup();
    const pending = deferred<string>();
    const controller = new AbortController();
    const leaving = cache.get('k', undefined, () => pending.promise, controller.signal);
    const staying = cache.get('k', undefined, () => Promise.resolve('second load'));
    controller.abort();
    await expect(leaving).rejects.toMatchObject({ name: 'AbortError' });
    pending.resolve('v');
    expect(await staying).toMatchObject({ value: 'v', outcome: 'collapsed', stored: true });
    expect((await cache.get('k', undefined, () => Promise.resolve('x'))).outcome).toBe('hit');
    // Already gone before asking: nothing is loaded.
    await expect(cache.get('z', undefined, () => Promise.resolve('x'), AbortSignal.abort())).rejects.toMatchObject({
      name: 'AbortError',
    });
    expect(cache.size).toBe(1);
  });

  it('drop removes exactly the matching entries; a dropped load in flight answers but is not stored', async () => {
    const { cache, load } = setup();
    await cache.get('a', 'pending', load('a'));
    await cache.get('b', 'approved', load('b'));
    const inFlight = deferred<string>();
    const racing = cache.get('c', 'pending', () => inFlight.promise);
    expect(cache.drop((tag) => tag === 'pending')).toBe(2);
    // A get after the drop does not join the stale flight: it loads again.
    const after = cache.get('c', 'pending', load('fresh'));
    inFlight.resolve('stale');
    expect(await racing).toMatchObject({ value: 'stale', stored: false, ttlMs: 0 });
    expect(await after).toMatchObject({ value: 'fresh', outcome: 'miss', stored: true });
    expect((await cache.get('c', 'pending', load('x'))).value).toBe('fresh');
    expect((await cache.get('b', 'approved', load('x'))).outcome).toBe('hit');
    expect((await cache.get('a', 'pending', load('a2'))).outcome).toBe('miss');
  });

  it('holds at most maxEntries, evicting the oldest; ttl 0 loads every time', async () => {
    const { cache, load } = setup(1000, 3);
    for (const key of ['a', 'b', 'c', 'd']) await cache.get(key, undefined, load(key));
    expect(cache.size).toBe(3);
    expect((await cache.get('a', undefined, load('a2'))).outcome).toBe('miss');
    expect((await cache.get('d', undefined, load('d2'))).outcome).toBe('hit');
    const off = setup(0);
    await Promise.all([off.cache.get('k', undefined, off.load('v')), off.cache.get('k', undefined, off.load('v'))]);
    expect(off.loads()).toBe(2);
    expect(off.cache.size).toBe(0);
  });
});
