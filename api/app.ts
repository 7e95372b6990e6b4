// The Hono app: runtime-neutral. Each runtime's entry wires config and the database, then calls createApp.
import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { cors } from 'hono/cors';
import { type RequestIdVariables, requestId } from 'hono/request-id';
import { secureHeaders } from 'hono/secure-headers';
import type { Db } from 'mongodb';
import type { Config } from '../shared/config.ts';
import { ping } from '../shared/db.ts';
import { HttpError, mapError } from './http-errors.ts';
import { createLogger, type Logger } from './log.ts';

export type AppConfig = Pick<Config, 'CORS_ORIGINS' | 'BODY_LIMIT_BYTES' | 'LOG_LEVEL'>;

export interface AppDeps {
  db: Db;
  config: AppConfig;
  logger?: Logger;
}

export type AppEnv = { Variables: RequestIdVariables };

const bodyMethods = new Set(['POST', 'PUT', 'PATCH']);

export function createApp(deps: AppDeps): OpenAPIHono<AppEnv> {
  const logger = deps.logger ?? createLogger(deps.config.LOG_LEVEL);
  const app = new OpenAPIHono<AppEnv>({
    // Validation failures answer 400 with every failing field's path.
    defaultHook: (result) => {
      if (!result.success) {
        throw new HttpError(
          400,
          'validation',
          'The request is not valid.',
          result.error.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message })),
        );
      }
    },
  });

  app.use(requestId({ limitLength: 128 }));
  app.use(async (c, next) => {
    const started = performance.now();
    await next();
    logger.info('request', {
      requestId: c.get('requestId'),
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      ms: Math.round((performance.now() - started) * 10) / 10,
    });
  });
  app.use(secureHeaders());
  app.use(cors({ origin: deps.config.CORS_ORIGINS, credentials: false, maxAge: 600 }));
  app.use(async (c, next) => {
    // A body without a JSON content type is refused before anything parses it.
    const type = c.req.header('content-type');
    const hasBody = c.req.raw.body !== null || type !== undefined;
    if (bodyMethods.has(c.req.method) && hasBody && !/^application\/json\s*(;|$)/i.test(type ?? '')) {
      throw new HttpError(415, 'unsupported_media_type', 'Send the body as application/json.');
    }
    await next();
  });
  app.use(
    bodyLimit({
      maxSize: deps.config.BODY_LIMIT_BYTES,
      onError: () => {
        throw new HttpError(413, 'payload_too_large', `The body is larger than ${deps.config.BODY_LIMIT_BYTES} bytes.`);
      },
    }),
  );

  app.get('/health', (c) => c.json({ status: 'ok' }));
  // Readiness: 503 while MongoDB does not answer a ping, so a load balancer routes elsewhere.
  app.get('/ready', async (c) =>
    (await ping(deps.db)) ? c.json({ status: 'ready' }) : c.json({ status: 'unavailable', db: 'down' }, 503),
  );

  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: { title: 'loan-admin API', version: '0.1.0' },
  });

  app.notFound((c) =>
    c.json({ error: { code: 'not_found', message: `No route for ${c.req.method} ${c.req.path}` } }, 404),
  );
  app.onError((error, c: Context<AppEnv>) => {
    const mapped = mapError(error);
    if (mapped.bug)
      logger.error('unhandled error', {
        requestId: c.get('requestId'),
        error: String(error),
        stack: (error as Error).stack,
      });
    for (const [name, value] of Object.entries(mapped.headers)) c.header(name, value);
    return c.json(mapped.body, mapped.status as 400);
  });
  return app;
}
