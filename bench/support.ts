// What every benchmark needs: a MongoDB server (MONGO_URL or a private offline server),
// exact command counts from the driver's command monitoring, percentiles and a table.
import { MongoClient, type MongoClientOptions } from 'mongodb';
import { startOfflineServer } from '../scripts/mongo/offline-server.ts';
import { probeFeatures } from '../scripts/mongo/targets.ts';

export interface BenchServer {
  url: string;
  description: string;
  stop(): Promise<void>;
}

/** MONGO_URL if set, else a private offline server for this run. */
export async function startBenchServer(): Promise<BenchServer> {
  if (process.env.MONGO_URL) {
    const url = process.env.MONGO_URL;
    return { url, description: (await probeFeatures(url)).server, stop: async () => {} };
  }
  const server = await startOfflineServer();
  return { url: server.url, description: (await probeFeatures(server.url)).server, stop: () => server.stop() };
}

/** A client that counts the commands it sends, by name. */
export function countingClient(url: string, options: MongoClientOptions = {}) {
  const client = new MongoClient(url, { ...options, monitorCommands: true });
  const counts = new Map<string, number>();
  client.on('commandStarted', (event) => {
    counts.set(event.commandName, (counts.get(event.commandName) ?? 0) + 1);
  });
  return {
    client,
    counts,
    total: () => [...counts.values()].reduce((a, b) => a + b, 0),
    reset: () => counts.clear(),
    /** e.g. "findAndModify 1, find 0.5" per operation. */
    perOperation(operations: number): string {
      return [...counts.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([name, n]) => `${name} ${round(n / operations, 2)}`)
        .join(', ');
    },
  };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] ?? Number.NaN;
}

export function summarize(samplesMs: number[]) {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p95: percentile(sorted, 95), p99: percentile(sorted, 99), n: sorted.length };
}

export function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export function markdownTable(headers: string[], rows: Array<Array<string | number>>): string {
  const lines = [`| ${headers.join(' | ')} |`, `| ${headers.map(() => '---').join(' | ')} |`];
  for (const row of rows) lines.push(`| ${row.join(' | ')} |`);
  return lines.join('\n');
}

/** Header lines every benchmark prints: what ran where, and how to run it again. */
export function printPreamble(title: string, rerun: string, server: BenchServer): void {
  console.log(`## ${title}`);
  console.log(`server: ${server.description}; node ${process.version}; ${new Date().toISOString()}`);
  console.log(`rerun: ${rerun}\n`);
}
