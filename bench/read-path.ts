// The read path for a thousand admins, measured with Artillery (bench/artillery/*.yml) against one
// or more checkouts side by side: burst (1,000 admins at once, 10 first pages each), working day
// (admins arriving over 20 s: pending pages, one application, think time, a few edits) at 250, 500
// and 1,000 admins, and a soak (SSE clients on GET /api/events while the working day runs). Each
// scenario runs against each checkout in turn on a freshly seeded database (10,000 applications,
// the offline server), one API instance and three behind nginx; database commands are counted on
// the wire (bench/wire-counter.ts), so every checkout is counted the same way.
//
//   npm run bench:read-path                                            (this checkout, everything)
//   git worktree add ../baseline <commit>; BENCH_TREES=baseline=../baseline,current=. npm run bench:read-path
//   BENCH_SCENARIOS=burst,working-day,soak BENCH_SETUPS=single,nginx BENCH_WD_ADMINS=250,500,1000
//   BENCH_SCENARIOS=edits BENCH_EDITS_SHARE=0.2   (opt in: the largest working day editing by PUT, then PATCH)
//   BENCH_BURST_USERS=1000 BENCH_WD_SECONDS=20 BENCH_CYCLES=5 BENCH_THINK_S=3 BENCH_EDIT_SHARE=0.05
//   BENCH_SSE_CLIENTS=1000 BENCH_CHANGES=10 BENCH_DOCS=10000
//   BENCH_API_NODE_OPTIONS="--cpu-prof --cpu-prof-dir=/tmp/prof"   (profile the API processes)
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import {
  type CounterSample,
  commandRates,
  formatCounts,
  type HttpSummary,
  parseTrees,
  sideBySide,
  summarizeArtillery,
  type Tree,
} from './read-path-report.ts';
import type { DeliveryReport } from './read-path-sse.ts';
import { type Stack, sampleRss, startStack } from './read-path-stack.ts';
import { round } from './support.ts';

const env = process.env;
const num = (name: string, fallback: number) => Number(env[name] ?? fallback);
const list = (name: string, fallback: string) => (env[name] ?? fallback).split(',').map((s) => s.trim());
const settings = {
  scenarios: list('BENCH_SCENARIOS', 'burst,working-day,soak'),
  setups: list('BENCH_SETUPS', 'single,nginx'),
  wdAdmins: list('BENCH_WD_ADMINS', '250,500,1000').map(Number),
  burstUsers: num('BENCH_BURST_USERS', 1000),
  wdSeconds: num('BENCH_WD_SECONDS', 20),
  cycles: num('BENCH_CYCLES', 5),
  thinkS: num('BENCH_THINK_S', 3),
  editShare: num('BENCH_EDIT_SHARE', 0.05),
  editsShare: num('BENCH_EDITS_SHARE', 0.2),
  sseClients: num('BENCH_SSE_CLIENTS', 1000),
  changes: num('BENCH_CHANGES', 10),
  docs: num('BENCH_DOCS', 10_000),
};
const trees = parseTrees(env.BENCH_TREES, process.cwd());
const here = import.meta.dirname;
const artilleryBin = join(createRequire(import.meta.url).resolve('artillery/package.json'), '..', 'bin', 'run');

interface Run {
  scenario: 'burst' | 'working-day' | 'soak' | 'edits';
  instances: number;
  admins: number;
  label: string;
  /** The working day's edits: PUT (the default) or PATCH. */
  editMethod?: 'put' | 'patch';
}

