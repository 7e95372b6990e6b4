// Load shedding with a bound: at most `maxInFlight` requests run at once, at most `maxQueued` wait
// for a slot (each for at most `queueTimeoutMs`), and the rest get 503 at once with Retry-After.
// A waiting request whose client has gone leaves the queue instead of being served to no one.
import type { MiddlewareHandler } from 'hono';
import { HttpError, RETRY_AFTER_S } from './http-errors.ts';

export interface OverloadOptions {
  maxInFlight: number;
  maxQueued: number;
  queueTimeoutMs: number;
}

export interface OverloadState {
  inFlight: number;
  queued: number;
  shed: number;
}

const overloaded = (reason: string) =>
  new HttpError(503, 'overloaded', `The server is busy (${reason}); retry shortly.`, undefined, {
    'Retry-After': RETRY_AFTER_S,
  });

export function loadShedding(options: OverloadOptions): { middleware: MiddlewareHandler; state: OverloadState } {
  const state: OverloadState = { inFlight: 0, queued: 0, shed: 0 };
  const waiters: Array<() => void> = [];

  const release = () => {
    const next = waiters.shift();
    if (next) next();
    else state.inFlight--;
  };

  const waitForSlot = (signal: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      state.queued++;
      const done = (error?: Error) => {
        state.queued--;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        const index = waiters.indexOf(grant);
        if (index >= 0) waiters.splice(index, 1);
        if (error) reject(error);
        else resolve();
      };
      // The slot passes straight from the finishing request to this one: inFlight stays the same.
      const grant = () => done();
      const onAbort = () => done(overloaded('client went away while queued'));
      const timer = setTimeout(() => done(overloaded('queued too long')), options.queueTimeoutMs);
      waiters.push(grant);
      signal.addEventListener('abort', onAbort, { once: true });
    });

  const middleware: MiddlewareHandler = async (c, next) => {
    if (state.inFlight < options.maxInFlight) {
      state.inFlight++;
    } else if (state.queued < options.maxQueued) {
      try {
        await waitForSlot(c.req.raw.signal);
      } catch (error) {
        state.shed++;
        throw error;
      }
    } else {
      state.shed++;
      throw overloaded('queue full');
    }
    try {
      await next();
    } finally {
      release();
    }
  };
  return { middleware, state };
}
