// The Hono app: runtime-neutral. Each runtime's entry wires config and the database, then calls createApp.

import { Hono } from 'hono';
import type { Db } from 'mongodb';
import { ping } from '../shared/db.ts';

export interface AppDeps {
  db: Db;
}

export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  // Liveness: the process answers; touches no dependency.
  app.get('/health', (c) => c.json({ status: 'ok' }));
  // Readiness: 503 while MongoDB does not answer a ping, so a load balancer routes elsewhere.
  app.get('/ready', async (c) =>
    (await ping(deps.db)) ? c.json({ status: 'ready' }) : c.json({ status: 'unavailable', db: 'down' }, 503),
  );
  return app;
}