function plan(): Run[] {
  const runs: Run[] = [];
  const where = (instances: number) => (instances === 1 ? 'one API instance' : 'three API instances behind nginx');
  const setups = settings.setups.map((s) => (s === 'nginx' ? 3 : 1));
  const largest = Math.max(...settings.wdAdmins);
  for (const instances of setups) {
    if (settings.scenarios.includes('burst'))
      runs.push({ scenario: 'burst', instances, admins: settings.burstUsers, label: `burst, ${where(instances)}` });
  }
  for (const instances of setups) {
    if (!settings.scenarios.includes('working-day')) continue;
    for (const admins of instances === 1 ? settings.wdAdmins : [largest])
      runs.push({
        scenario: 'working-day',
        instances,
        admins,
        label: `working day, ${admins} admins, ${where(instances)}`,
      });
  }
  // PUT against PATCH: the largest working day with a larger share of edits, on one instance (opt in).
  if (settings.scenarios.includes('edits'))
    for (const editMethod of ['put', 'patch'] as const)
      runs.push({
        scenario: 'edits',
        instances: 1,
        admins: largest,
        editMethod,
        label: `edits by ${editMethod.toUpperCase()}: working day of ${largest} admins, ${settings.editsShare * 100}% of rounds edit, ${where(1)}`,
      });
  for (const instances of setups) {
    if (settings.scenarios.includes('soak'))
      runs.push({
        scenario: 'soak',
        instances,
        admins: largest,
        label: `soak, ${settings.sseClients} SSE clients + working day of ${largest} admins, ${where(instances)}`,
      });
  }
  return runs;
}

interface Measure {
  http?: HttpSummary;
  commandsPerS?: number;
  commandsByName?: Record<string, number>;
  seconds?: number;
  rss?: { before: number; after: number; max: number };
  sse?: DeliveryReport | { notAvailable: string };
  /** SSE connections by status (200 = open). */
  sseOpened?: Record<string, number>;
}

