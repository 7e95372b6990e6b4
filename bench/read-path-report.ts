// The pure half of the read-path bench (bench/read-path.ts): which checkouts to measure, what an
// Artillery JSON report says, database commands per second from counter snapshots, and the
// side-by-side tables (one per scenario, a column per checkout).
import { resolve } from 'node:path';
import { markdownTable, round } from './support.ts';

export interface Tree {
  name: string;
  path: string;
}

/** `BENCH_TREES=baseline=../baseline,current=.` -> named absolute paths; default: this checkout. */
export function parseTrees(value: string | undefined, cwd: string): Tree[] {
  if (!value?.trim()) return [{ name: 'current', path: resolve(cwd) }];
  const trees = value.split(',').map((entry) => {
    const [name, path] = entry.split('=');
    if (!name?.trim() || !path?.trim()) throw new Error(`BENCH_TREES: expected name=path, got "${entry}"`);
    return { name: name.trim(), path: resolve(cwd, path.trim()) };
  });
  if (new Set(trees.map((t) => t.name)).size !== trees.length) throw new Error('BENCH_TREES: a name is given twice');
  return trees;
}

export interface HttpSummary {
  requests: number;
  /** Answers by status, plus client-side errors (e.g. `ETIMEDOUT`) that got no status. */
  statuses: Record<string, number>;
  ok200Pct: number;
  p50: number;
  p95: number;
  p99: number;
  vusersCreated: number;
  vusersFailed: number;
  /** Edits the working day sent (the processor's `edits.sent` counter; 0 for other scenarios). */
  edits: number;
  /** Refused edits by error code (`edits.409.<code>` counters). */
  refusals: Record<string, number>;
  /** First to last request, from Artillery's own period stamps. */
  firstAt: number;
  lastAt: number;
}

interface ArtilleryAggregate {
  counters?: Record<string, number>;
  summaries?: Record<string, { p50?: number; median?: number; p95?: number; p99?: number }>;
  firstCounterAt?: number;
  lastCounterAt?: number;
  firstMetricAt?: number;
  lastMetricAt?: number;
}

/** The figures the tables show, from `artillery run --output report.json`. */
export function summarizeArtillery(report: { aggregate: ArtilleryAggregate }): HttpSummary {
  const counters = report.aggregate.counters ?? {};
  const statuses: Record<string, number> = {};
  const refusals: Record<string, number> = {};
  for (const [name, value] of Object.entries(counters)) {
    const refusal = /^edits\.409\.(.+)$/.exec(name)?.[1];
    if (refusal) refusals[refusal] = value;
    const code = /^http\.codes\.(\d+)$/.exec(name)?.[1];
    const error = /^errors\.(.+)$/.exec(name)?.[1];
    if (code) statuses[code] = value;
    else if (error) statuses[error] = value;
  }
  const requests = counters['http.requests'] ?? 0;
  const latency = report.aggregate.summaries?.['http.response_time'] ?? {};
  return {
    requests,
    statuses,
    ok200Pct: requests ? round((100 * (statuses['200'] ?? 0)) / requests, 1) : 0,
    p50: latency.p50 ?? latency.median ?? Number.NaN,
    p95: latency.p95 ?? Number.NaN,
    p99: latency.p99 ?? Number.NaN,
    vusersCreated: counters['vusers.created'] ?? 0,
    vusersFailed: counters['vusers.failed'] ?? 0,
    edits: counters['edits.sent'] ?? 0,
    refusals,
    firstAt: report.aggregate.firstCounterAt ?? report.aggregate.firstMetricAt ?? Number.NaN,
    lastAt: report.aggregate.lastCounterAt ?? report.aggregate.lastMetricAt ?? Number.NaN,
  };
}

/** Commands the monitoring connections send whatever the load (heartbeats), left out of commands/s. */
export const MONITORING_COMMANDS = new Set(['hello', 'isMaster', 'ismaster', 'ping', 'buildInfo', 'buildinfo']);

export interface CounterSample {
  at: number;
  counts: Record<string, number>;
}

/**
 * Commands per second between the samples nearest to `from` and `to` (counts are cumulative), by
 * command and in total, monitoring commands left out of the total.
 */
export function commandRates(
  samples: CounterSample[],
  from: number,
  to: number,
): { total: number; byCommand: Record<string, number>; seconds: number } {
  const nearest = (t: number) =>
    samples.reduce((best, s) => (Math.abs(s.at - t) < Math.abs(best.at - t) ? s : best), samples[0]!);
  const a = nearest(from);
  const b = nearest(to);
  const seconds = (b.at - a.at) / 1000;
  const byCommand: Record<string, number> = {};
  let total = 0;
  for (const [name, count] of Object.entries(b.counts)) {
    const delta = count - (a.counts[name] ?? 0);
    if (delta <= 0 || seconds <= 0) continue;
    byCommand[name] = round(delta / seconds, 1);
    if (!MONITORING_COMMANDS.has(name)) total += delta;
  }
  return { total: seconds > 0 ? round(total / seconds, 1) : Number.NaN, byCommand, seconds: round(seconds, 1) };
}

/** "find 12.3, update 4" (or with `separator` ': ', "200: 9000, 503: 12") from the largest down, at most `top`. */
export function formatCounts(counts: Record<string, number>, top = 5, separator = ' '): string {
  const entries = Object.entries(counts).sort((x, y) => y[1] - x[1]);
  if (entries.length === 0) return '-';
  return entries
    .slice(0, top)
    .map(([name, n]) => `${name}${separator}${n}`)
    .join(', ');
}

/** One table for one scenario: a row per measure, a column per checkout ('-' where a checkout has none). */
export function sideBySide(trees: string[], measures: Array<Record<string, string | number>>): string {
  const rows = new Map<string, Array<string | number>>();
  measures.forEach((measure, column) => {
    for (const [name, value] of Object.entries(measure)) {
      if (!rows.has(name))
        rows.set(
          name,
          trees.map(() => '-'),
        );
      rows.get(name)![column] = value;
    }
  });
  return markdownTable(
    ['measure', ...trees],
    [...rows].map(([name, values]) => [name, ...values]),
  );
}
