// The SSE side of the read-path soak (bench/read-path.ts): many clients, one credential each, hold
// GET /api/events open and record when each change (applicationId, version) reached each of them.
// Runs as a child process of the driver, so its sockets and parsing do not share the event loop
// that times anything else. Messages (IPC): {type: 'open', url, tokens} -> {type: 'opened', statuses};
// {type: 'result', changes: [{key, at}]} -> {type: 'result', ...}; 'close'.
import { Agent, request } from 'undici';
import { percentile, round } from './support.ts';

export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

/** An incremental text/event-stream parser (events end at a blank line; comments start with ':'). */
export function sseParser(onEvent: (event: SseEvent) => void): (text: string) => void {
  let buffer = '';
  return (text) => {
    buffer += text.replace(/\r\n?/g, '\n');
    let end = buffer.indexOf('\n\n');
    while (end !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event: SseEvent = { event: 'message', data: '' };
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line === '' || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') data.push(value);
        else if (field === 'event') event.event = value;
        else if (field === 'id') event.id = value;
      }
      if (data.length > 0) {
        event.data = data.join('\n');
        onEvent(event);
      }
      end = buffer.indexOf('\n\n');
    }
  };
}

/** The change an event names, as `applicationId:version`, or null for any other event. */
export function changeKey(event: SseEvent): string | null {
  try {
    const data = JSON.parse(event.data) as { applicationId?: unknown; version?: unknown };
    return typeof data.applicationId === 'string' && typeof data.version === 'number'
      ? `${data.applicationId}:${data.version}`
      : null;
  } catch {
    return null;
  }
}

export interface DeliveryReport {
  clients: number;
  changes: number;
  /** Deliveries expected (clients x changes) and missing. */
  expected: number;
  missing: number;
  p50: number;
  p95: number;
  max: number;
  /** Events by name across all clients (message, reload, session_ended, ...). */
  events: Record<string, number>;
}

/** Delivery latency of each (client, change): received time minus the time the writer's PUT was answered. */
export function deliveryReport(
  received: Array<Map<string, number>>,
  changes: Array<{ key: string; at: number }>,
  events: Record<string, number>,
): DeliveryReport {
  const latencies: number[] = [];
  let missing = 0;
  for (const change of changes) {
    for (const client of received) {
      const at = client.get(change.key);
      if (at === undefined) missing++;
      else latencies.push(Math.max(0, at - change.at));
    }
  }
  latencies.sort((a, b) => a - b);
  return {
    clients: received.length,
    changes: changes.length,
    expected: received.length * changes.length,
    missing,
    p50: round(percentile(latencies, 50), 0),
    p95: round(percentile(latencies, 95), 0),
    max: round(latencies.at(-1) ?? Number.NaN, 0),
    events,
  };
}

if (import.meta.main) {
  const agent = new Agent({ bodyTimeout: 0, headersTimeout: 30_000 });
  const received: Array<Map<string, number>> = [];
  const events: Record<string, number> = {};
  const aborts: AbortController[] = [];

  async function open(url: string, token: string, index: number): Promise<string> {
    const abort = new AbortController();
    aborts.push(abort);
    const seen = new Map<string, number>();
    received[index] = seen;
    try {
      const res = await request(url, {
        dispatcher: agent,
        headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
        signal: abort.signal,
      });
      if (res.statusCode !== 200) {
        await res.body.dump();
        return String(res.statusCode);
      }
      const feed = sseParser((event) => {
        events[event.event] = (events[event.event] ?? 0) + 1;
        const key = changeKey(event);
        if (key && !seen.has(key)) seen.set(key, Date.now());
      });
      res.body.setEncoding('utf8');
      res.body.on('data', feed);
      res.body.on('error', () => {});
      return '200';
    } catch (error) {
      return (error as Error).name;
    }
  }

  process.on('message', async (message: { type: string; url?: string; tokens?: string[]; changes?: [] }) => {
    if (message.type === 'open') {
      const statuses: Record<string, number> = {};
      const tokens = message.tokens ?? [];
      for (let start = 0; start < tokens.length; start += 50) {
        const batch = await Promise.all(
          tokens.slice(start, start + 50).map((token, k) => open(message.url!, token, start + k)),
        );
        for (const status of batch) statuses[status] = (statuses[status] ?? 0) + 1;
      }
      process.send?.({ type: 'opened', statuses });
    } else if (message.type === 'result') {
      process.send?.({ type: 'result', report: deliveryReport(received, message.changes ?? [], events) });
    } else if (message.type === 'close') {
      for (const abort of aborts) abort.abort();
      await agent.close().catch(() => {});
      process.exit(0);
    }
  });
  process.on('disconnect', () => process.exit(0));
}
