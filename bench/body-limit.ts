// The upload's body cap: how many bytes of a 100 MiB body are read before the 413, with our streamed cap
// (readCapped in api/routes/documents.ts) and with hono/body-limit, for a body without Content-Length and
// for one whose Content-Length understates it (possible wherever the Request is built in-process).
// Run: npx node bench/body-limit.ts   (no database needed)
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { readCapped } from '../api/routes/documents.ts';

const CAP = 10 * 1024 * 1024;
const TOTAL = 100 * 1024 * 1024;
const CHUNK = 64 * 1024;

/** A TOTAL-byte stream that counts what was pulled from it and whether it was cancelled. */
function source() {
  const seen = { pulled: 0, cancelled: false };
  const chunk = new Uint8Array(CHUNK);
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (seen.pulled >= TOTAL) return controller.close();
      seen.pulled += CHUNK;
      controller.enqueue(chunk);
    },
    cancel() {
      seen.cancelled = true;
    },
  });
  return { stream, seen };
}

const ours = new Hono().post('/', async (c) => {
  const body = await readCapped(c.req.raw.body, CAP);
  return body ? c.text('ok') : c.text('too large', 413);
});
const hono = new Hono().post('/', bodyLimit({ maxSize: CAP, onError: (c) => c.text('too large', 413) }), async (c) =>
  c.text(`ok ${(await c.req.arrayBuffer()).byteLength}`),
);

const cases = [
  ['no Content-Length', {}],
  ['Content-Length: 1000 (understated)', { 'content-length': '1000' }],
] as const;
const rows: string[] = [];
for (const [name, headers] of cases) {
  for (const [label, app] of [
    ['ours (readCapped)', ours],
    ['hono/body-limit', hono],
  ] as const) {
    const { stream, seen } = source();
    const request = new Request('http://x/', { method: 'POST', headers, body: stream, duplex: 'half' } as RequestInit);
    const res = await app.request(request);
    rows.push(
      `| ${name} | ${label} | ${res.status} | ${(seen.pulled / 1024 / 1024).toFixed(1)} MiB | ${seen.cancelled ? 'yes' : 'no'} |`,
    );
  }
}
console.log(`cap ${CAP / 1024 / 1024} MiB, body ${TOTAL / 1024 / 1024} MiB in ${CHUNK / 1024} KiB chunks\n`);
console.log('| body | cap | status | read before the answer | stream cancelled |\n| --- | --- | --- | --- | --- |');
console.log(rows.join('\n'));
console.log('\nrerun: npx node bench/body-limit.ts');
