// GET /api/events: changes made through the API reach SSE clients, from one poll per instance (or a
// change stream where the server raises events for findOneAndUpdate); Last-Event-ID resumes from the
// history on any instance; slow clients are dropped alone; caps; the session is checked at heartbeats.
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import { createMetrics } from '../../api/metrics.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/identity/sessions.ts';
import { ApplicationFeed, eventId } from '../../shared/loans/application-feed.ts';
import { APPLICATIONS_COLLECTION } from '../../shared/loans/applications.ts';
import { createTestApp, openApiSuite } from '../support/app.ts';
import { sampleApplication } from '../support/applications.ts';
import { type callerFor, TEST_PASSWORD } from '../support/http.ts';
import { mongoUrl, type TestDatabase, target } from '../support/mongo.ts';
import { readSse, type SseClient } from '../support/sse.ts';
import { sleep } from '../support/wait.ts';

type App = ReturnType<typeof createApp>;

const settings = {
  EVENTS_SOURCE: 'poll',
  EVENTS_POLL_MS: '50',
  EVENTS_HEARTBEAT_MS: '100',
  EVENTS_SESSION_CHECK_MS: '100',
  EVENTS_CLIENT_BUFFER: '5',
  EVENTS_MAX_PER_ADMIN: '2',
  EVENTS_MAX_STREAMS: '4',
  RATE_LIMIT_PER_MINUTE: '1000000',
};

let database: TestDatabase;
let app: App;
let services: Services;
let tokens: Record<Role, string>;
let call: ReturnType<typeof callerFor>;
/** A second instance on the same database and keys (as behind nginx). */
let other: { app: App; services: Services };
/** Created a minute ago, so that nothing else is stamped near the first test's changes. */
let oldId: string;

const request = (target: App, token: string, headers: Record<string, string> = {}) =>
  target.request('/api/events', { headers: { authorization: `Bearer ${token}`, ...headers } });
const open = async (target: App, token: string, headers: Record<string, string> = {}) => {
  const res = await request(target, token, headers);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  return readSse(res);
};
const create = async (n: number) => {
  const res = await call('POST', '/api/applications', { as: 'reviewer', body: sampleApplication(n) });
  expect(res.status).toBe(201);
  return res.body as { _id: string; version: number };
};
const edit = async (id: string, version: number, body: Record<string, unknown>) => {
  const res = await call('PUT', `/api/applications/${id}`, { as: 'reviewer', body: { ...body, version } });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { _id: string; version: number; status: string };
};

/** A fresh admin with these roles, signed in: its token. */
async function signIn(roles: Role[]): Promise<string> {
  const email = `events-${crypto.randomUUID().slice(0, 8)}@example.com`;
  await services.admins.create({ email, password: TEST_PASSWORD, roles });
  const res = await app.request('/api/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: TEST_PASSWORD }),
  });
  expect(res.status).toBe(200);
  return (await res.json()).accessToken;
}

beforeAll(async () => {
  ({ database, app, services, tokens, call } = await openApiSuite(import.meta.filename, settings));
  other = await createTestApp(database.db, { ...settings, JWT_KEYS: services.config.JWT_KEYS });
  oldId = (await create(0))._id;
  const aMinuteAgo = new Date(Date.now() - 60_000);
  await database.db
    .collection(APPLICATIONS_COLLECTION)
    .updateOne({ _id: oldId as never }, { $set: { updatedAt: aMinuteAgo, 'lastChange.at': aMinuteAgo } });
  await Promise.all([services.feed.start(), other.services.feed.start()]);
});
afterAll(async () => {
  await Promise.all([services.feed.close(), other?.services.feed.close()]);
  await database?.close();
});

