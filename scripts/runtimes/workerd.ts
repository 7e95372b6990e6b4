// Starts the Workers entry (api/cloudflare.ts) in local workerd through `wrangler dev`: no account,
// nothing beyond loopback (no telemetry, no error reports, no Request.cf download). The API's
// configuration goes in as local secrets through a private --env-file that is deleted on exit.
//
//   MONGO_URL=mongodb://127.0.0.1:27017 JWT_KEYS=... LEDGER_KEYS=... PORT=8787 npm run start:workers
//   DB_CLIENT_MODE=per-request npm run start:workers      (a client per request instead of Durable Objects)
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { apiConfigSchema } from '../../shared/core/config.ts';
import { freePort } from '../mongo/offline-server.ts';
import { projectRoot, type RuntimeOptions, type RuntimeProcess, runUntilSignal, spawnRuntime } from './process.ts';

export type DbClientMode = 'durable-object' | 'per-request';

/** Keeps wrangler and miniflare from calling home. */
export const offlineWranglerEnv = {
  WRANGLER_SEND_METRICS: 'false',
  WRANGLER_SEND_ERROR_REPORTS: 'false',
  DO_NOT_TRACK: '1',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
  WRANGLER_NO_SKILLS_UPDATE_PROMPTS: 'true',
};

const dotenvLine = (key: string, value: string) => `${key}="${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

export async function startWorkerd(options: RuntimeOptions & { mode?: DbClientMode }): Promise<RuntimeProcess> {
  const port = options.port ?? (await freePort());
  const inspectorPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'workerd-'));
  const envFile = join(dir, 'secrets.env');
  const { HOST: _host, PORT: _port, ...config } = options.env;
  writeFileSync(
    envFile,
    `${Object.entries(config)
      .map(([key, value]) => dotenvLine(key, value))
      .join('\n')}\n`,
    {
      mode: 0o600,
    },
  );
  chmodSync(envFile, 0o600);
  const args = [
    join(projectRoot, 'node_modules', 'wrangler', 'bin', 'wrangler.js'),
    'dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(port),
    '--inspector-ip',
    '127.0.0.1',
    '--inspector-port',
    String(inspectorPort),
    '--persist-to',
    join(dir, 'state'),
    '--env-file',
    envFile,
    '--show-interactive-dev-session=false',
    '--log-level',
    'warn',
  ];
  if (options.mode) args.push('--var', `DB_CLIENT_MODE:${options.mode}`);
  return spawnRuntime({
    name: options.mode === 'per-request' ? 'workerd (client per request)' : 'workerd',
    command: process.execPath,
    args,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...offlineWranglerEnv,
      WRANGLER_LOG_PATH: join(dir, 'logs'),
      WRANGLER_REGISTRY_PATH: join(dir, 'registry'),
    },
    origin: `http://127.0.0.1:${port}`,
    readyPath: '/ready',
    deadlineMs: options.deadlineMs ?? 90_000,
    inherit: options.inherit,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  });
}

if (import.meta.main) {
  // Only the API's own configuration keys go to the Worker, never the rest of this shell's environment.
  const keys = new Set([...Object.keys(apiConfigSchema.shape), 'API_OBJECTS']);
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      (entry): entry is [string, string] => entry[1] !== undefined && keys.has(entry[0]),
    ),
  );
  const mode = process.env.DB_CLIENT_MODE === 'per-request' ? 'per-request' : undefined;
  await runUntilSignal(() => startWorkerd({ env, port: Number(process.env.PORT ?? 8787), mode, inherit: true }));
}
