// The repository's nginx.conf, run by Debian's nginx in front of three API processes on loopback
// (upstream addresses and file paths substituted, every other directive as written): requests spread
// over all three, a session works on each and its logout is refused by each, a SIGKILLed instance
// costs no failed GET, body limits match the API's, and only idempotent requests are retried.

import { rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoad } from '../../bench/load-generator.ts';
import { loadApiEnv, loginLoadAdmin, prepareLoadData } from '../../bench/load-scenario.ts';
import { type ApiInstance, startApiInstances } from '../../scripts/api-instances.ts';
import { freePort } from '../../scripts/mongo/offline-server.ts';
import { findNginx, nginxWorkDir, type RunningNginx, startNginx } from '../../scripts/nginx/nginx.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';
import { readSse } from '../support/sse.ts';
import { sleep, waitFor } from '../support/wait.ts';

// Without nginx the file is skipped by name, except in CI, where `npm run setup` must have installed it.
const noNginx = !findNginx() && !process.env.CI;
const named = (title: string) =>
  noNginx ? `${title} (skipped: nginx is not installed; npm run setup installs it)` : title;
const REVOCATION_STALENESS_MS = 500;

let workDir: string;
beforeAll(() => {
  workDir = nginxWorkDir('nginx-test-');
});
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

async function nginxFor(name: string, upstreams: string[]): Promise<RunningNginx> {
  return startNginx({ upstreams, listen: `127.0.0.1:${await freePort()}`, dir: join(workDir, name) });
}