describe('resume with Last-Event-ID', () => {
  it('replays exactly the missed events, with the same ids on another instance', async () => {
    const first = await open(app, tokens.viewer);
    const moved = await edit(oldId, 1, { status: 'under_review' });
    const [seen] = await first.waitFor('change');
    expect(seen!.data).toEqual({
      id: seen!.id,
      applicationId: oldId,
      version: 2,
      status: 'under_review',
      from: 'pending',
      at: expect.any(Number),
      action: 'update',
    });
    expect(first.retry).toBe(3000);
    await first.close();

    // Missed while disconnected: an edit and a new application.
    const edited = await edit(oldId, moved.version, { applicantName: 'Renamed' });
    const created = await create(1);
    const missed = [`${edited.version}_${oldId}`, `1_${created._id}`];
    for (const instance of [services, other.services]) {
      await vi.waitFor(() => {
        const resume = instance.feed.history.after(seen!.id!, instance.config.EVENTS_POLL_MARGIN_MS);
        expect('replay' in resume && resume.replay.length).toBe(2);
      });
    }
    for (const instance of [app, other.app]) {
      const resumed = await open(instance, tokens.viewer, { 'last-event-id': seen!.id! });
      const replayed = await resumed.waitFor('change', 2);
      expect(replayed.map((event) => event.id!.replace(/^\d+_/, ''))).toEqual(missed);
      expect(replayed.map((event) => event.data.action)).toEqual(['update', 'create']);
      expect(replayed[0]!.data.from).toBeUndefined(); // an edit moves no status
      await resumed.close();
    }
  });

  it('sends reload for an id older than the history, and for one that is not ours', async () => {
    const tooOld = eventId(Date.now() - 10 * 60_000, 1, oldId);
    for (const id of [tooOld, 'not-an-event-id']) {
      const client = await open(app, tokens.viewer, { 'last-event-id': id });
      const [reload] = await client.waitFor('reload');
      expect(reload!.data).toEqual({ reason: 'resume' });
      expect(client.events.filter((event) => event.event === 'change')).toEqual([]);
      await client.close();
    }
  });

  it('sends reload when more events were missed than the client buffer holds', async () => {
    const live = await open(app, tokens.viewer);
    await create(50);
    const [marker] = await live.waitFor('change');
    await live.close();
    for (let i = 0; i < 6; i++) await create(51 + i); // EVENTS_CLIENT_BUFFER is 5
    await vi.waitFor(() => {
      const resume = services.feed.history.after(marker!.id!, 0);
      expect('replay' in resume && resume.replay.length).toBe(6);
    });
    const resumed = await open(app, tokens.viewer, { 'last-event-id': marker!.id! });
    await resumed.waitFor('reload');
    expect(resumed.events.filter((event) => event.event === 'change')).toEqual([]);
    await resumed.close();
  });
});

describe('sources', () => {
  it('poll source: a change made through the API arrives, with only the event fields', async () => {
    expect(services.feed.mode).toBe('poll');
    const client = await open(app, tokens.viewer);
    const made = await create(2);
    const [event] = await client.waitFor('change');
    expect(event!.data).toEqual({
      id: event!.id,
      applicationId: made._id,
      version: 1,
      status: 'pending',
      at: expect.any(Number),
      action: 'create',
    });
    await client.close();
  });

  it("a console's cookie session opens the stream as a browser's EventSource would (no Authorization header)", async () => {
    const email = `events-cookie-${crypto.randomUUID().slice(0, 8)}@example.com`;
    await services.admins.create({ email, password: TEST_PASSWORD, roles: ['viewer'] });
    const signedIn = await app.request('/api/console/session', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: TEST_PASSWORD }),
    });
    expect(signedIn.status).toBe(200);
    const cookie = signedIn.headers
      .getSetCookie()
      .map((line) => line.split(';')[0])
      .join('; ');
    const res = await app.request('/api/events', { headers: { cookie, accept: 'text/event-stream' } });
    expect(res.status).toBe(200);
    const client = readSse(res);
    const made = await create(3);
    const [event] = await client.waitFor('change');
    expect(event!.data).toMatchObject({ applicationId: made._id, version: 1 });
    await client.close();
    // Without the cookie, the same request is refused.
    expect((await app.request('/api/events')).status).toBe(401);
  });

  const offline = target().kind === 'offline';
  it(
    offline
      ? 'change-stream source: the probe refuses on mongo-java-server (no event for findOneAndUpdate), so auto polls and the change still arrives'
      : 'change-stream source: the probe passes, and a change made through the API arrives from the stream',
    async () => {
      const feed = new ApplicationFeed(database.db, {
        clock: services.clock,
        source: 'auto',
        pollMs: 50,
        marginMs: 2_000,
        historyMs: 60_000,
        historyMax: 1_000,
      });
      await feed.start();
      try {
        expect(feed.mode).toBe(offline ? 'poll' : 'change-stream');
        const heard: string[] = [];
        feed.subscribe((event) => heard.push(event.applicationId));
        const made = await create(3);
        await vi.waitFor(() => expect(heard).toContain(made._id));
      } finally {
        await feed.close();
      }
    },
  );
});

