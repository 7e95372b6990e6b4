// A small Server-Sent Events client for tests: reads a Response's body, parses its frames, and keeps
// every event it saw (named ones, comments and the retry field), until the stream ends or is closed.
import { waitForValue } from './wait.ts';

export interface SseEvent {
  event: string;
  id?: string;
  // biome-ignore lint/suspicious/noExplicitAny: checked field by field
  data: any;
}

export interface SseClient {
  status: number;
  events: SseEvent[];
  comments: string[];
  retry?: number;
  /** Resolves when the stream ends (closed by the server, or errored as a dropped client). */
  ended: Promise<'closed' | 'errored'>;
  isEnded(): boolean;
  /** Waits until `count` events named `name` arrived; returns them. */
  waitFor(name: string, count?: number, timeoutMs?: number): Promise<SseEvent[]>;
  close(): Promise<void>;
}

function parseFrame(frame: string, client: SseClient): void {
  const fields: Record<string, string> = {};
  for (const line of frame.split('\n')) {
    if (line.startsWith(':')) client.comments.push(line.slice(1).trim());
    else if (line.includes(':')) {
      const at = line.indexOf(':');
      const value = line.slice(at + 1).replace(/^ /, '');
      const name = line.slice(0, at);
      fields[name] = name === 'data' && fields.data !== undefined ? `${fields.data}\n${value}` : value;
    }
  }
  if (fields.retry !== undefined) client.retry = Number(fields.retry);
  if (fields.data === undefined) return;
  client.events.push({ event: fields.event ?? 'message', id: fields.id, data: JSON.parse(fields.data) });
}

/** Starts reading `response` at once (a client that keeps up). */
export function readSse(response: Response): SseClient {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let ended = false;
  const client: SseClient = {
    status: response.status,
    events: [],
    comments: [],
    ended: Promise.resolve('closed'),
    isEnded: () => ended,
    waitFor: (name, count = 1, timeoutMs = 10_000) =>
      waitForValue(
        () => client.events.filter((event) => event.event === name),
        (events) => events.length >= count,
        { timeoutMs, what: `${count} "${name}" event(s)`, intervalMs: 20 },
      ),
    close: async () => {
      await reader.cancel().catch(() => {});
    },
  };
  client.ended = (async () => {
    let buffer = '';
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return 'closed' as const;
        buffer += decoder.decode(value, { stream: true });
        for (let at = buffer.indexOf('\n\n'); at >= 0; at = buffer.indexOf('\n\n')) {
          parseFrame(buffer.slice(0, at), client);
          buffer = buffer.slice(at + 2);
        }
      }
    } catch {
      return 'errored' as const;
    } finally {
      ended = true;
    }
  })();
  return client;
}
