import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { mapError } from '../../api/http-errors.ts';
import { loadShedding } from '../../api/overload.ts';

function appWith(options: { maxInFlight: number; maxQueued: number; queueTimeoutMs: number }) {
  const { middleware, state } = loadShedding(options);
  const app = new Hono();
  let ran = 0;
  const gates: Array<() => void> = [];
  app.use(middleware);
  app.get('/slow', async (c) => {
    ran++;
    await new Promise<void>((resolve) => gates.push(resolve));
    return c.text('done');
  });
  app.onError((error, c) => {
    const mapped = mapError(error);
    for (const [name, value] of Object.entries(mapped.headers)) c.header(name, value);
    return c.json(mapped.body, mapped.status as 503);
  });
  return { app, state, gates, ran: () => ran };
}

const tick = () => new Promise((r) => setTimeout(r, 10));

describe('load shedding', () => {
  it('runs up to maxInFlight, queues up to maxQueued, and sheds the rest with 503 and Retry-After', async () => {
    const { app, state, gates, ran } = appWith({ maxInFlight: 2, maxQueued: 2, queueTimeoutMs: 5_000 });
    const responses = Array.from({ length: 6 }, () => app.request('/slow'));
    await tick();
    expect(ran()).toBe(2);
    expect(state).toMatchObject({ inFlight: 2, queued: 2 });
    const shed = await Promise.all(responses.slice(4));
    for (const res of shed) {
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
    }
    while (ran() < 4 || gates.length > 0) {
      gates.shift()?.();
      await tick();
    }
    const served = await Promise.all(responses.slice(0, 4));
    expect(served.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(state).toMatchObject({ inFlight: 0, queued: 0, shed: 2 });
  });

  it('gives up on a queued request after queueTimeoutMs, and drops one whose client went away', async () => {
    const { app, state, gates, ran } = appWith({ maxInFlight: 1, maxQueued: 5, queueTimeoutMs: 100 });
    const first = app.request('/slow');
    await tick();
    const timedOut = app.request('/slow');
    const controller = new AbortController();
    const abandoned = app.request(new Request('http://x/slow', { signal: controller.signal }));
    await tick();
    controller.abort();
    expect((await abandoned).status).toBe(503);
    expect((await timedOut).status).toBe(503);
    gates.shift()?.();
    expect((await first).status).toBe(200);
    expect(ran()).toBe(1);
    expect(state).toMatchObject({ inFlight: 0, queued: 0, shed: 2 });
  });
});
