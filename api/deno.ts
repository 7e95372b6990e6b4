// Deno 2 entry: config, one MongoClient, indexes, the first admin, Deno.serve, and a graceful stop
// on SIGTERM/SIGINT. Run it with scripts/runtimes/deno.ts (npm run start:deno), which grants only
// the network addresses of MongoDB and of the listener, and the environment.
import { getConnInfo } from 'hono/deno';
import { type ApiConfig, apiConfigSchema, loadConfig } from '../shared/core/config.ts';
import { connect } from '../shared/core/db.ts';
import { enableTracing } from '../shared/core/tracing.ts';
import { createApp } from './app.ts';
import { createServices, prepareDatabase, startBackground, startFeed } from './services.ts';

// The slice of the Deno namespace this file uses (tsc runs with Node's types only).
declare const Deno: {
  env: { toObject(): Record<string, string> };
  exit(code: number): never;
  addSignalListener(signal: 'SIGTERM' | 'SIGINT', handler: () => void): void;
  serve(
    options: { hostname: string; port: number; onListen(address: { hostname: string; port: number }): void },
    handler: (request: Request, info: unknown) => Response | Promise<Response>,
  ): { shutdown(): Promise<void>; finished: Promise<void> };
};

let config: ApiConfig;
try {
  config = loadConfig(Deno.env.toObject(), apiConfigSchema);
} catch (error) {
  console.error((error as Error).message);
  Deno.exit(2);
}

// Traces: Deno's own OpenTelemetry (OTEL_DENO=true, which scripts/runtimes/deno.ts sets when
// OTEL_EXPORTER_OTLP_ENDPOINT is) exports over OTLP and backs @opentelemetry/api, so the spans the app and
// the driver's commands make (shared/core/tracing.ts, db-tracing.ts) join Deno.serve's request spans.
const traced = Deno.env.toObject().OTEL_DENO === 'true';
if (traced) enableTracing();
const database = await connect(config, { traced: traced && config.OTEL_TRACE_DB_COMMANDS });
const services = await createServices(database.db, config);
await prepareDatabase(services);
await startFeed(services);
// Deno has timers: caches refresh in the background as on Node. /metrics is Node-only (404 here).
const stopBackground = startBackground(services);
const app = createApp(services, { remoteAddress: (c) => getConnInfo(c).remote.address });

const server = Deno.serve(
  {
    hostname: config.HOST,
    port: config.PORT,
    onListen: (address) => services.logger.info('api listening', { host: address.hostname, port: address.port }),
  },
  // hono/deno's getConnInfo reads the connection info from the env argument.
  (request, info) => app.fetch(request, info),
);

let stopping = false;
async function stop(signal: string) {
  if (stopping) return;
  stopping = true;
  services.logger.info('api stopping', { signal });
  setTimeout(() => Deno.exit(1), 10_000);
  // Open event streams get `event: reload` and end, so shutdown() waits for none of them.
  services.streams.closeAll();
  // shutdown() stops accepting and waits for the requests in flight.
  await server.shutdown();
  await stopBackground();
  await database.close();
  Deno.exit(0);
}
Deno.addSignalListener('SIGTERM', () => void stop('SIGTERM'));
Deno.addSignalListener('SIGINT', () => void stop('SIGINT'));
