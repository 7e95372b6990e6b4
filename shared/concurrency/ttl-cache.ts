// A per-instance cache of promised values: each entry lives at most ttlMs from when its load was SENT
// (so a value is never older than the bound, however long it took to arrive), concurrent misses of one
// key share one load (single flight), a failed load is not kept, and the map holds at most maxEntries
// (the oldest goes first). Entries carry a tag the owner chooses, so it can drop the ones a change
// concerns (drop); a load in flight when its entry is dropped still answers its waiters but is not
// stored: each flight has its own generation, and only the generation the map still holds is stored.
// Knows nothing of what it caches. Runtime-neutral.
import type { Clock } from '../core/clock.ts';

export interface TtlCacheOptions<V> {
  clock: Clock;
  /** How long an entry serves, from when its load was sent (ms); 0 turns the cache off (every get loads). */
  ttlMs: number;
  /** Entries kept at most; the oldest is evicted first. */
  maxEntries: number;
  /** When a loaded value's oldest part was read, if before its own load was sent (it reused another read). */
  readAtOf?: (value: V) => number | undefined;
}

/** hit: served from the map; collapsed: joined a load another request sent; miss: sent its own load. */
export type CacheOutcome = 'hit' | 'collapsed' | 'miss';

export interface CacheRead<V> {
  value: V;
  /** When the value's load was sent (or its oldest part read): its age is measured from here. */
  sentAt: number;
  outcome: CacheOutcome;
  /** Whether the value is in the map now (false: cache off, or dropped while its load was in flight). */
  stored: boolean;
  /** How much longer the entry serves (ms); 0 when not stored. */
  ttlMs: number;
}

interface Entry<V, T> {
  generation: number;
  tag: T;
  sentAt: number;
  promise: Promise<V>;
  settled: boolean;
}

/** The error a waiter whose signal aborted gets: the shared load goes on for the others. */
function abortError(): Error {
  const error = new Error('the caller has gone');
  error.name = 'AbortError';
  return error;
}

/** `promise`, or an AbortError as soon as `signal` aborts (the promise itself is left running). */
function unlessAborted<V>(promise: Promise<V>, signal: AbortSignal | undefined): Promise<V> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortError());
  return new Promise<V>((resolve, reject) => {
    const onAbort = () => reject(abortError());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

export class TtlCache<V, T = undefined> {
  private readonly entries = new Map<string, Entry<V, T>>();
  private generation = 0;
  private readonly options: TtlCacheOptions<V>;

  constructor(options: TtlCacheOptions<V>) {
    this.options = options;
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * The value of `key`: from the map while its entry is fresh, else from `load`, shared by every get of
   * the key until it settles. `signal` only ends this caller's wait; the shared load is sent without it
   * (with the cache off, the caller's own load gets it).
   */
  async get(key: string, tag: T, load: (signal?: AbortSignal) => Promise<V>, signal?: AbortSignal) {
    if (signal?.aborted) throw abortError();
    const { clock, ttlMs } = this.options;
    if (ttlMs <= 0) {
      const sentAt = clock.now();
      const value = await load(signal);
      return this.read(value, sentAt, 'miss', false);
    }
    const now = clock.now();
    const found = this.entries.get(key);
    if (found && now - found.sentAt < ttlMs) {
      const outcome = found.settled ? 'hit' : 'collapsed';
      const value = await unlessAborted(found.promise, signal);
      return this.read(value, found.sentAt, outcome, this.entries.get(key) === found);
    }
    const entry = this.start(key, tag, load, now);
    const value = await unlessAborted(entry.promise, signal);
    return this.read(value, entry.sentAt, 'miss', this.entries.get(key) === entry);
  }

  /** Drops every entry whose tag matches, in flight or settled: the next get of its key loads again. */
  drop(matches: (tag: T) => boolean): number {
    let dropped = 0;
    for (const [key, entry] of this.entries) {
      if (matches(entry.tag)) {
        this.entries.delete(key);
        dropped++;
      }
    }
    return dropped;
  }

  clear(): void {
    this.entries.clear();
  }

  private start(key: string, tag: T, load: () => Promise<V>, sentAt: number): Entry<V, T> {
    const entry: Entry<V, T> = { generation: ++this.generation, tag, sentAt, promise: load(), settled: false };
    this.entries.delete(key);
    while (this.entries.size >= this.options.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
    this.entries.set(key, entry);
    entry.promise.then(
      (value) => {
        // Stored only if no drop or newer flight replaced this generation meanwhile.
        if (this.entries.get(key)?.generation !== entry.generation) return;
        entry.settled = true;
        const readAt = this.options.readAtOf?.(value);
        if (readAt !== undefined && readAt < entry.sentAt) entry.sentAt = readAt;
      },
      () => {
        if (this.entries.get(key)?.generation === entry.generation) this.entries.delete(key);
      },
    );
    return entry;
  }

  private read(value: V, sentAt: number, outcome: CacheOutcome, stored: boolean): CacheRead<V> {
    const readAt = this.options.readAtOf?.(value);
    const from = readAt !== undefined && readAt < sentAt ? readAt : sentAt;
    const ttlMs = stored ? Math.max(0, from + this.options.ttlMs - this.options.clock.now()) : 0;
    return { value, sentAt: from, outcome, stored, ttlMs };
  }
}
