// The database server's clock is the one that counts: instances may disagree by seconds,
// the server is one. Leases compare against $$NOW inside the server; where a time has to be
// written into a document by the client (a job's due time), the client uses serverNow(),
// its own clock corrected by the offset it measured against the server.
import type { Db } from 'mongodb';

export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export class ServerClock implements Clock {
  private offsetMs = 0;
  private syncedAt = Number.NEGATIVE_INFINITY;
  private readonly db: Db;
  private readonly local: Clock;
  private readonly resyncMs: number;

  constructor(db: Db, local: Clock = systemClock, resyncMs = 60_000) {
    this.db = db;
    this.local = local;
    this.resyncMs = resyncMs;
  }

  /** Local time plus the measured offset. Call sync() first (start-up) and now and then. */
  now(): number {
    return this.local.now() + this.offsetMs;
  }

  get offset(): number {
    return this.offsetMs;
  }

  /** Measures the offset from the server's localTime, taking the round trip's midpoint. */
  async sync(): Promise<number> {
    const sent = this.local.now();
    const reply = await this.db.admin().command({ isMaster: 1 });
    const received = this.local.now();
    const serverTime = reply.localTime instanceof Date ? reply.localTime.getTime() : Number.NaN;
    if (Number.isFinite(serverTime)) this.offsetMs = serverTime - (sent + received) / 2;
    this.syncedAt = received;
    return this.offsetMs;
  }

  /** Re-syncs when the last measurement is older than resyncMs. */
  async maybeSync(): Promise<void> {
    if (this.local.now() - this.syncedAt > this.resyncMs) await this.sync();
  }
}

/** Waits `ms`; setTimeout is global on Node, workerd and Deno alike. */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface BackoffOptions {
  /** The first retry's ceiling, doubling with each further retry. */
  base: number;
  cap: number;
  /** 1 (default): full jitter, uniform in 0..ceiling; 0: exactly the ceiling. */
  jitter?: number;
  random?: () => number;
}

/** The wait before retry `retry` (1 for the first): min(cap, base * 2^(retry - 1)), jittered. */
export function backoffDelay(retry: number, options: BackoffOptions): number {
  // The exponent stops at 40: past it any sane cap is reached, and 2 ** 1024 would be Infinity.
  const ceiling = Math.min(options.cap, options.base * 2 ** Math.min(Math.max(0, retry - 1), 40));
  const jitter = options.jitter ?? 1;
  if (jitter <= 0) return ceiling;
  return ceiling * (1 - jitter) + (options.random ?? Math.random)() * ceiling * jitter;
}