/** Runs one Artillery scenario, sampling the wire counter every second; bounded by `limitMs`. */
async function artillery(stack: Stack, script: string, overrides: object, dir: string, limitMs: number) {
  const output = join(dir, `report-${Date.now()}.json`);
  // Artillery reads the payload (and the processor) relative to the script, before --overrides apply:
  // the script runs from the temp dir that holds tokens.csv, its processor named by absolute path.
  const copy = join(dir, basename(script));
  writeFileSync(
    copy,
    readFileSync(script, 'utf8').replace(
      'processor: ./processor.js',
      `processor: ${join(dirname(script), 'processor.js')}`,
    ),
  );
  const samples: CounterSample[] = [await stack.snapshot()];
  const sampler = setInterval(async () => samples.push(await stack.snapshot()), 1000);
  const child = spawn(
    process.execPath,
    [artilleryBin, 'run', '--output', output, '--target', stack.origin, '--overrides', JSON.stringify(overrides), copy],
    { env: { ...env, ARTILLERY_DISABLE_TELEMETRY: 'true' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  const keep = (chunk: Buffer) => {
    log = (log + chunk.toString()).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const killer = setTimeout(() => child.kill('SIGKILL'), limitMs);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(killer);
  clearInterval(sampler);
  samples.push(await stack.snapshot());
  if (code !== 0) throw new Error(`artillery exited with ${code}\n${log.slice(-3000)}`);
  const http = summarizeArtillery(JSON.parse(readFileSync(output, 'utf8')));
  const rates = commandRates(samples, http.firstAt, http.lastAt);
  return { http, commandsPerS: rates.total, commandsByName: rates.byCommand, seconds: rates.seconds };
}

function workingDayOverrides(admins: number, edits: { share: number; method: 'put' | 'patch' }) {
  return {
    config: {
      phases: [{ name: 'working day', duration: settings.wdSeconds, arrivalCount: admins }],
      variables: { cycles: settings.cycles, think: settings.thinkS, editShare: edits.share, editMethod: edits.method },
    },
  };
}
const dayEdits = { share: settings.editShare, method: 'put' } as const;
const workingDayLimitMs = () => (settings.wdSeconds + settings.cycles * (2 * settings.thinkS + 30) + 90) * 1000;

/** Is GET /api/events served by this checkout? A 404 means the route does not exist there. */
async function eventsStatus(stack: Stack): Promise<number> {
  const abort = new AbortController();
  const res = await fetch(`${stack.origin}/api/events`, {
    headers: { authorization: `Bearer ${stack.tokens[0]}` },
    signal: abort.signal,
  });
  abort.abort();
  return res.status;
}

/** K changes, one every 2 s, by an admin of its own, each on an application nobody else edits. */
async function writer(stack: Stack, token: string, startAfterMs: number) {
  const ids = (
    await stack.db
      .collection<{ _id: string }>('applications')
      .find({ status: 'under_review' }, { projection: { _id: 1 } })
      .limit(settings.changes)
      .toArray()
  ).map((d) => d._id);
  await new Promise((r) => setTimeout(r, startAfterMs));
  const changes: Array<{ key: string; at: number }> = [];
  for (const id of ids) {
    const res = await fetch(`${stack.origin}/api/applications/${id}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ loanAmount: 5000 + changes.length * 100, version: 1 }),
    });
    const body = (await res.json()) as { version?: number };
    if (res.status === 200 && body.version) changes.push({ key: `${id}:${body.version}`, at: Date.now() });
    await new Promise((r) => setTimeout(r, 2000));
  }
  return changes;
}

function ask<T>(child: ChildProcess, message: object, type: string): Promise<T> {
  return new Promise((resolve) => {
    const onMessage = (m: { type: string }) => {
      if (m.type !== type) return;
      child.off('message', onMessage);
      resolve(m as T);
    };
    child.on('message', onMessage);
    child.send(message);
  });
}

async function soak(stack: Stack, dir: string, admins: number): Promise<Measure> {
  const status = await eventsStatus(stack);
  if (status !== 200) return { sse: { notAvailable: `GET /api/events answered ${status}` } };
  const rss = sampleRss(stack.apiPids); // before the streams open: max - before bounds their cost
  const sse = fork(join(here, 'read-path-sse.ts'), [], { stdio: 'inherit' });
  const opened = await ask<{ statuses: Record<string, number> }>(
    sse,
    { type: 'open', url: `${stack.origin}/api/events`, tokens: stack.tokens.slice(0, settings.sseClients) },
    'opened',
  );
  console.error(`  SSE clients opened: ${JSON.stringify(opened.statuses)}`);
  const script = join(here, 'artillery', 'working-day.yml');
  const [load, changes] = await Promise.all([
    artillery(stack, script, workingDayOverrides(admins, dayEdits), dir, workingDayLimitMs()),
    writer(stack, stack.tokens[admins]!, 5000),
  ]);
  await new Promise((r) => setTimeout(r, 3000)); // the last change's way to every client
  const { report } = await ask<{ report: DeliveryReport }>(sse, { type: 'result', changes }, 'result');
  const memory = rss.stop();
  sse.send({ type: 'close' });
  return {
    ...load,
    rss: memory,
    sse: report,
    sseOpened: opened.statuses,
  };
}

async function measure(tree: Tree, run: Run): Promise<Measure> {
  // One admin more than the load needs: the soak's writer.
  const stack = await startStack(tree, { instances: run.instances, admins: run.admins + 1, docs: settings.docs });
  const dir = mkdtempSync(join(tmpdir(), 'read-path-'));
  try {
    writeFileSync(join(dir, 'tokens.csv'), `${stack.tokens.slice(0, run.admins).join('\n')}\n`);
    if (run.scenario === 'soak') return await soak(stack, dir, run.admins);
    const rss = sampleRss(stack.apiPids);
    const result =
      run.scenario === 'burst'
        ? await artillery(
            stack,
            join(here, 'artillery', 'burst.yml'),
            {
              config: {
                phases: [{ name: 'burst', duration: 1, arrivalCount: run.admins }],
              },
            },
            dir,
            180_000,
          )
        : await artillery(
            stack,
            join(here, 'artillery', 'working-day.yml'),
            run.scenario === 'edits'
              ? workingDayOverrides(run.admins, { share: settings.editsShare, method: run.editMethod ?? 'put' })
              : workingDayOverrides(run.admins, dayEdits),
            dir,
            workingDayLimitMs(),
          );
    return { ...result, rss: rss.stop() };
  } finally {
    await stack.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function rows(m: Measure): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  if (m.http) {
    out.requests = m.http.requests;
    out['answered 200 %'] = m.http.ok200Pct;
    out.statuses = formatCounts(m.http.statuses, 6, ': ');
    out['p50 / p95 / p99 ms'] = `${m.http.p50} / ${m.http.p95} / ${m.http.p99}`;
    out['virtual users (failed)'] = `${m.http.vusersCreated} (${m.http.vusersFailed})`;
    if (m.http.edits > 0) {
      // Only an edit can answer 409 in the working day: its share of the edits is the conflict rate.
      const conflicts = m.http.statuses['409'] ?? 0;
      out['edits sent / 409 / conflict rate'] =
        `${m.http.edits} / ${conflicts} / ${round((100 * conflicts) / m.http.edits, 1)} %`;
      out['409 by code'] = formatCounts(m.http.refusals, 6, ': ') || '-';
    }
    out['requests/s'] = m.seconds ? round(m.http.requests / m.seconds, 0) : '-';
    out['db commands/s (wire count, without heartbeats)'] = m.commandsPerS ?? '-';
    out['db commands per request'] =
      m.seconds && m.commandsPerS !== undefined ? round((m.commandsPerS * m.seconds) / m.http.requests, 2) : '-';
    out['db commands/s by name'] = formatCounts(m.commandsByName ?? {});
  }
  if (m.rss) out['API RSS MiB before / after / max'] = `${m.rss.before} / ${m.rss.after} / ${m.rss.max}`;
  if (m.sse && 'notAvailable' in m.sse) out['SSE delivery'] = `not available (${m.sse.notAvailable})`;
  else if (m.sse) {
    out['SSE connections by status'] = formatCounts(m.sseOpened ?? {}, 6, ': ');
    if (m.rss && m.sse.clients > 0)
      out['API RSS growth per SSE client KiB (bound: includes the working day)'] = round(
        ((m.rss.max - m.rss.before) * 1024) / m.sse.clients,
        0,
      );
    out['SSE delivery p50 / p95 / max ms'] = `${m.sse.p50} / ${m.sse.p95} / ${m.sse.max}`;
    out['SSE every client got every change'] =
      m.sse.missing === 0 ? `yes (${m.sse.expected})` : `no: ${m.sse.missing} of ${m.sse.expected} missing`;
    out['SSE events by name'] = formatCounts(m.sse.events, 6, ': ');
  }
  return out;
}

const rerun = [
  `BENCH_TREES=${trees.map((t) => `${t.name}=${t.path}`).join(',')}`,
  ...Object.entries(env)
    .filter(([name]) => name.startsWith('BENCH_') && name !== 'BENCH_TREES')
    .map(([name, value]) => `${name}=${/^[\w./,=:-]*$/.test(value ?? '') ? value : `'${value}'`}`),
  'npm run bench:read-path',
].join(' ');
const started = Date.now();
const load = loadavg()[0]!.toFixed(1);
const output: string[] = [];
for (const run of plan()) {
  const measures: Measure[] = [];
  for (const tree of trees) {
    console.error(`${new Date().toISOString()} ${run.label}: ${tree.name} (${tree.path})`);
    measures.push(await measure(tree, run));
  }
  const table = `### ${run.label}\n\n${sideBySide(
    trees.map((t) => t.name),
    measures.map(rows),
  )}\n`;
  console.error(table);
  output.push(table);
}
console.log(
  `## Read path: Artillery scenarios side by side (${trees.map((t) => t.name).join(', ')})\n\n` +
    `offline mongo-java-server, ${settings.docs} applications; node ${process.version}; ${cpus().length} cores; ` +
    `load average before ${load}; ${new Date(started).toISOString()}; whole run ${round((Date.now() - started) / 60_000, 1)} min\n` +
    `rerun: ${rerun}\n`,
);
console.log(output.join('\n'));
