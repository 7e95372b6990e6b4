// The optional Redis adapters (REDIS_URL; Node only: imported by api/node.ts only when it is set, so
// without it nothing here is loaded). Client: node-redis (`redis` on npm), the client Redis itself
// maintains.
//
// - Revocations: every revocation this instance writes to MongoDB is then published on one channel;
//   every instance subscribes and adds what it hears to its revocation cache at once. MongoDB stays the
//   record and the refresh every REVOCATION_STALENESS_MS goes on, so a notice lost while Redis is away
//   only leaves today's bound: revocation never depends on Redis being up.
// - The per-admin request budget: one INCR (with its expiry, in one MULTI) per request, so the limit is
//   exact across instances. While Redis does not answer (not connected, or no answer within
//   REDIS_COMMAND_TIMEOUT_MS) the request is counted by the MongoDB limiter it wraps (today's), so the
//   API neither fails nor stops limiting.
//
// bench/redis.ts measured both against today's way (SCALING.md, "Redis: measured, then decided").
import { createClient } from 'redis';
import { z } from 'zod';
import { decide, type RateDecision, type RequestLimiter, windowOf } from '../shared/concurrency/rate-limit.ts';
import type { Clock } from '../shared/core/clock.ts';
import type { RevocationBus, RevocationNotice, Revocations } from '../shared/identity/revocations.ts';
import { errorFields, type Logger } from './log.ts';
import type { Services } from './services.ts';

export const REVOCATION_CHANNEL = 'loan-admin:revocations';
/** A Redis command that has not answered by then is given up and the fallback decides. */
export const REDIS_COMMAND_TIMEOUT_MS = 250;

const noticeSchema = z.array(
  z.object({ kind: z.enum(['jti', 'sid', 'admin']), value: z.string().min(1), atMs: z.number().finite() }),
);

/** A client that never queues a command while disconnected (it fails at once) and reconnects by itself. */
function newClient(url: string, logger: Logger, role: string) {
  const client = createClient({
    url,
    disableOfflineQueue: true,
    socket: { connectTimeout: 2_000, reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 2_000) },
  });
  let down = false;
  client.on('error', (error: unknown) => {
    // Logged once per outage, not once per reconnect attempt.
    if (!down) logger.warn('redis unavailable', { role, ...errorFields(error) });
    down = true;
  });
  client.on('ready', () => {
    if (down) logger.info('redis available again', { role });
    down = false;
  });
  return client;
}

