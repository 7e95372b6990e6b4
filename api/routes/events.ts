// GET /api/events: live changes to applications as Server-Sent Events, resumable with Last-Event-ID.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { statuses } from '../../shared/loans/applications.ts';
import { type AppEnv, requestToken } from '../auth.ts';
import { HttpError } from '../http-errors.ts';
import { errorResponses, signedIn } from '../openapi.ts';
import type { Services } from '../services.ts';

const EventsHeaders = z.object({
  'last-event-id': z
    .string()
    .max(300)
    .optional()
    .openapi({
      description:
        'The id of the last event the client received: every event after it that this instance still holds ' +
        'is sent again (and any stamped up to EVENTS_POLL_MARGIN_MS before it). An id older than the history ' +
        'or not one of ours gets `event: reload` instead.',
      example: '1767225600000_3_APP-0001',
    }),
});

const ChangeData = z
  .object({
    id: z.string().openapi({ description: 'the SSE id: `<at>_<version>_<applicationId>`, the same on every instance' }),
    applicationId: z.string(),
    version: z.number().int(),
    status: z.enum(statuses),
    from: z.enum(statuses).optional().openapi({ description: 'the previous status, when this change moved it' }),
    at: z.number().int().openapi({ description: "the application's updatedAt (ms since the epoch)" }),
    action: z.string().optional().openapi({ description: 'create, update, batch-update or disburse, when known' }),
  })
  .openapi('ApplicationChange');

// One parsed event of the stream, as an SSE client sees it (fields event, id, data; `data` is JSON text).
// OpenAPI 3.1 describes the JSON inside `data` with contentMediaType and contentSchema.
function eventData(description: string, contentSchema: object) {
  return z.string().openapi({ description, contentMediaType: 'application/json', contentSchema } as never);
}
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const StreamEvent = z
  .union([
    z.object({
      event: z.literal('change'),
      id: z.string().openapi({ description: 'as `id` in data; send it back as Last-Event-ID' }),
      data: eventData('an ApplicationChange', ref('ApplicationChange')),
    }),
    z.object({
      event: z.literal('reload'),
      id: z.string().optional(),
      data: eventData('`{reason}`: resume, or instance stopping', {
        type: 'object',
        required: ['reason'],
        properties: { reason: { type: 'string' } },
      }),
    }),
    z.object({
      event: z.literal('session_ended'),
      id: z.string().optional(),
      data: eventData('`{code}`: the error code of the failed session check (token_expired, token_revoked, ...)', {
        type: 'object',
        required: ['code'],
        properties: { code: { type: 'string' } },
      }),
    }),
  ])
  .openapi('ApplicationStreamEvent', {
    description:
      'One event of GET /api/events as parsed by an SSE client; `id` persists across events until a new one.',
  });

const streamDescription = [
  'A `text/event-stream`. First `retry: 3000`, then:',
  '- `event: change` with `id:` and `data:` an ApplicationChange (no document body; read the application for it).',
  '- `event: reload` (data `{reason}`): the resume could not be served from memory, or the instance is stopping;',
  '  reload your lists, then keep reading (or reconnect, sending Last-Event-ID).',
  '- `event: session_ended` (data `{code}`): the token expired or was revoked; the stream ends. Sign in again.',
  '- `: heartbeat` comments every EVENTS_HEARTBEAT_MS.',
  'An event may come twice (after a resume, or from two instances): key what you hold on (applicationId, version).',
].join('\n');

const eventsRoute = createRoute({
  method: 'get',
  path: '/api/events',
  tags: ['events'],
  summary: 'Live changes to applications (Server-Sent Events)',
  description:
    'Needs applications:read. Not counted against MAX_IN_FLIGHT. At most EVENTS_MAX_PER_ADMIN streams per admin per ' +
    'instance (429 too_many_streams) and EVENTS_MAX_STREAMS per instance (503 with Retry-After). A client that ' +
    'does not read EVENTS_CLIENT_BUFFER events is dropped; it reconnects with Last-Event-ID. On Cloudflare Workers ' +
    'the answer is 501 events_unsupported: poll the lists (sort=-updatedAt) there.',
  ...signedIn('applications:read'),
  request: { headers: EventsHeaders },
  responses: {
    200: {
      description: streamDescription,
      content: { 'text/event-stream': { schema: StreamEvent } },
    },
    501: {
      description: 'events_unsupported: this runtime keeps no change feed (Cloudflare Workers)',
      content: errorResponses(400)[400]!.content,
    },
    ...errorResponses(400, 401, 403, 429, 503),
  },
});

export function eventRoutes(app: OpenAPIHono<AppEnv>, services: Services): void {
  // ApplicationChange is named only from inside `data` (contentSchema), so it is registered by hand.
  app.openAPIRegistry.register('ApplicationChange', ChangeData);
  app.openapi(eventsRoute, (c) => {
    if (!services.feed.started) {
      throw new HttpError(
        501,
        'events_unsupported',
        'This runtime keeps no change feed (services live one request here); poll GET /api/applications?sort=-updatedAt instead.',
      );
    }
    const { token } = requestToken(c)!;
    const lastEventId = c.req.valid('header')['last-event-id'];
    const body = services.streams.open({
      adminId: c.get('auth').sub,
      recheck: () => services.sessions.verify(token),
      resume:
        lastEventId === undefined
          ? undefined
          : services.feed.history.after(lastEventId, services.config.EVENTS_POLL_MARGIN_MS),
      signal: c.req.raw.signal,
    });
    return new Response(body, {
      status: 200,
      headers: {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        // nginx: do not buffer this response (nginx.conf also turns buffering off for this location).
        'x-accel-buffering': 'no',
      },
    }) as never;
  });
}
