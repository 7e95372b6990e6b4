// Cloudflare Workers entry: wires config (vars and secrets) and database access, nothing else.
//
// On workerd a socket belongs to the request that opened it, so a MongoClient kept at module scope
// fails every second request. Two ways around it, chosen by the DB_CLIENT_MODE var:
// - "durable-object" (default): API_OBJECTS Durable Objects each own one MongoClient and run the
//   whole app; the Worker forwards each request to one of them, picked by hashing its credentials,
//   so an admin's requests meet the same warm caches. Measured faster (bench/runtimes.ts).
// - "per-request": a fresh client, services and app for every request, closed after the response;
//   the per-admin budget is then counted in MongoDB on every request (one more round trip).
// Either way the app and its data layer see an ordinary `Db`.
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { ExecutionContext } from 'hono';
import { type ApiConfig, apiConfigSchema, loadConfig } from '../shared/core/config.ts';
import { connect, type Database } from '../shared/core/db.ts';
import { ConfigError } from '../shared/core/errors.ts';
import { type AppEnv, createApp } from './app.ts';
import { createLogger } from './log.ts';
import { createServices, prepareDatabase, type ServiceOptions, type Services } from './services.ts';

// The few workerd types this file needs (the full @cloudflare/workers-types would clash with DOM's).
interface DurableObjectState {
  waitUntil(promise: Promise<unknown>): void;
}
interface DurableObjectStub {
  fetch(request: Request): Promise<Response>;
}
interface DurableObjectNamespace {
  idFromName(name: string): unknown;
  get(id: unknown): DurableObjectStub;
}

export interface Env {
  API: DurableObjectNamespace;
  [key: string]: unknown;
}

type App = OpenAPIHono<AppEnv>;

/** Only the string bindings are configuration (the Durable Object namespace is not). */
function configOf(env: Env): ApiConfig {
  const strings: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) if (typeof value === 'string') strings[key] = value;
  return loadConfig(strings, apiConfigSchema);
}

function failure(error: unknown): Response {
  const misconfigured = error instanceof ConfigError;
  const body = misconfigured
    ? { error: { code: 'misconfigured', message: (error as Error).message } }
    : { error: { code: 'unavailable', message: 'The database cannot be reached; retry shortly.' } };
  createLogger('error').error('workers entry failed', { error: String(error) });
  return Response.json(body, { status: misconfigured ? 500 : 503, headers: { 'Retry-After': '1' } });
}

async function open(
  config: ApiConfig,
  options: ServiceOptions = {},
): Promise<{ database: Database; services: Services; app: App }> {
  const database = await connect(config);
  try {
    const services = await createServices(database.db, config, undefined, options);
    // Cloudflare puts the client's address in CF-Connecting-IP (wrangler dev does too).
    const app = createApp(services, { remoteAddress: (c) => c.req.header('cf-connecting-ip') });
    return { database, services, app };
  } catch (error) {
    await database.close().catch(() => {});
    throw error;
  }
}

/** A Durable Object that owns one MongoClient (its sockets belong to the object, not to a request) and runs the app. */
export class ApiObject {
  private readonly state: DurableObjectState;
  private readonly env: Env;
  private opened: Promise<{ services: Services; app: App }> | null = null;
  private clockSync: Promise<void> | null = null;

  constructor(state: DurableObjectState, env: Env) {
    this.state = state;
    this.env = env;
  }

  private open(): Promise<{ services: Services; app: App }> {
    this.opened ??= (async () => {
      const config = configOf(this.env);
      const { services, app } = await open(config);
      // Only this object's first request waits for it; a failure is retried by the next one.
      await prepareDatabase(services); // once per object
      return { services, app };
    })().catch((error) => {
      this.opened = null;
      throw error;
    });
    return this.opened;
  }

  async fetch(request: Request): Promise<Response> {
    let opened: { services: Services; app: App };
    try {
      opened = await this.open();
    } catch (error) {
      return failure(error);
    }
    const ctx: ExecutionContext = {
      waitUntil: (promise) => this.state.waitUntil(promise),
      passThroughOnException: () => {},
      props: {},
    };
    // No background timers here: the server clock re-syncs lazily, the revocation cache refreshes
    // on the verify that finds it stale, and the rate limiter flushes from its middleware.
    this.clockSync ??= opened.services.clock
      .maybeSync()
      .catch(() => {})
      .finally(() => {
        this.clockSync = null;
      });
    return opened.app.fetch(request, this.env, ctx);
  }
}

/** FNV-1a: a stable spread of credentials over the objects. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function objectFor(request: Request, env: Env): DurableObjectStub {
  const count = Math.max(1, Number(env.API_OBJECTS ?? 8) || 8);
  // The same token goes to the same object (its caches stay warm); anonymous requests (login) spread.
  const key =
    request.headers.get('authorization') ?? request.headers.get('cf-connecting-ip') ?? String(Math.random() * 2 ** 32);
  return env.API.get(env.API.idFromName(`api-${hash(key) % count}`));
}

// A plain flag, not a shared promise: a promise settled by another request's I/O must not be awaited here.
let preparedInIsolate = false;

async function perRequest(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
  let opened: { database: Database; services: Services; app: App };
  try {
    const config = configOf(env);
    // Services live for this request only: a local count would start from zero every time.
    opened = await open(config, { exactApiLimit: true });
    if (!preparedInIsolate) {
      await prepareDatabase(opened.services).catch(async (error) => {
        await opened.database.close().catch(() => {});
        throw error;
      });
      preparedInIsolate = true;
    }
  } catch (error) {
    return failure(error);
  }
  try {
    return await opened.app.fetch(request, env, ctx);
  } finally {
    ctx.waitUntil(opened.database.close().catch(() => {}));
  }
}

export default {
  fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    if (env.DB_CLIENT_MODE === 'per-request') return perRequest(request, env, ctx);
    return objectFor(request, env).fetch(request);
  },
};