describe.skipIf(noNginx)(named('nginx.conf in front of three API instances'), () => {
  let database: TestDatabase;
  let instances: ApiInstance[];
  let nginx: RunningNginx;
  // nginx writes a request's log line just after answering it: wait for the line.
  const upstreamOf = async (requestId: string) => {
    for (let i = 0; i < 100; i++) {
      const entry = nginx.accessLog().find((e) => e.request_id === requestId);
      if (entry) return entry;
      await sleep(20);
    }
    throw new Error(`no access log line for ${requestId}`);
  };

  beforeAll(async () => {
    database = await openTestDatabase(import.meta.filename, { poolSize: 10 });
    await prepareLoadData(database.db, { admins: 4, docs: 60 });
    instances = await startApiInstances(3, {
      ...loadApiEnv(mongoUrl(), database.name),
      REVOCATION_STALENESS_MS: String(REVOCATION_STALENESS_MS),
      DB_POOL_MAX: '10',
    });
    nginx = await nginxFor(
      'api',
      instances.map((instance) => instance.address),
    );
  });
  afterAll(async () => {
    await nginx?.stop();
    await Promise.all((instances ?? []).map((instance) => instance.stop()));
    await database?.close();
  });

  it('spreads requests over all three instances and passes the request id through', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) {
      const res = await fetch(`${nginx.origin}/health`, { headers: { 'x-request-id': `spread-${i}` } });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-request-id')).toBe(`spread-${i}`); // the API echoes the client's id
      ids.push(`spread-${i}`);
    }
    const served = new Map<string, number>();
    for (const id of ids) {
      const entry = await upstreamOf(id);
      expect(entry?.status).toBe(200);
      served.set(entry!.upstream, (served.get(entry!.upstream) ?? 0) + 1);
    }
    expect([...served.keys()].sort()).toEqual(instances.map((instance) => instance.address).sort());
    for (const n of served.values()) expect(n).toBeGreaterThanOrEqual(5); // round robin: about 10 each

    // Without a client id, nginx makes one ($request_id, 32 hex) and the API answers with it.
    const res = await fetch(`${nginx.origin}/health`);
    const generated = res.headers.get('x-request-id') ?? '';
    expect(generated).toMatch(/^[0-9a-f]{32}$/);
    expect((await upstreamOf(generated)).status).toBe(200);
  });

  it('serves a session on every instance, and every instance refuses it within the revocation bound after logout', async () => {
    const token = await loginLoadAdmin(nginx.origin, 0);
    const me = (requestId: string) =>
      fetch(`${nginx.origin}/api/auth/me`, {
        headers: { authorization: `Bearer ${token}`, 'x-request-id': requestId },
      });
    const before = await Promise.all(Array.from({ length: 30 }, (_, i) => me(`me-${i}`)));
    expect(before.map((res) => res.status)).toEqual(Array(30).fill(200));
    const servedBy = new Set(await Promise.all(before.map(async (_, i) => (await upstreamOf(`me-${i}`)).upstream)));
    expect(servedBy.size).toBe(3);

    const logout = await fetch(`${nginx.origin}/api/auth/logout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(logout.status).toBe(204);
    const loggedOutAt = performance.now();
    // Each instance: the time of its first 401, polled through nginx (round robin reaches each).
    const firstRefusal = new Map<string, number>();
    for (let i = 0; firstRefusal.size < 3 && performance.now() - loggedOutAt < 5_000; i++) {
      const res = await me(`after-${i}`);
      const { upstream } = await upstreamOf(`after-${i}`);
      if (res.status === 401 && !firstRefusal.has(upstream))
        firstRefusal.set(upstream, performance.now() - loggedOutAt);
      await sleep(20);
    }
    expect(firstRefusal.size).toBe(3);
    // The bound plus a round trip, with a generous margin for two busy cores.
    for (const ms of firstRefusal.values()) expect(ms).toBeLessThan(REVOCATION_STALENESS_MS + 1_500);
    // And from then on, every instance refuses it, directly and through nginx.
    for (const instance of instances) {
      const direct = await fetch(`${instance.origin}/api/auth/me`, { headers: { authorization: `Bearer ${token}` } });
      expect(direct.status).toBe(401);
    }
    const after = await Promise.all(Array.from({ length: 12 }, (_, i) => me(`late-${i}`)));
    expect(after.map((res) => res.status)).toEqual(Array(12).fill(401));
  });

  it('refuses a JSON body over 1 MiB at nginx, and lets a document upload up to 11 MiB through to the API', async () => {
    const token = await loginLoadAdmin(nginx.origin, 1);
    const auth = { authorization: `Bearer ${token}` };
    const tooLarge = await fetch(`${nginx.origin}/api/applications`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ padding: 'x'.repeat(2 * 1024 * 1024) }),
    });
    expect(tooLarge.status).toBe(413);
    expect((await tooLarge.json()).error.code).toBe('payload_too_large');

    // Under 1 MiB the API itself answers (a validation error: the body is no application).
    const small = await fetch(`${nginx.origin}/api/applications`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ padding: 'x'.repeat(512 * 1024) }),
    });
    expect(small.status).toBe(400);
    expect((await small.json()).error.code).toBe('validation');

    const upload = (bytes: number) => {
      const form = new FormData();
      form.append('file', new Blob([new Uint8Array(bytes)], { type: 'application/pdf' }), 'big.pdf');
      return fetch(`${nginx.origin}/api/applications/APP-NOT-THERE/documents`, {
        method: 'POST',
        headers: { ...auth, 'x-request-id': `upload-${bytes}` },
        body: form,
      });
    };
    const fiveMiB = await upload(5 * 1024 * 1024);
    // nginx passed it on and the API judged it: an unknown application.
    expect(fiveMiB.status).toBe(404);
    expect((await fiveMiB.json()).error.code).toBe('not_found');
    expect((await upstreamOf(`upload-${5 * 1024 * 1024}`)).upstream).toMatch(/^127\.0\.0\.1:\d+$/);
    const twelveMiB = await upload(12 * 1024 * 1024);
    expect(twelveMiB.status).toBe(413);
    expect((await upstreamOf(`upload-${12 * 1024 * 1024}`)).upstream).toBe(''); // refused before any instance
  });

  it('streams a live event through its /api/events location (unbuffered) to a client connected via nginx', async () => {
    const token = await loginLoadAdmin(nginx.origin, 3);
    const auth = { authorization: `Bearer ${token}` };
    const res = await fetch(`${nginx.origin}/api/events`, { headers: auth });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const client = readSse(res);
    await waitFor(() => client.retry !== undefined, { what: 'the retry field through nginx' });
    const made = await fetch(`${nginx.origin}/api/applications`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ applicantName: 'Ada Nginx', monthlyIncome: 5000, loanAmount: 20_000, termMonths: 24 }),
    });
    expect(made.status).toBe(201);
    const { _id } = await made.json();
    await waitFor(() => client.events.some((event) => event.event === 'change' && event.data.applicationId === _id), {
      what: 'the change event through nginx',
    });
    await client.close();
  });

  // Last: it kills an instance.
  it('loses no GET when an instance is SIGKILLed under load', async () => {
    const token = await loginLoadAdmin(nginx.origin, 2);
    const headers = { authorization: `Bearer ${token}` };
    const victim = instances[2]!;
    const killer = sleep(1_500).then(() => victim.process.kill('SIGKILL'));
    const result = await runLoad({
      origins: [nginx.origin],
      connections: 24,
      durationMs: 5_000,
      next: (user) => ({
        kind: user % 2 ? 'list' : 'me',
        method: 'GET',
        path: user % 2 ? '/api/applications?limit=20' : '/api/auth/me',
        headers,
      }),
    });
    await killer;
    await victim.exited;
    expect(result.requests).toBeGreaterThan(100);
    expect(result.statuses).toEqual({ '200': result.requests });
    // The kill was felt: some requests went to the dead instance first and were answered by another.
    const retried = nginx.accessLog().filter((entry) => entry.upstream.includes(', '));
    expect(retried.length).toBeGreaterThan(0);
    for (const entry of retried) {
      expect(entry.status).toBe(200);
      expect(entry.upstream.split(', ')[0]).toBe(victim.address);
    }
  }, 60_000);
});

/**
 * Stand-in upstreams: `crash` reads the request and drops the connection without answering (an
 * instance dying mid-request); `shed` answers 503 like the API's load shedding; `ok` answers 200.
 * Shows which requests nginx sends to a second instance, and which failures mark an instance down.
 */
describe.skipIf(noNginx)(named('nginx.conf retry policy'), () => {
  interface Seen {
    id: string;
    method: string;
    headers: IncomingHttpHeaders;
    socket: string;
  }
  const seen = { crash: [] as Seen[], shed: [] as Seen[], ok: [] as Seen[] };
  const servers: Server[] = [];
  const address = {} as Record<keyof typeof seen, string>;

  beforeAll(async () => {
    for (const name of ['crash', 'shed', 'ok'] as const) {
      const server = createServer((req, res) => {
        req.resume();
        req.on('end', () => {
          seen[name].push({
            id: String(req.headers['x-request-id']),
            method: req.method!,
            headers: req.headers,
            socket: `${req.socket.remotePort}`,
          });
          if (name === 'crash') req.socket.destroy();
          else if (name === 'shed')
            res
              .writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' })
              .end('{"error":{"code":"overloaded","message":"busy"}}');
          else res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
        });
      });
      const port = await freePort();
      await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
      servers.push(server);
      address[name] = `127.0.0.1:${port}`;
    }
  });
  afterAll(async () => {
    for (const server of servers) {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  /** Sends `n` requests of one method through a fresh nginx (fresh passive-health state). */
  async function send(method: string, n: number, upstreams = [address.crash, address.ok]) {
    const nginx = await nginxFor(`retry-${method}-${upstreams.length}-${seen.ok.length}`, upstreams);
    try {
      const replies: Record<string, { status: number; retryAfter: string | null; body: string }> = {};
      for (let i = 0; i < n; i++) {
        const id = `${method}-${upstreams.join('-')}-${i}`;
        const res = await fetch(`${nginx.origin}/api/things`, {
          method,
          headers: {
            'x-request-id': id,
            'x-forwarded-for': '203.0.113.7',
            ...(method === 'GET' ? {} : { 'content-type': 'application/json' }),
          },
          body: method === 'GET' ? undefined : '{}',
        });
        replies[id] = { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.text() };
      }
      return replies;
    } finally {
      await nginx.stop();
    }
  }
  const statuses = (replies: Record<string, { status: number }>) =>
    Object.fromEntries(Object.entries(replies).map(([id, reply]) => [id, reply.status]));

  it('retries GET and PUT on the next instance, never POST or PATCH', async () => {
    const gets = statuses(await send('GET', 6));
    const puts = statuses(await send('PUT', 6));
    const postReplies = await send('POST', 6);
    const posts = statuses(postReplies);
    const patches = statuses(await send('PATCH', 6));
    const crashed = (method: string) => seen.crash.filter((s) => s.method === method).map((s) => s.id);
    const answered = (method: string) => seen.ok.filter((s) => s.method === method).map((s) => s.id);

    for (const [method, replies] of [
      ['GET', gets],
      ['PUT', puts],
    ] as const) {
      expect(crashed(method).length).toBeGreaterThan(0); // some went to the dying instance first...
      expect(Object.values(replies)).toEqual(Array(6).fill(200)); // ...and every one was answered by the other
      for (const id of crashed(method)) expect(answered(method)).toContain(id);
    }
    for (const [method, replies] of [
      ['POST', posts],
      ['PATCH', patches],
    ] as const) {
      expect(crashed(method).length).toBeGreaterThan(0);
      for (const id of crashed(method)) {
        expect(replies[id]).toBe(503); // nginx's own JSON answer, not a second delivery
        if (method === 'POST') expect(postReplies[id]?.retryAfter).toBe('1'); // like every 503 of the API
        expect(answered(method)).not.toContain(id);
      }
      for (const id of answered(method)) expect(replies[id]).toBe(200);
    }
  });

  it("passes the API's load-shedding 503 through, neither retried nor marking the instance down", async () => {
    const replies = await send('GET', 12, [address.shed, address.ok]);
    const shed = seen.shed.filter((s) => s.method === 'GET').map((s) => s.id);
    // Round robin keeps sending the shedding instance its share: 503s do not count as failures.
    expect(shed.length).toBeGreaterThanOrEqual(4);
    for (const id of shed) {
      expect(replies[id]).toMatchObject({ status: 503, retryAfter: '1' });
      expect(JSON.parse(replies[id]!.body).error.code).toBe('overloaded'); // the instance's answer
      expect(seen.ok.map((s) => s.id)).not.toContain(id); // not retried elsewhere
    }
  });

  it('forwards the client address, the request id and keeps connections to the instances alive', () => {
    const requests = seen.ok.filter((s) => s.method === 'GET');
    expect(requests.length).toBeGreaterThan(1);
    for (const request of requests) {
      expect(request.headers['x-real-ip']).toBe('127.0.0.1');
      expect(request.headers['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
      expect(request.headers['x-request-id']).toBe(request.id);
      expect(request.headers.connection).not.toBe('close');
    }
    // One upstream connection served several requests (upstream keep-alive).
    expect(new Set(requests.map((r) => r.socket)).size).toBeLessThan(requests.length);
  });

  // Last: its control request would count among the GETs the test above inspects.
  it('answers /metrics itself with 404 in every spelling, passing none of them to an instance', async () => {
    const nginx = await nginxFor('metrics', [address.ok]);
    try {
      const paths = [
        '/metrics',
        '/metrics/',
        '/METRICS',
        '/Metrics?x=1',
        '/%6Detrics',
        '//metrics',
        '/metrics/../metrics',
      ];
      for (const [i, path] of paths.entries()) {
        const res = await fetch(`${nginx.origin}${path}`, { headers: { 'x-request-id': `metrics-${i}` } });
        expect(res.status, path).toBe(404);
        expect((await res.json()).error.code).toBe('not_found');
        expect(res.headers.get('x-request-id')).toBe(`metrics-${i}`);
      }
      // Control: a neighbouring path still reaches the instance.
      const other = await fetch(`${nginx.origin}/metricsx`, { headers: { 'x-request-id': 'metrics-control' } });
      expect(other.status).toBe(200);
    } finally {
      await nginx.stop();
    }
    const reached = seen.ok.map((s) => s.id);
    expect(reached.filter((id) => id.startsWith('metrics-') && id !== 'metrics-control')).toEqual([]);
    expect(reached).toContain('metrics-control');
  });
});
