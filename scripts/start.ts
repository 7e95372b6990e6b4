// `npm start`: the whole system on one machine. Uses MONGO_URL if set, else starts the embedded
// default database (see scripts/mongo/embedded.ts; its files under DATA_DIR, default .data/), then
// the API. Ctrl-C stops everything.
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbedded } from './mongo/embedded.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const log = (line: string) => console.log(`[start] ${line}`);

let database: { url: string; description: string; stop(): Promise<void> };
if (process.env.MONGO_URL) {
  database = { url: process.env.MONGO_URL, description: 'MONGO_URL', stop: async () => {} };
} else {
  log('MONGO_URL is not set: starting the embedded default database...');
  database = await startEmbedded(process.env.DATA_DIR ?? join(root, '.data'), log);
}
log(`database: ${database.description}`);
log(`MONGO_URL=${database.url}`);

const port = process.env.PORT ?? '3000';
const env = { ...process.env, MONGO_URL: database.url, PORT: port };
const children: ChildProcess[] = [];

function run(name: string, file: string) {
  const child = spawn(process.execPath, [join(root, file)], { env, stdio: 'inherit' });
  child.on('exit', (code, signal) => {
    if (!stopping) {
      log(`${name} exited (${signal ?? code}); stopping everything.`);
      void shutdown(1);
    }
  });
  children.push(child);
}

let stopping = false;
async function shutdown(code: number) {
  if (stopping) return;
  stopping = true;
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
        }),
    ),
  );
  await database.stop();
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

run('api', 'api/node.ts');
log(`API: http://localhost:${port}  (GET /health, GET /ready)`);
