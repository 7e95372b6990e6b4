// The outbox relay: publishes every application change to Kafka (KAFKA_TOPIC, key = application id) with an
// idempotent producer (acks=all), from the change logs (shared/loans/applications/outbox.ts). One relay
// publishes at a time, under a lease; others wait for it, and take over when its holder stops renewing it.
import { Admin, ProduceAcks, Producer, stringSerializers } from '@platformatic/kafka';
import type { Db } from 'mongodb';
import type { Logger } from '../../api/log.ts';
import { LockManager } from '../../shared/concurrency/leases.ts';
import { type Clock, sleep } from '../../shared/core/clock.ts';
import type { Config } from '../../shared/core/config.ts';
import { LockTimeoutError } from '../../shared/core/errors.ts';
import { type OutboxMessage, OutboxRelay } from '../../shared/loans/applications/outbox.ts';

export const RELAY_LEASE_KEY = 'outbox:kafka';

export interface RelayCounters {
  published: number;
  lost: number;
  passes: number;
  /** Passes ended by an error (database, broker, or the lease lost mid-pass); the loop pauses, then tries again. */
  failures: number;
  /** Times this process took the lease. */
  leases: number;
}

export interface RelayState {
  /** This process holds the publishing lease now. */
  holding: boolean;
  /** When the last pass completed (epoch ms), 0 before the first. */
  lastPassAtMs: number;
}

export interface RunningRelay {
  counters: RelayCounters;
  state: RelayState;
  /** Finishes the pass under way (its events are acknowledged and marked), then closes the producer. */
  stop(): Promise<void>;
}

type RelayConfig = Pick<
  Config,
  | 'KAFKA_TOPIC'
  | 'KAFKA_TOPIC_PARTITIONS'
  | 'KAFKA_CLIENT_ID'
  | 'KAFKA_RELAY_POLL_MS'
  | 'KAFKA_RELAY_BATCH'
  | 'KAFKA_RELAY_MARGIN_MS'
  | 'KAFKA_RELAY_LEASE_MS'
> & { KAFKA_BROKERS: string[] };

/** Creates the topic unless it exists (an existing topic keeps its partitions). */
export async function ensureTopic(
  config: Pick<RelayConfig, 'KAFKA_BROKERS' | 'KAFKA_TOPIC' | 'KAFKA_TOPIC_PARTITIONS' | 'KAFKA_CLIENT_ID'>,
): Promise<void> {
  const admin = new Admin({ clientId: config.KAFKA_CLIENT_ID, bootstrapBrokers: config.KAFKA_BROKERS });
  try {
    const topics = await admin.listTopics();
    if (topics.includes(config.KAFKA_TOPIC)) return;
    await admin
      .createTopics({ topics: [config.KAFKA_TOPIC], partitions: config.KAFKA_TOPIC_PARTITIONS, replicas: -1 })
      .catch(async (error) => {
        // Another relay created it meanwhile.
        if (!(await admin.listTopics()).includes(config.KAFKA_TOPIC)) throw error;
      });
  } finally {
    await admin.close();
  }
}

export async function startRelay(
  db: Db,
  clock: Clock,
  config: RelayConfig,
  logger: Logger,
  /** Each completed pass's duration (the relay's metrics). */
  onPass?: (ms: number) => void,
): Promise<RunningRelay> {
  await ensureTopic(config);
  const producer = new Producer({
    clientId: config.KAFKA_CLIENT_ID,
    bootstrapBrokers: config.KAFKA_BROKERS,
    serializers: stringSerializers,
    idempotent: true,
    acks: ProduceAcks.ALL,
    autocreateTopics: false,
  });
  const publish = async (messages: OutboxMessage[]) => {
    await producer.send({
      messages: messages.map(({ key, event }) => ({
        topic: config.KAFKA_TOPIC,
        key,
        value: JSON.stringify(event),
        headers: new Map([
          ['event-id', event.id],
          ['event-type', event.type],
        ]),
      })),
    });
  };
  const counters: RelayCounters = { published: 0, lost: 0, passes: 0, failures: 0, leases: 0 };
  const state: RelayState = { holding: false, lastPassAtMs: 0 };
  const relay = new OutboxRelay(db, clock, {
    publish,
    marginMs: config.KAFKA_RELAY_MARGIN_MS,
    batchSize: config.KAFKA_RELAY_BATCH,
    // Counted as the broker acknowledges each page, so a pass that fails later still counts what it sent.
    onSent: ({ published, lost }) => {
      counters.published += published;
      counters.lost += lost;
      logger.debug('relay sent', { events: published, total: counters.published });
    },
  });
  // A standby asks for the lease at most about once a second (jittered backoff up to 1 s), not 20 times.
  const locks = new LockManager(db, { ttlMs: config.KAFKA_RELAY_LEASE_MS, retryMaxMs: 1_000 });
  let stopping = false;
  const stopped = new AbortController();
  const wait = (ms: number) =>
    Promise.race([sleep(ms), new Promise((resolve) => stopped.signal.addEventListener('abort', resolve))]);

  const loop = async () => {
    while (!stopping) {
      try {
        await locks.withLock(
          RELAY_LEASE_KEY,
          async (lease) => {
            counters.leases++;
            state.holding = true;
            logger.info('relay lease taken', { token: lease.token });
            try {
              await publishWhileHolding(lease.signal);
            } finally {
              state.holding = false;
            }
          },
          { waitMs: config.KAFKA_RELAY_LEASE_MS },
        );
      } catch (error) {
        if (error instanceof LockTimeoutError) continue; // another relay holds it: try again
        if (stopping) break;
        counters.failures++;
        logger.warn('relay pass failed; retrying', { error: (error as Error).message });
        await wait(Math.max(config.KAFKA_RELAY_POLL_MS, 1_000));
      }
    }
  };
  const publishWhileHolding = async (signal: AbortSignal) => {
    while (!stopping && !signal.aborted) {
      const started = performance.now();
      const result = await relay.pass(signal);
      counters.passes++;
      state.lastPassAtMs = Date.now();
      onPass?.(performance.now() - started);
      if (result.published > 0) {
        logger.info('relay published', {
          events: result.published,
          lost: result.lost,
          total: counters.published,
          ms: Math.round(performance.now() - started),
        });
      }
      // A pass reads every page there is, so a backlog is drained within it: the pause between
      // passes only bounds how often the scan runs while changes keep coming.
      await wait(config.KAFKA_RELAY_POLL_MS);
    }
  };
  const running = loop();
  return {
    counters,
    state,
    async stop() {
      stopping = true;
      stopped.abort();
      await running;
      await producer.close();
    },
  };
}