type Client = ReturnType<typeof newClient>;

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`redis: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Publishes this instance's revocations and feeds the ones it hears into its cache. */
export class RedisRevocationBus implements RevocationBus {
  /** Notices published, and published notices lost (Redis away): for tests and the benchmark. */
  published = 0;
  lost = 0;

  private readonly publisher: Client;
  private readonly logger: Logger;

  constructor(publisher: Client, logger: Logger) {
    this.publisher = publisher;
    this.logger = logger;
  }

  publish(notices: RevocationNotice[]): void {
    if (!this.publisher.isReady) {
      this.lost += notices.length;
      return;
    }
    this.published += notices.length;
    void withTimeout(
      this.publisher.publish(REVOCATION_CHANNEL, JSON.stringify(notices)),
      REDIS_COMMAND_TIMEOUT_MS,
    ).catch((error) => {
      this.lost += notices.length;
      this.logger.warn('revocation not published (the MongoDB refresh still bounds it)', errorFields(error));
    });
  }

  /** Subscribes `subscriber` (a connection of its own) and hands what it hears to `revocations`. */
  static async listen(subscriber: Client, revocations: Revocations, logger: Logger): Promise<void> {
    await subscriber.subscribe(REVOCATION_CHANNEL, (message: string) => {
      let notices: RevocationNotice[];
      try {
        notices = noticeSchema.parse(JSON.parse(message));
      } catch (error) {
        logger.warn('malformed revocation notice ignored', errorFields(error));
        return;
      }
      revocations.heard(notices);
    });
  }
}

export interface RedisRateLimitOptions {
  limit: number;
  windowMs: number;
  clock: Clock;
  name: string;
}

/**
 * The per-admin budget counted in Redis: one INCR per request (fixed window, the key expires a minute
 * after its window), exact across instances. Falls back to `fallback` (the MongoDB limiter) while
 * Redis does not answer.
 */
export class RedisRateLimiter implements RequestLimiter {
  /** Hits Redis decided, and hits the fallback decided. */
  counted = 0;
  fellBack = 0;

  private readonly client: Client;
  private readonly fallback: RequestLimiter;
  private readonly options: RedisRateLimitOptions;

  constructor(client: Client, fallback: RequestLimiter, options: RedisRateLimitOptions) {
    this.client = client;
    this.fallback = fallback;
    this.options = options;
  }

  async hit(key: string): Promise<RateDecision> {
    if (!this.client.isReady) return this.fallbackHit(key);
    const now = this.options.clock.now();
    const { start, end } = windowOf(now, this.options.windowMs);
    const id = `${this.options.name}:${key}:${start}`;
    let count: number;
    try {
      const [incremented] = await withTimeout(
        this.client
          .multi()
          .incr(id)
          .pExpireAt(id, end + 60_000)
          .exec(),
        REDIS_COMMAND_TIMEOUT_MS,
      );
      count = Number(incremented);
    } catch {
      return this.fallbackHit(key);
    }
    this.counted++;
    return decide(count, this.options.limit, now, end);
  }

  private fallbackHit(key: string): RateDecision | Promise<RateDecision> {
    this.fellBack++;
    return this.fallback.hit(key);
  }

  // The fallback keeps its own schedule (its flush sends nothing while it has counted nothing).
  flushIfDue(): Promise<void> | null {
    return this.fallback.flushIfDue();
  }
  flush(): Promise<void> {
    return this.fallback.flush();
  }
  start(): void {
    this.fallback.start();
  }
  stop(): Promise<void> {
    return this.fallback.stop();
  }
}

export interface RedisAdapters {
  bus: RedisRevocationBus;
  limiter: RedisRateLimiter;
  client: Client;
  subscriber: Client;
  /** Settles once both connections are up and the subscriber listens (the first time); never rejects. */
  listening: Promise<void>;
  /** Unsubscribes and closes both connections. */
  close(): Promise<void>;
}

/**
 * Plugs the adapters into `services` (before startBackground): the revocation bus, and the request budget
 * counted in Redis with the current limiter as its fallback. Connects in the background: until Redis
 * answers, and whenever it stops answering, the services behave as without REDIS_URL.
 */
export function attachRedis(services: Services, url: string): RedisAdapters {
  const { logger, revocations, config } = services;
  const client = newClient(url, logger, 'commands');
  const subscriber = newClient(url, logger, 'subscriber');
  const bus = new RedisRevocationBus(client, logger);
  revocations.bus = bus;
  const limiter = new RedisRateLimiter(client, services.apiLimiter, {
    name: 'api',
    limit: config.RATE_LIMIT_PER_MINUTE,
    windowMs: 60_000,
    clock: services.clock,
  });
  services.apiLimiter = limiter;
  // connect() retries by itself (reconnectStrategy); failures are logged by the 'error' handler.
  const connected = client.connect().catch(() => {});
  const subscribed = subscriber
    .connect()
    .then(() => RedisRevocationBus.listen(subscriber, revocations, logger))
    .then(() => logger.info('redis revocation bus listening', { channel: REVOCATION_CHANNEL }))
    .catch(() => {});
  const listening = Promise.all([connected, subscribed]).then(() => {});
  return {
    bus,
    limiter,
    client,
    subscriber,
    listening,
    async close() {
      revocations.bus = null;
      for (const c of [subscriber, client]) {
        // Open: close after what is in flight; reconnecting or never connected: stop trying.
        if (c.isReady) await c.close().catch(() => c.destroy());
        else if (c.isOpen) c.destroy();
      }
    },
  };
}
