// The open event streams of one instance: caps per admin and per instance, one bounded buffer per
// client (a client that does not read is dropped, never the instance), heartbeats that check the
// session again, and an end for all of them at shutdown. Runtime-neutral: a ReadableStream per client.
import type { ApiConfig } from '../shared/core/config.ts';
import { UnauthorizedError } from '../shared/core/errors.ts';
import type { ApplicationEvent, ApplicationFeed, Resume } from '../shared/loans/application-feed.ts';
import { HttpError, RETRY_AFTER_S } from './http-errors.ts';

/** The client's EventSource waits this long before reconnecting (the `retry:` field). */
export const EVENTS_RETRY_MS = 3_000;

export interface StreamStats {
  open: number;
  sent: number;
  dropped: number;
}

export interface StreamRequest {
  adminId: string;
  /** Checks the session again (token expiry, revocations); throws UnauthorizedError when it no longer holds. */
  recheck: () => Promise<unknown>;
  resume?: Resume;
  /** The client went away. */
  signal: AbortSignal;
}

const encoder = new TextEncoder();

/** Each event's frame, made once however many clients it goes to. */
const eventFrames = new WeakMap<ApplicationEvent, string>();

export const sseFrame = {
  event: (event: ApplicationEvent) => {
    let frame = eventFrames.get(event);
    if (frame === undefined) {
      const { id, applicationId, version, status, from, at, action } = event;
      const data = JSON.stringify({ id, applicationId, version, status, from, at, action });
      frame = `id: ${id}\nevent: change\ndata: ${data}\n\n`;
      eventFrames.set(event, frame);
    }
    return frame;
  },
  named: (name: 'reload' | 'session_ended', data: unknown) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`,
  retry: () => `retry: ${EVENTS_RETRY_MS}\n\n`,
  heartbeat: () => ': heartbeat\n\n',
};

/** One client: frames wait in a bounded queue until the client reads them. */
class ClientStream {
  readonly body: ReadableStream<Uint8Array>;
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  private readonly queue: string[] = [];
  private pendingEvents = 0;
  private ending = false;
  private done = false;
  private readonly limit: number;
  private readonly onEnd: (dropped: boolean) => void;
  private readonly onSent: () => void;

  constructor(limit: number, onSent: () => void, onEnd: (dropped: boolean) => void) {
    this.limit = limit;
    this.onSent = onSent;
    this.onEnd = onEnd;
    this.body = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.controller = controller;
        },
        pull: () => this.flush(),
        cancel: () => this.finish(false),
      },
      { highWaterMark: 1 },
    );
  }

  /** Queues an event; past the buffer the client is dropped (it reconnects and resumes). */
  send(frame: string, isEvent = true): void {
    if (this.done || this.ending) return;
    if (isEvent && this.pendingEvents >= this.limit) {
      this.finish(true);
      return;
    }
    this.queue.push(frame);
    if (isEvent) this.pendingEvents++;
    this.flush();
  }

  /** Sends what is queued and `frame` last, past the buffer's bound, and closes: the stream ends now. */
  end(frame?: string): void {
    if (this.done || this.ending) return;
    if (frame) this.queue.push(frame);
    this.ending = true;
    for (const queued of this.queue.splice(0)) {
      if (queued.startsWith('id: ')) this.onSent();
      this.controller.enqueue(encoder.encode(queued));
    }
    this.flush();
  }

  private flush(): void {
    if (this.done) return;
    while (this.queue.length > 0 && (this.controller.desiredSize ?? 0) > 0) {
      const frame = this.queue.shift()!;
      if (frame.startsWith('id: ')) {
        this.pendingEvents--;
        this.onSent();
      }
      this.controller.enqueue(encoder.encode(frame));
    }
    if (this.ending && this.queue.length === 0) {
      this.controller.close();
      this.finish(false);
    }
  }

  finish(dropped: boolean): void {
    if (this.done) return;
    this.done = true;
    this.queue.length = 0;
    if (dropped) {
      try {
        this.controller.error(new Error('event stream dropped: the client did not keep up'));
      } catch {}
    }
    this.onEnd(dropped);
  }
}

export class EventStreams {
  readonly stats: StreamStats = { open: 0, sent: 0, dropped: 0 };
  private readonly perAdmin = new Map<string, number>();
  private readonly ends = new Set<() => void>();
  /** Open streams whose sessions the sweep checks, and the sweep's timer while there are any. */
  private readonly watched = new Map<ClientStream, StreamRequest>();
  private sweep: ReturnType<typeof setInterval> | undefined;
  private readonly feed: ApplicationFeed;
  private readonly config: ApiConfig;

  constructor(feed: ApplicationFeed, config: ApiConfig) {
    this.feed = feed;
    this.config = config;
  }

  /** 503 past the instance's bound, 429 past the admin's. */
  private admit(adminId: string): void {
    if (this.stats.open >= this.config.EVENTS_MAX_STREAMS) {
      throw new HttpError(503, 'overloaded', 'This instance holds as many event streams as it may; retry.', undefined, {
        'Retry-After': RETRY_AFTER_S,
      });
    }
    if ((this.perAdmin.get(adminId) ?? 0) >= this.config.EVENTS_MAX_PER_ADMIN) {
      throw new HttpError(
        429,
        'too_many_streams',
        `At most ${this.config.EVENTS_MAX_PER_ADMIN} event streams per admin on one instance; close one first.`,
      );
    }
  }

  /** Opens a client's stream: retry, the resume (or reload), then live events and heartbeats. */
  open(request: StreamRequest): ReadableStream<Uint8Array> {
    this.admit(request.adminId);
    this.count(request.adminId, 1);
    let unsubscribe = () => {};
    let heartbeat: ReturnType<typeof setInterval> | undefined;
    const end = () => client.end(sseFrame.named('reload', { reason: 'instance stopping' }));
    const client = new ClientStream(
      this.config.EVENTS_CLIENT_BUFFER,
      () => this.stats.sent++,
      (dropped) => {
        clearInterval(heartbeat);
        this.unwatch(client);
        unsubscribe();
        request.signal.removeEventListener('abort', gone);
        this.ends.delete(end);
        this.count(request.adminId, -1);
        if (dropped) this.stats.dropped++;
      },
    );
    const gone = () => client.finish(false);
    request.signal.addEventListener('abort', gone, { once: true });
    this.ends.add(end);
    client.send(sseFrame.retry(), false);
    if (request.resume) this.resume(client, request.resume);
    unsubscribe = this.feed.subscribe((event) => client.send(sseFrame.event(event)));
    heartbeat = setInterval(() => void this.beat(client), this.config.EVENTS_HEARTBEAT_MS);
    this.watch(client, request);
    return client.body;
  }

  /** The missed events, or reload: also when more were missed than the client's buffer holds. */
  private resume(client: ClientStream, resume: Resume): void {
    if ('reload' in resume || resume.replay.length > this.config.EVENTS_CLIENT_BUFFER) {
      client.send(sseFrame.named('reload', { reason: 'resume' }), false);
    } else for (const event of resume.replay) client.send(sseFrame.event(event));
  }

  /** A heartbeat comment: it keeps proxies from closing an idle stream. */
  private beat(client: ClientStream): void {
    client.send(sseFrame.heartbeat(), false);
  }

  private watch(client: ClientStream, request: StreamRequest): void {
    this.watched.set(client, request);
    this.sweep ??= setInterval(() => void this.checkSessions(), this.config.EVENTS_SESSION_CHECK_MS);
  }

  private unwatch(client: ClientStream): void {
    this.watched.delete(client);
    if (this.watched.size === 0) {
      clearInterval(this.sweep);
      this.sweep = undefined;
    }
  }

  /** Ends, with `session_ended`, every stream whose session no longer holds (expired, revoked, disabled). */
  private async checkSessions(): Promise<void> {
    await Promise.all(
      [...this.watched].map(async ([client, request]) => {
        try {
          await request.recheck();
        } catch (error) {
          if (error instanceof UnauthorizedError) client.end(sseFrame.named('session_ended', { code: error.code }));
          // Otherwise the database did not answer the revocation refresh: the session is not known to be over.
        }
      }),
    );
  }

  private count(adminId: string, delta: number): void {
    const n = (this.perAdmin.get(adminId) ?? 0) + delta;
    if (n > 0) this.perAdmin.set(adminId, n);
    else this.perAdmin.delete(adminId);
    this.stats.open += delta;
  }

  /** Shutdown: every stream gets `event: reload` and ends, so the server's close does not wait on them. */
  closeAll(): void {
    for (const end of [...this.ends]) end();
  }
}
