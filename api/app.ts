// The Hono app: runtime-neutral. Each runtime's entry wires config and the database, then calls createApp.
import { OpenAPIHono } from '@hono/zod-openapi';
import type { Span } from '@opentelemetry/api';
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { cors } from 'hono/cors';
import { requestId } from 'hono/request-id';
import { matchedRoutes, routePath } from 'hono/route';
import { secureHeaders } from 'hono/secure-headers';
import type { Db } from 'mongodb';
import type { ApiConfig } from '../shared/core/config.ts';
import { ping } from '../shared/core/db.ts';
import { contextOf, inSpan, recordingSpan, SpanKind, SpanStatusCode, tracingEnabled } from '../shared/core/tracing.ts';
import { type AppEnv, authenticate, rateLimitPerAdmin } from './auth.ts';
import { consoleRoutes } from './console.ts';
import { docsRoutes } from './docs.ts';
import { ClientGoneError, HttpError, mapError, RETRY_AFTER_S } from './http-errors.ts';
import { errorFields, type Logger } from './log.ts';
import { registerBearerAuth } from './openapi.ts';
import { loadShedding, type OverloadState } from './overload.ts';
import { adminRoutes } from './routes/admin.ts';
import { adminNameRoutes } from './routes/admin-names.ts';
import { applicationAuditRoutes } from './routes/application-audit.ts';
import { applicationPatchRoutes, isMergePatch, isMergePatchType, notMergePatch } from './routes/application-patch.ts';
import { applicationRoutes } from './routes/applications.ts';
import { authRoutes } from './routes/auth.ts';
import { consoleSessionRoutes } from './routes/console-session.ts';
import { documentRoutes, isDocumentUpload } from './routes/documents.ts';
import { eventRoutes } from './routes/events.ts';
import { ledgerRoutes } from './routes/ledger.ts';
import { presenceRoutes } from './routes/presence.ts';
import type { Services } from './services.ts';

export type { AppEnv } from './auth.ts';

export interface AppOptions {
  /** The client's address as the runtime sees it (for login throttling); behind a proxy see TRUST_PROXY. */
  remoteAddress?: (c: Context) => string | undefined;
  /** Called once per response (e.g. Node's Prometheus metrics); route is the matched pattern, never the raw path. */
  onResponse?: (info: ResponseInfo) => void;
  /** Runtime-specific routes (e.g. /metrics on Node), mounted after the API's own. */
  extraRoutes?: (app: OpenAPIHono<AppEnv>) => void;
  /** Hands over the load shedder's live counts once, when the app is built (e.g. for metrics). */
  onOverload?: (state: OverloadState) => void;
}

export interface ResponseInfo {
  method: string;
  route: string;
  status: number;
  ms: number;
}

