// The probe server of a worker process (the queue workers and the outbox relay): /health, /ready and
// /metrics over plain HTTP on WORKER_PROBE_PORT.
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { type Database, ping } from '../shared/core/db.ts';

export interface ProbeAnswer {
  status: number;
  /** JSON unless contentType is given (then the text as it is). */
  body: unknown;
  contentType?: string;
}

export interface ProbeStatus {
  /** Working has begun (a queue worker claims jobs; the relay runs its loop). */
  ready: boolean;
  stopping: boolean;
}

export const isReady = async (database: Database, status: ProbeStatus) =>
  status.ready && !status.stopping && (await ping(database.db));

/**
 * /health while the process lives; /ready while it works and reaches MongoDB; /metrics (Prometheus
 * text), behind `Authorization: Bearer <METRICS_TOKEN>` when that is set, as on the API.
 */
export function probeAnswers(
  name: string,
  database: Database,
  status: ProbeStatus,
  registry: Registry,
  token: string | undefined,
) {
  return async (path: string, authorization: string | undefined): Promise<ProbeAnswer> => {
    if (path === '/health') return { status: 200, body: { status: 'ok', worker: name } };
    if (path === '/metrics') {
      if (token && authorization !== `Bearer ${token}`) {
        return {
          status: 401,
          body: { error: { code: 'unauthorized', message: 'Send Authorization: Bearer <METRICS_TOKEN>.' } },
        };
      }
      return { status: 200, body: await registry.metrics(), contentType: registry.contentType };
    }
    if (path === '/ready') {
      const up = await isReady(database, status);
      return {
        status: up ? 200 : 503,
        body: { status: up ? 'ready' : 'unavailable', worker: name, stopping: status.stopping },
      };
    }
    return { status: 404, body: { error: { code: 'not_found', message: 'probes: /health, /ready, /metrics' } } };
  };
}

export function listenProbe(
  host: string,
  port: number,
  answer: (path: string, authorization: string | undefined) => Promise<ProbeAnswer>,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    answer(new URL(req.url ?? '/', 'http://probe').pathname, req.headers.authorization).then(
      ({ status, body, contentType }) => {
        // A load balancer or orchestrator reading a 503 learns when to ask again, as from the API.
        const retry = status === 503 ? { 'retry-after': '1' } : {};
        const auth = status === 401 ? { 'www-authenticate': 'Bearer realm="metrics"' } : {};
        res
          .writeHead(status, { 'content-type': contentType ?? 'application/json', ...retry, ...auth })
          .end(contentType ? String(body) : JSON.stringify(body));
      },
      () => res.writeHead(503, { 'retry-after': '1' }).end(),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const address = server.address();
      resolve({ server, port: typeof address === 'object' && address ? address.port : port });
    });
  });
}
