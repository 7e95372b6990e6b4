// Starts the Deno entry (api/deno.ts) with the narrowest permissions that work, measured with Deno
// 2.9: network access to MongoDB's hosts, the listening address and the OTLP endpoint (if any) only, and
// the environment (unrestricted: the mongodb driver probes many variables). No file, subprocess or system
// access.
//
//   MONGO_URL=mongodb://127.0.0.1:27017 JWT_KEYS=... LEDGER_KEYS=... PORT=3000 npm run start:deno
import { join } from 'node:path';
import { freePort } from '../mongo/offline-server.ts';
import {
  mongoHosts,
  projectRoot,
  type RuntimeOptions,
  type RuntimeProcess,
  runUntilSignal,
  spawnRuntime,
} from './process.ts';

export const denoBinary = join(projectRoot, 'node_modules', '.bin', 'deno');

/** host:port of an OTLP endpoint URL, for --allow-net. */
function endpointHost(endpoint: string): string {
  const url = new URL(endpoint);
  return `${url.hostname}:${url.port || (url.protocol === 'https:' ? '443' : '80')}`;
}

export function denoArgs(mongoUrl: string, listen: string, otlpEndpoint?: string): string[] {
  const hosts = [...mongoHosts(mongoUrl), listen, ...(otlpEndpoint ? [endpointHost(otlpEndpoint)] : [])];
  return [
    'run',
    // Never ask on a terminal, never write a lock file, never fetch: npm's node_modules is the graph.
    '--no-prompt',
    '--no-lock',
    '--cached-only',
    `--allow-net=${hosts.join(',')}`,
    '--allow-env',
    'api/deno.ts',
  ];
}

export async function startDeno(options: RuntimeOptions): Promise<RuntimeProcess> {
  const port = options.port ?? (await freePort());
  const host = options.env.HOST ?? '127.0.0.1';
  // With an OTLP endpoint, Deno's built-in OpenTelemetry exports the traces (api/deno.ts); it reads the
  // standard OTEL_* variables itself (OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf unless set to http/json).
  const endpoint = options.env.OTEL_EXPORTER_OTLP_ENDPOINT || undefined;
  const tracing = endpoint ? { OTEL_DENO: 'true', OTEL_SERVICE_NAME: 'loan-admin-api' } : {};
  return spawnRuntime({
    name: 'deno',
    command: denoBinary,
    args: denoArgs(options.env.MONGO_URL ?? '', `${host}:${port}`, endpoint),
    // HOME: Deno's own cache directory lives under it (nothing is downloaded with --cached-only).
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...tracing,
      ...options.env,
      HOST: host,
      PORT: String(port),
    },
    origin: `http://127.0.0.1:${port}`,
    readyPath: '/ready',
    deadlineMs: options.deadlineMs ?? 60_000,
    inherit: options.inherit,
  });
}

if (import.meta.main) {
  const env = Object.fromEntries(
    Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined),
  );
  await runUntilSignal(() => startDeno({ env, port: Number(process.env.PORT ?? 3000), inherit: true }));
}
