// A closed-loop HTTP load generator: N connections, each one virtual user sending its next request
// when the previous answer arrives. Each connection is its own undici Client (one socket); a
// request that times out destroys that client and opens a new one, so a late answer can never be
// read as the next request's (autocannon 7.15 and 8.0 do not reset their parser on reconnect, and garble the next answer). Loopback only.
import { Client } from 'undici';
import { round, summarize } from './support.ts';

export interface LoadRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** A label for the per-kind table (e.g. 'list'). */
  kind: string;
}

export interface LoadOptions {
  /** Origins to spread connections over, e.g. ['http://127.0.0.1:3000']. */
  origins: string[];
  connections: number;
  durationMs: number;
  timeoutMs?: number;
  /** The next request of virtual user `user`. */
  next: (user: number) => LoadRequest;
  /** Called with each answer (e.g. to learn a new version after a PUT). */
  onResponse?: (user: number, request: LoadRequest, status: number, body: string) => void;
}

export interface LoadResult {
  requests: number;
  durationS: number;
  rps: number;
  latency: { p50: number; p95: number; p99: number };
  statuses: Record<string, number>;
  byKind: Record<string, { n: number; p50: number; p95: number; p99: number; statuses: Record<string, number> }>;
}

function assertLoopback(origin: string) {
  const host = new URL(origin).hostname;
  if (!['127.0.0.1', 'localhost', '[::1]', '::1'].includes(host) && !host.startsWith('127.')) {
    throw new Error(`load generator targets loopback only, not ${origin}`);
  }
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  for (const origin of options.origins) assertLoopback(origin);
  const timeoutMs = options.timeoutMs ?? 10_000;
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  const kinds = new Map<string, { latencies: number[]; statuses: Record<string, number> }>();
  const started = performance.now();
  const deadline = started + options.durationMs;

  const count = (map: Record<string, number>, key: string) => {
    map[key] = (map[key] ?? 0) + 1;
  };

  async function user(index: number) {
    const origin = options.origins[index % options.origins.length]!;
    const open = () =>
      new Client(origin, {
        pipelining: 1,
        keepAliveTimeout: 60_000,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    let client = open();
    while (performance.now() < deadline) {
      const request = options.next(index);
      const t0 = performance.now();
      let status: string;
      let body = '';
      try {
        const res = await client.request({
          method: request.method,
          path: request.path,
          headers: request.body ? { 'content-type': 'application/json', ...request.headers } : request.headers,
          body: request.body,
          signal: AbortSignal.timeout(timeoutMs),
        });
        body = await res.body.text();
        status = String(res.statusCode);
      } catch (error) {
        status =
          (error as Error).name === 'TimeoutError' || (error as { code?: string }).code?.includes('TIMEOUT')
            ? 'timeout'
            : 'error';
        // Never reuse a connection whose answer we stopped waiting for.
        await client.destroy().catch(() => {});
        client = open();
      }
      const ms = performance.now() - t0;
      latencies.push(ms);
      count(statuses, status);
      let kind = kinds.get(request.kind);
      if (!kind) {
        kind = { latencies: [], statuses: {} };
        kinds.set(request.kind, kind);
      }
      kind.latencies.push(ms);
      count(kind.statuses, status);
      if (/^\d+$/.test(status)) options.onResponse?.(index, request, Number(status), body);
    }
    await client.close().catch(() => {});
  }

  await Promise.all(Array.from({ length: options.connections }, (_, i) => user(i)));
  const durationS = (performance.now() - started) / 1000;
  const overall = summarize(latencies);
  return {
    requests: latencies.length,
    durationS: round(durationS, 1),
    rps: round(latencies.length / durationS, 0),
    latency: { p50: round(overall.p50), p95: round(overall.p95), p99: round(overall.p99) },
    statuses,
    byKind: Object.fromEntries(
      [...kinds].map(([name, kind]) => {
        const s = summarize(kind.latencies);
        return [name, { n: s.n, p50: round(s.p50), p95: round(s.p95), p99: round(s.p99), statuses: kind.statuses }];
      }),
    ),
  };
}