describe('bounds', () => {
  it('drops a client that never reads past EVENTS_CLIENT_BUFFER, while another keeps receiving', async () => {
    const droppedBefore = services.streams.stats.dropped;
    const slow = await request(app, tokens.viewer); // its body is never read
    const fast = await open(app, tokens.reviewer);
    const made: string[] = [];
    // One change per poll: the fast client takes each before the next (a burst larger than the buffer
    // within one poll would be more than any client can take, and drop it too).
    // Only this test's changes count: a busy feed may still deliver an earlier test's change, late.
    const ours = () =>
      fast.events
        .filter((event) => event.event === 'change' && made.includes(event.data.applicationId))
        .map((event) => event.data.applicationId);
    for (let i = 0; i < 8; i++) {
      made.push((await create(10 + i))._id);
      await vi.waitFor(() => expect(ours().length).toBeGreaterThanOrEqual(i + 1), { timeout: 10_000 });
    }
    expect(ours()).toEqual(made);
    expect(services.streams.stats.dropped).toBe(droppedBefore + 1);
    const metrics = await createMetrics({ queue: services.queue, events: services.streams.stats }).registry.metrics();
    expect(metrics).toContain(`events_clients_dropped_total ${droppedBefore + 1}`);
    expect(metrics).toContain('events_open_streams 1');
    expect(metrics).toMatch(/events_sent_total [1-9]\d*/);
    await expect(slow.body!.getReader().read()).rejects.toThrow(/did not keep up/);
    await fast.close();
    expect(services.streams.stats.open).toBe(0);
  });

  it('caps streams per admin (429 too_many_streams) and per instance (503 with Retry-After)', async () => {
    const opened: SseClient[] = [];
    opened.push(await open(app, tokens.viewer), await open(app, tokens.viewer));
    const third = await request(app, tokens.viewer);
    expect(third.status).toBe(429);
    expect((await third.json()).error.code).toBe('too_many_streams');
    opened.push(await open(app, tokens.reviewer), await open(app, tokens.reviewer));
    const full = await request(app, tokens.approver);
    expect(full.status).toBe(503);
    expect(full.headers.get('retry-after')).toBe('1');
    expect((await full.json()).error.code).toBe('overloaded');
    await opened[0]!.close();
    const again = await open(app, tokens.approver);
    await Promise.all([again, ...opened.slice(1)].map((client) => client.close()));
    expect(services.streams.stats.open).toBe(0);
  });

  it('does not count an open stream against MAX_IN_FLIGHT', async () => {
    const bounded = await createTestApp(database.db, {
      ...settings,
      MAX_IN_FLIGHT: '1',
      MAX_QUEUED: '0',
      JWT_KEYS: services.config.JWT_KEYS,
    });
    await bounded.services.feed.start();
    try {
      const stream = await open(bounded.app, tokens.viewer);
      const list = await bounded.app.request('/api/applications?limit=1', {
        headers: { authorization: `Bearer ${tokens.viewer}` },
      });
      expect(list.status).toBe(200);
      await stream.close();
    } finally {
      await bounded.services.feed.close();
    }
  });
});

describe('who gets events', () => {
  it('refuses a token without applications:read (roles []: every role has it) with 403, and no token with 401', async () => {
    const noRoles = await signIn([]);
    const res = await request(app, noRoles);
    expect(res.status).toBe(403);
    expect((await res.json()).error.code).toBe('forbidden');
    expect((await app.request('/api/events')).status).toBe(401);
  });

  it('ends the stream with session_ended at the next session check after logout, and sends heartbeats before', async () => {
    const token = await signIn(['viewer']);
    const client = await open(app, token);
    await vi.waitFor(() => expect(client.comments).toContain('heartbeat'));
    const logout = await app.request('/api/auth/logout', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(logout.status).toBe(204);
    const [ended] = await client.waitFor('session_ended');
    expect(ended!.data).toEqual({ code: 'token_revoked' });
    expect(await client.ended).toBe('closed');
  });

  it('answers 501 events_unsupported where the feed is not running (as on Workers)', async () => {
    const idle = await createTestApp(database.db, { ...settings, JWT_KEYS: services.config.JWT_KEYS });
    const res = await request(idle.app, tokens.viewer);
    expect(res.status).toBe(501);
    expect((await res.json()).error.code).toBe('events_unsupported');
  });
});

describe('one source per instance', () => {
  it('50 clients cost one poll query per interval, and each receives the change', async () => {
    const client = new MongoClient(mongoUrl(), { monitorCommands: true, maxPoolSize: 10 });
    await client.connect();
    const finds: number[] = [];
    client.on('commandStarted', (event) => {
      if (event.commandName === 'find' && event.command.find === 'applications') finds.push(performance.now());
    });
    const instance = await createTestApp(client.db(database.name), {
      ...settings,
      EVENTS_POLL_MS: '100',
      EVENTS_MAX_PER_ADMIN: '50',
      EVENTS_MAX_STREAMS: '50',
      JWT_KEYS: services.config.JWT_KEYS,
    });
    await instance.services.feed.start();
    try {
      const clients = await Promise.all(Array.from({ length: 50 }, () => open(instance.app, tokens.viewer)));
      const made = await create(30);
      for (const sse of clients) {
        await sse.waitFor('change');
        expect(sse.events.find((event) => event.event === 'change')!.data.applicationId).toBe(made._id);
      }
      const from = performance.now();
      const before = finds.length;
      await sleep(1_000); // a window to count in, not a deadline
      const intervals = (performance.now() - from) / 100;
      const polls = finds.length - before;
      expect(polls).toBeGreaterThanOrEqual(1);
      expect(polls).toBeLessThanOrEqual(Math.ceil(intervals) + 1); // 50 clients, still about one per interval
      await Promise.all(clients.map((sse) => sse.close()));
    } finally {
      await instance.services.feed.close();
      await client.close();
    }
  });
});
