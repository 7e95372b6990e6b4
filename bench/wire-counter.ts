// Counts the database commands API processes send, whatever code they run: a TCP proxy between
// them and the MongoDB server that reads the command name of each request on the wire (OP_MSG,
// and the legacy OP_QUERY of a first handshake) and forwards every byte unchanged. The read-path
// bench (bench/read-path.ts) runs it as a child process, so a baseline checkout is counted the
// same way as the current one without changing its code. Loopback only.
//
//   node bench/wire-counter.ts <target host:port>    (prints {"port": n} on IPC, answers "snapshot")
import { createConnection, createServer, type Socket } from 'node:net';

const OP_QUERY = 2004;
const OP_COMPRESSED = 2012;
const OP_MSG = 2013;

function cstring(buffer: Buffer, at: number): { text: string; end: number } {
  const end = buffer.indexOf(0, at);
  return { text: buffer.toString('utf8', at, end), end };
}

/** The command a whole client message carries: the first key of its command document. */
export function commandName(message: Buffer): string {
  const opCode = message.readInt32LE(12);
  if (opCode === OP_MSG) {
    let at = 20; // header 16 + flagBits 4
    while (at < message.length) {
      const kind = message[at];
      if (kind === 0) return cstring(message, at + 1 + 4 + 1).text; // kind, document length, element type
      if (kind !== 1) return 'unknown';
      at += 1 + message.readInt32LE(at + 1); // a document sequence: its size counts itself
    }
    return 'unknown';
  }
  if (opCode === OP_QUERY) {
    const collection = cstring(message, 20);
    return cstring(message, collection.end + 1 + 8 + 4 + 1).text; // skip, return, document length, type
  }
  return opCode === OP_COMPRESSED ? 'compressed' : `opcode ${opCode}`;
}

/** Splits a client's byte stream into whole messages (a message may span chunks) and names each. */
export function messageSplitter(onCommand: (name: string) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 16) {
      const length = pending.readInt32LE(0);
      if (pending.length < length) break;
      onCommand(commandName(pending.subarray(0, length)));
      pending = pending.subarray(length);
    }
  };
}

export interface WireCounter {
  port: number;
  counts: Map<string, number>;
  close(): Promise<void>;
}

export async function startWireCounter(targetHost: string, targetPort: number, port = 0): Promise<WireCounter> {
  const counts = new Map<string, number>();
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = createConnection({ host: targetHost, port: targetPort });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.setNoDelay(true);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    const split = messageSplitter((name) => counts.set(name, (counts.get(name) ?? 0) + 1));
    client.on('data', split);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

if (import.meta.main) {
  const [host, port] = (process.argv[2] ?? '').split(':');
  if (!host || !port || !host.startsWith('127.')) {
    console.error('usage: node bench/wire-counter.ts 127.0.0.1:<port>');
    process.exit(2);
  }
  const counter = await startWireCounter(host, Number(port));
  process.send?.({ port: counter.port });
  process.on('message', (message: unknown) => {
    if (message === 'snapshot') process.send?.({ counts: Object.fromEntries(counter.counts) });
    if (message === 'close') void counter.close().then(() => process.exit(0));
  });
  process.on('disconnect', () => process.exit(0));
}