const EVENTS_PATH = '/api/events';
const bodyMethods = new Set(['POST', 'PUT', 'PATCH']);
/** /ready answers within this (or DB_TIMEOUT_MS if smaller), so a probe sees a frozen database in time. */
const READY_TIMEOUT_MS = 1_000;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function isUtf8(bytes: ArrayBuffer): boolean {
  try {
    strictUtf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/**
 * A ping that answers false after timeoutMs. Measured: the driver's per-operation timeoutMS does not cut a
 * ping to a frozen server short (it waits about 11 s for the monitor), so the bound is a timer here.
 */
async function pingWithin(db: Db, timeoutMs: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([ping(db), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Path groups whose every route needs a session and counts against the admin's request budget. */
const sessionGroups = [
  '/api/applications/*',
  '/api/events',
  '/api/documents/*',
  '/api/admin/*',
  '/api/admins/*',
  '/api/ledger/*',
  '/api/presence',
];
/** Routes that need a session but are not counted against the budget (so an admin can always log out). */
const sessionOnly = ['/api/auth/logout', '/api/auth/logout-all', '/api/auth/me'];

/** The pattern of the route that answers this request, if any (middleware is registered for all methods). */
const answeringRoute = (c: Context) => matchedRoutes(c).findLast((route) => route.method !== 'ALL')?.path;

/**
 * The metrics label: the pattern that answered. A group's session check refusing is counted under the route
 * it guards, and an unknown path under the catch-all, as when the check ran as the route's own middleware.
 */
function routeLabel(c: Context): string {
  const at = routePath(c);
  return sessionGroups.includes(at) ? (answeringRoute(c) ?? '/*') : at;
}

/** Runs `middleware` only when some route answers: an unknown path stays a 404, not a 401, and costs no budget. */
function routedOnly(middleware: MiddlewareHandler<AppEnv>): MiddlewareHandler<AppEnv> {
  return (c, next) => (answeringRoute(c) === undefined ? next() : middleware(c, next));
}

/** Sessions are checked once per path group, before each route's own permission check and validation. */
function mountSessions(app: OpenAPIHono<AppEnv>, services: Services): void {
  const session = authenticate(services);
  const budget = rateLimitPerAdmin(services);
  for (const group of sessionGroups) app.use(group, routedOnly(session), routedOnly(budget));
  for (const path of sessionOnly) app.use(path, session);
}

/**
 * A SERVER span per request (only where tracing is on: the Node SDK, or Deno's built-in OpenTelemetry),
 * child of the caller's `traceparent` when it sends one; named by the route pattern that answered, never the
 * raw path. Where the runtime already made the request's SERVER span (Deno.serve does, continuing the
 * caller's context), that span is the request's: it is named and described here, not doubled.
 * Mounted first, so the request's log line and everything the route does run inside it.
 */
function mountTracing(app: OpenAPIHono<AppEnv>): void {
  if (!tracingEnabled()) return;
  const describe = (c: Context<AppEnv>, span: Span) => {
    const route = routeLabel(c);
    span.updateName(`${c.req.method} ${route}`);
    span.setAttributes({ 'http.route': route, 'http.response.status_code': c.res.status });
    if (c.res.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: `HTTP ${c.res.status}` });
  };
  app.use(async (c, next) => {
    const runtimeSpan = recordingSpan();
    if (runtimeSpan) {
      await next();
      describe(c, runtimeSpan);
      return;
    }
    const parent = contextOf({ traceparent: c.req.header('traceparent'), tracestate: c.req.header('tracestate') });
    const attributes = { 'http.request.method': c.req.method, 'url.path': c.req.path };
    await inSpan(c.req.method, { root: true, parent, kind: SpanKind.SERVER, attributes }, async (span) => {
      await next();
      if (span) describe(c, span);
    });
  });
}

function mountLogging(app: OpenAPIHono<AppEnv>, logger: Logger, onResponse: AppOptions['onResponse']): void {
  app.use(requestId({ limitLength: 128 }));
  app.use(async (c, next) => {
    const started = performance.now();
    await next();
    const ms = performance.now() - started;
    logger.info('request', {
      requestId: c.get('requestId'),
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      ms: Math.round(ms * 10) / 10,
    });
    onResponse?.({ method: c.req.method, route: routeLabel(c), status: c.res.status, ms });
  });
}

/** JSON bodies only (but for the document upload), within BODY_LIMIT_BYTES, and valid UTF-8. */
function mountBodyChecks(app: OpenAPIHono<AppEnv>, config: ApiConfig): void {
  app.use(async (c, next) => {
    // The document upload is multipart; its route checks its own content type and size.
    if (isDocumentUpload(c.req.method, c.req.path)) return next();
    // A body without a JSON content type is refused before anything parses it.
    const type = c.req.header('content-type');
    // Over real HTTP a bodiless POST (Content-Length: 0) still arrives with a body stream on Node and workerd.
    const hasBody = type !== undefined || (c.req.raw.body !== null && c.req.header('content-length') !== '0');
    // An application's PATCH takes a JSON Merge Patch (RFC 7396) and nothing else. Without a body it
    // goes on to the session check (401 first) and to the route, which refuses it (415).
    const mergePatch = isMergePatch(c.req.method, c.req.path);
    if (mergePatch && hasBody && !isMergePatchType(type)) throw notMergePatch();
    const isJson = /^application\/json\s*(;|$)/i.test(type ?? '');
    if (!mergePatch && bodyMethods.has(c.req.method) && hasBody && !isJson) {
      throw new HttpError(415, 'unsupported_media_type', 'Send the body as application/json.');
    }
    await next();
  });
  const limitBody = bodyLimit({
    maxSize: config.BODY_LIMIT_BYTES,
    onError: () => {
      throw new HttpError(413, 'payload_too_large', `The body is larger than ${config.BODY_LIMIT_BYTES} bytes.`);
    },
  });
  app.use((c, next) => (isDocumentUpload(c.req.method, c.req.path) ? next() : limitBody(c, next)));
  // JSON is UTF-8 (RFC 8259): a body with invalid bytes is refused, not stored with U+FFFD in their place.
  // Read once here (within the limit above); the validator reuses the cached bytes.
  app.use(async (c, next) => {
    if (bodyMethods.has(c.req.method) && !isDocumentUpload(c.req.method, c.req.path) && c.req.raw.body) {
      if (!isUtf8(await c.req.arrayBuffer())) {
        throw new HttpError(400, 'validation', 'The body is not valid UTF-8.', [
          { path: '', message: 'invalid UTF-8' },
        ]);
      }
    }
    await next();
  });
}

/** What /ready answers (true: 200): MongoDB answers a ping within the readiness bound. */
export function isReady(db: Db, config: ApiConfig): Promise<boolean> {
  // A frozen server holds a plain ping until the driver's monitor gives up (10 s and more): bound it.
  return pingWithin(db, Math.min(config.DB_TIMEOUT_MS, READY_TIMEOUT_MS));
}

function mountProbes(app: OpenAPIHono<AppEnv>, db: Db, config: ApiConfig): void {
  app.get('/health', (c) => c.json({ status: 'ok' }));
  // Readiness: 503 while MongoDB does not answer a ping, so a load balancer routes elsewhere.
  app.get('/ready', async (c) =>
    (await isReady(db, config))
      ? c.json({ status: 'ready' })
      : c.json({ status: 'unavailable', db: 'down' }, 503, { 'Retry-After': RETRY_AFTER_S }),
  );
}

function mountErrors(app: OpenAPIHono<AppEnv>, logger: Logger): void {
  app.notFound((c) =>
    c.json({ error: { code: 'not_found', message: `No route for ${c.req.method} ${c.req.path}` } }, 404),
  );
  app.onError((error, c: Context<AppEnv>) => {
    // The client went away mid-request: whatever failed because of it (the driver reports an aborted
    // operation in several shapes) is nobody's bug and nobody reads the answer.
    const mapped = mapError(c.req.raw.signal.aborted ? new ClientGoneError() : error);
    if (mapped.bug) logger.error('unhandled error', { requestId: c.get('requestId'), ...errorFields(error) });
    for (const [name, value] of Object.entries(mapped.headers)) c.header(name, value);
    return c.json(mapped.body, mapped.status as 400);
  });
}

/** Validation failures answer 400 with every failing field's path. */
const validationHook = (result: {
  success: boolean;
  error?: { issues: { path: PropertyKey[]; message: string }[] };
}) => {
  if (!result.success) {
    throw new HttpError(
      400,
      'validation',
      'The request is not valid.',
      result.error?.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message })),
    );
  }
};

export function createApp(services: Services, options: AppOptions = {}): OpenAPIHono<AppEnv> {
  const { config, logger, db } = services;
  const app = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
  mountTracing(app);
  mountLogging(app, logger, options.onResponse);
  // Only the API sheds load; /health and /ready must answer a busy instance's probes.
  const shedding = loadShedding({
    maxInFlight: config.MAX_IN_FLIGHT,
    maxQueued: config.MAX_QUEUED,
    queueTimeoutMs: config.QUEUE_TIMEOUT_MS,
  });
  options.onOverload?.(shedding.state);
  // An event stream lives for hours: it is bounded by EVENTS_MAX_STREAMS instead, never by MAX_IN_FLIGHT.
  app.use('/api/*', (c, next) => (c.req.path === EVENTS_PATH ? next() : shedding.middleware(c, next)));
  app.use(secureHeaders());
  app.use(cors({ origin: config.CORS_ORIGINS, credentials: false, maxAge: 600 }));
  mountBodyChecks(app, config);
  mountProbes(app, db, config);

  const clientAddress = (c: Context) => {
    if (config.TRUST_PROXY) {
      const forwarded = c.req.header('x-real-ip') ?? c.req.header('x-forwarded-for')?.split(',').at(-1)?.trim();
      if (forwarded) return forwarded;
    }
    return options.remoteAddress?.(c) ?? 'unknown';
  };
  mountSessions(app, services);
  authRoutes(app, services, clientAddress);
  consoleSessionRoutes(app, services, clientAddress);
  applicationRoutes(app, services);
  applicationPatchRoutes(app, services);
  applicationAuditRoutes(app, services);
  documentRoutes(app, services);
  adminNameRoutes(app, services);
  adminRoutes(app, services);
  ledgerRoutes(app, services);
  presenceRoutes(app, services);
  eventRoutes(app, services);
  docsRoutes(app);
  consoleRoutes(app);
  options.extraRoutes?.(app);

  registerBearerAuth(app);
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: { title: 'loan-admin API', version: '0.1.0' },
  });
  mountErrors(app, logger);
  return app;
}
