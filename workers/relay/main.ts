// The outbox relay process: `npm run relay` (MONGO_URL, MONGO_DB, KAFKA_BROKERS, KAFKA_TOPIC...). Without
// KAFKA_BROKERS it says so and exits 0: Kafka is optional. A bad configuration exits 2, an unreachable
// database or broker at start 1. SIGTERM/SIGINT finish the pass under way and exit 0. /health, /ready and
// /metrics on WORKER_PROBE_PORT, as the workers have them.

import { loadDotEnv } from '../../api/dotenv.ts';
import { createLogger } from '../../api/log.ts';
import { ServerClock } from '../../shared/core/clock.ts';
import { type Config, loadConfig } from '../../shared/core/config.ts';
import { connect } from '../../shared/core/db.ts';
import { isReady, listenProbe, type ProbeStatus, probeAnswers } from '../probe.ts';
import { createRelayMetrics, type RelayMetrics } from './metrics.ts';
import { startRelay } from './relay.ts';

loadDotEnv();
let config: Config;
try {
  config = loadConfig(process.env);
} catch (error) {
  console.error((error as Error).message);
  process.exit(2);
}
const logger = createLogger(config.LOG_LEVEL, { worker: 'relay', pid: process.pid });
const brokers = config.KAFKA_BROKERS;
if (!brokers) {
  logger.info('KAFKA_BROKERS is not set: no relay runs');
  process.exit(0);
}
let database: Awaited<ReturnType<typeof connect>>;
try {
  database = await connect(config);
} catch (error) {
  console.error(`MongoDB is unreachable: ${(error as Error).message}`);
  process.exit(1);
}
const clock = new ServerClock(database.db);
await clock.sync();
let relay: Awaited<ReturnType<typeof startRelay>>;
let metrics: RelayMetrics | undefined;
try {
  relay = await startRelay(database.db, clock, { ...config, KAFKA_BROKERS: brokers }, logger, (ms) =>
    metrics?.passed(ms),
  );
} catch (error) {
  // The topic could not be listed or created: no broker answered (compose restarts the relay).
  console.error(`Kafka is unreachable at ${brokers.join(',')}: ${(error as Error).message}`);
  await database.close();
  process.exit(1);
}
const status: ProbeStatus = { ready: true, stopping: false };
metrics = createRelayMetrics(relay, () => isReady(database, status));
const probe = await listenProbe(
  config.HOST,
  config.WORKER_PROBE_PORT,
  probeAnswers('relay', database, status, metrics.registry, config.METRICS_TOKEN),
);
logger.info('relay started', { brokers, topic: config.KAFKA_TOPIC, probePort: probe.port });

const stop = (signal: string) => {
  logger.info('relay stopping', { signal });
  status.stopping = true;
  relay
    .stop()
    .then(() => new Promise((resolve) => probe.server.close(resolve)))
    .then(() => database.close())
    .then(
      () => {
        logger.info('relay stopped', { counters: relay.counters });
        process.exit(0);
      },
      (error) => {
        console.error(`relay did not stop cleanly: ${(error as Error).message}`);
        process.exit(1);
      },
    );
};
process.once('SIGTERM', () => stop('SIGTERM'));
process.once('SIGINT', () => stop('SIGINT'));
