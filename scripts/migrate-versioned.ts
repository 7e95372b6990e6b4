// Gives every document of a collection its first `version` (shared/concurrency/versions.ts), with a
// progress bar on a terminal and plain lines otherwise. Safe to stop (Ctrl-C finishes the batch)
// or kill at any point: the next run continues from the checkpoint in `migrations`.
//
//   MONGO_URL=mongodb://127.0.0.1:27017 MONGO_DB=loan_admin npx node scripts/migrate-versioned.ts applications
import { parseArgs } from 'node:util';
import { type MigrationProgress, migrateToVersioned } from '../shared/concurrency/versions.ts';
import { loadConfig } from '../shared/core/config.ts';
import { connect } from '../shared/core/db.ts';

const usage = 'usage: node scripts/migrate-versioned.ts <collection> [--batch-size 1000] [--pause-ms 0]';

function positiveInt(name: string, value: string, min: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`--${name} must be an integer >= ${min}\n${usage}\n`);
    process.exit(2);
  }
  return n;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'batch-size': { type: 'string', default: '1000' },
    'pause-ms': { type: 'string', default: '0' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help || positionals.length !== 1) {
  process.stderr.write(`${usage}\n`);
  process.exit(values.help ? 0 : 2);
}
const collection = positionals[0]!;
const batchSize = positiveInt('batch-size', values['batch-size'], 1);
const pauseMs = positiveInt('pause-ms', values['pause-ms'], 0);

const fmt = (n: number) => n.toLocaleString('en-US');

function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

/** On a terminal: one bar redrawn in place. Elsewhere (logs, CI): a plain line every few seconds. */
function progressReporter(tty: boolean, startedAt: number) {
  let lastLine = 0;
  let baseline: number | undefined;
  return (p: MigrationProgress) => {
    // The rate counts only this run's documents, not those of the run it resumed.
    baseline ??= p.scanned - Math.min(p.scanned, batchSize);
    const elapsed = performance.now() - startedAt;
    const rate = ((p.scanned - baseline) / Math.max(elapsed, 1)) * 1000;
    const total = Math.max(p.estimatedTotal, p.scanned);
    const fraction = total === 0 ? 1 : p.scanned / total;
    const eta = rate > 0 ? formatDuration(((total - p.scanned) / rate) * 1000) : '?';
    const stats = `${fmt(p.scanned)}/${fmt(total)} scanned, ${fmt(p.versioned)} versioned, ${fmt(Math.round(rate))}/s`;
    if (tty) {
      const width = Math.max(10, Math.min(40, (process.stderr.columns ?? 80) - 80));
      const filled = Math.round(fraction * width);
      const bar = `${'#'.repeat(filled)}${'-'.repeat(width - filled)}`;
      const pct = `${(fraction * 100).toFixed(0).padStart(3)}%`;
      process.stderr.write(`\r\x1b[2K[${bar}] ${pct} ${stats} ETA ${eta}`);
    } else if (elapsed - lastLine >= 2_000 || p.scanned >= total) {
      lastLine = elapsed;
      process.stderr.write(`${collection}: ${(fraction * 100).toFixed(1)}% ${stats}\n`);
    }
  };
}

const config = loadConfig(process.env);
const database = await connect(config);
const controller = new AbortController();
const stop = () => {
  if (controller.signal.aborted) process.exit(130);
  process.stderr.write('\nstopping after this batch (Ctrl-C again to quit now; the next run resumes)...\n');
  controller.abort();
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

const tty = process.stderr.isTTY === true;
const startedAt = performance.now();
try {
  process.stderr.write(`adding version: 1 to ${config.MONGO_DB}.${collection} in batches of ${fmt(batchSize)}\n`);
  const result = await migrateToVersioned(database.db, collection, {
    batchSize,
    pauseMs,
    signal: controller.signal,
    onProgress: progressReporter(tty, startedAt),
  });
  if (tty) process.stderr.write('\n');
  const took = formatDuration(performance.now() - startedAt);
  const resumed = result.resumed ? ' (resumed from a checkpoint)' : '';
  if (result.complete) {
    process.stdout.write(
      `${collection}: ${fmt(result.scanned)} scanned, ${fmt(result.versioned)} versioned in ${took}${resumed}\n`,
    );
  } else {
    process.stdout.write(
      `${collection}: stopped after ${fmt(result.scanned)} scanned, ${fmt(result.versioned)} versioned; run again to resume\n`,
    );
    process.exitCode = 130;
  }
} finally {
  await database.close();
}
