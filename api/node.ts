// Node entry: config, one MongoClient, indexes, the first admin, the HTTP server, and a graceful
// stop on SIGTERM/SIGINT (stop accepting, drain in-flight requests, close the pool).
import { serve } from '@hono/node-server';
import { getConnInfo } from '@hono/node-server/conninfo';
import { type ApiConfig, apiConfigSchema, loadConfig } from '../shared/core/config.ts';
import { connect } from '../shared/core/db.ts';
import { createApp, isReady } from './app.ts';
import { loadDotEnv } from './dotenv.ts';
import { createMetrics } from './metrics.ts';
import { startTracing } from './otel.ts';
import { createServices, prepareDatabase, startBackground, startFeed } from './services.ts';

let config: ApiConfig;
try {
  loadDotEnv();
  config = loadConfig(process.env, apiConfigSchema);
} catch (error) {
  // One message listing every problem, no stack trace: the operator's mistake, not a crash.
  console.error((error as Error).message);
  process.exit(2);
}

// Before anything else is built: with OTEL_EXPORTER_OTLP_ENDPOINT set, requests, commands, jobs and the
// payment provider's calls become spans; unset, nothing is registered.
const tracing = startTracing(config, 'loan-admin-api');
const database = await connect(config, { traced: tracing !== undefined && config.OTEL_TRACE_DB_COMMANDS });
const services = await createServices(database.db, config);
await prepareDatabase(services);
await startFeed(services);
// Optional Redis (REDIS_URL): loaded only when set; plugs into the services before their background starts.
const redis = config.REDIS_URL ? (await import('./redis.ts')).attachRedis(services, config.REDIS_URL) : null;
const stopBackground = startBackground(services);
// Prometheus /metrics exists on Node only (prom-client); other runtimes answer it 404.
const metrics = createMetrics({
  queue: services.queue,
  events: services.streams.stats,
  defaultMetrics: true,
  token: config.METRICS_TOKEN,
  ready: () => isReady(database.db, config),
  revocations: services.revocations,
  now: () => services.clock.now(),
  ledgerChecks: services.ledgerChecks,
  payments: services.paymentStats,
  ...(redis ? { redis: { ...redis, heard: () => services.revocations.heardCount } } : {}),
});
const app = createApp(services, {
  remoteAddress: (c) => getConnInfo(c).remote.address,
  onResponse: metrics.onResponse,
  extraRoutes: metrics.mount,
  onOverload: metrics.watchOverload,
});

const server = serve({ fetch: app.fetch, hostname: config.HOST, port: config.PORT }, (info) => {
  services.logger.info('api listening', { host: info.address, port: info.port });
});

let stopping = false;
function stop(signal: string) {
  if (stopping) return;
  stopping = true;
  services.logger.info('api stopping', { signal });
  // Open event streams get `event: reload` and end, so close() waits for none of them.
  services.streams.closeAll();
  server.close(async () => {
    await stopBackground();
    await redis?.close();
    await database.close();
    await tracing?.shutdown();
    process.exit(0);
  });
  // Idle keep-alive connections would hold close() open; in-flight requests still finish.
  const closeIdle = () => (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
  closeIdle();
  // The connections of the streams just ended turn idle once their last bytes are written.
  setTimeout(closeIdle, 100).unref();
  setTimeout(() => process.exit(1), 10_000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
