// Starts the Node entry (api/node.ts) on a loopback port: `node scripts/runtimes/node.ts` with the
// API's configuration in the environment, or startNode() from a test or benchmark.
import { freePort } from '../mongo/offline-server.ts';
import { type RuntimeOptions, type RuntimeProcess, runUntilSignal, spawnRuntime } from './process.ts';

export async function startNode(options: RuntimeOptions): Promise<RuntimeProcess> {
  const port = options.port ?? (await freePort());
  return spawnRuntime({
    name: 'node',
    command: process.execPath,
    args: ['api/node.ts'],
    env: { PATH: process.env.PATH, ...options.env, HOST: '127.0.0.1', PORT: String(port) },
    origin: `http://127.0.0.1:${port}`,
    readyPath: '/ready',
    deadlineMs: options.deadlineMs ?? 30_000,
    inherit: options.inherit,
  });
}

if (import.meta.main) {
  await runUntilSignal(() => startNode({ env: stringEnv(), port: Number(process.env.PORT ?? 3000), inherit: true }));
}

function stringEnv(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((entry): entry is [string, string] => !!entry[1]));
}
