// Node entry: config, one MongoClient, indexes, the HTTP server, and a graceful stop on SIGTERM/SIGINT.
import { serve } from '@hono/node-server';
import { type Config, loadConfig } from '../shared/config.ts';
import { connect, ensureIndexes } from '../shared/db.ts';
import { allIndexes } from '../shared/indexes.ts';
import { createApp } from './app.ts';

let config: Config;
try {
  config = loadConfig(process.env);
} catch (error) {
  // One message listing every problem, no stack trace: the operator's mistake, not a crash.
  console.error((error as Error).message);
  process.exit(2);
}
const database = await connect(config);
await ensureIndexes(database.db, allIndexes);
const app = createApp({ db: database.db, config });

const server = serve({ fetch: app.fetch, hostname: config.HOST, port: config.PORT }, (info) => {
  console.log(JSON.stringify({ level: 'info', msg: 'api listening', host: info.address, port: info.port }));
});

let stopping = false;
function stop(signal: string) {
  if (stopping) return;
  stopping = true;
  console.log(JSON.stringify({ level: 'info', msg: 'api stopping', signal }));
  // Stop accepting, let in-flight requests finish, then close the pool.
  server.close(async () => {
    await database.close();
    process.exit(0);
  });
  setTimeout(() => process.exit(1), 10_000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
