// `npm start`: the whole system on one machine. Uses MONGO_URL if set, else starts the embedded
// default database (see scripts/mongo/embedded.ts; its files under DATA_DIR, default .data/), then
// the API and the workers. Ctrl-C stops everything.

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MongoClient } from 'mongodb';
import { loadDotEnv } from '../api/dotenv.ts';
import { resolveEnvAliases } from '../shared/core/config.ts';
import { writeConsoleAssets } from './build-console.ts';
import { startEmbedded } from './mongo/embedded.ts';
import { stopProcess } from './processes.ts';
import { seedApplications } from './seed.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const log = (line: string) => console.log(`[start] ${line}`);

if (loadDotEnv()) log('read .env');
await writeConsoleAssets();
log('built the console');
// MONGO_URI works as MONGO_URL, and a database name in its path as MONGO_DB, as in the API and workers.
let settings: Record<string, string | undefined>;
try {
  settings = resolveEnvAliases(process.env);
} catch (error) {
  console.error((error as Error).message);
  process.exit(2);
}
const dbName = settings.MONGO_DB ?? 'loan_admin';

const dataDir = process.env.DATA_DIR ?? join(root, '.data');
mkdirSync(dataDir, { recursive: true });

/** A development signing key, made once and kept in the data folder so sessions survive restarts. */
function devJwtKeys(): string {
  const file = join(dataDir, 'jwt-keys');
  if (!existsSync(file)) writeFileSync(file, `dev1:${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  return readFileSync(file, 'utf8').trim();
}

/** A development ledger key, made once like the signing key: entries keyed with it verify after restarts. */
function devLedgerKeys(): string {
  const file = join(dataDir, 'ledger-keys');
  if (!existsSync(file)) writeFileSync(file, `ledger1:${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  return readFileSync(file, 'utf8').trim();
}

let database: { url: string; description: string; stop(): Promise<void> };
if (settings.MONGO_URL) {
  database = { url: settings.MONGO_URL, description: 'MONGO_URL', stop: async () => {} };
} else {
  log('MONGO_URL is not set: starting the embedded default database...');
  database = await startEmbedded(dataDir, log);
}
log(`database: ${database.description}`);
log(`MONGO_URL=${database.url}`);

// A first start on an empty database gets demo applications to click through.
{
  const client = await new MongoClient(database.url).connect();
  const db = client.db(dbName);
  if ((await db.collection('applications').estimatedDocumentCount()) === 0) {
    log(`seeded ${await seedApplications(db, 200)} demo applications`);
  }
  await client.close();
}

const port = process.env.PORT ?? '3000';
const demoAdmin = { email: 'admin@loan-admin.local', password: 'demo-password-change-me' };
const env = {
  ADMIN_EMAIL: demoAdmin.email,
  ADMIN_PASSWORD: demoAdmin.password,
  ...process.env,
  JWT_KEYS: process.env.JWT_KEYS ?? devJwtKeys(),
  LEDGER_KEYS: process.env.LEDGER_KEYS ?? devLedgerKeys(),
  MONGO_URL: database.url,
  MONGO_URI: undefined,
  MONGO_DB: dbName,
  PORT: port,
};
const children: ChildProcess[] = [];

function startChild(name: string, file: string) {
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
  await Promise.all(children.map((child) => stopProcess(child)));
  await database.stop();
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

startChild('api', 'api/node.ts');
startChild('approval worker', 'workers/approval/main.ts');
startChild('OCR worker', 'workers/ocr/main.ts');
log(`console: http://localhost:${port}/console/  API docs: http://localhost:${port}/docs`);
if (!process.env.ADMIN_EMAIL)
  log(`login: ${demoAdmin.email} / ${demoAdmin.password} (demo admin, made if no admin exists)`);
