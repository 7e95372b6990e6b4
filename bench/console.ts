// The admin console: its size, and how soon its first screen can be used on this machine.
//
// Size: every asset of the build (scripts/build-console.ts), raw and gzip, and the JS gzip total against
// the 100 KiB budget. Time: one API process (api/node.ts) on a fresh database of the run's MongoDB target
// (scripts/mongo/targets.ts: MONGO_URL, Docker, else the offline server) seeded with 1,000 applications,
// and Debian's chromium (scripts/browser.ts). The first admin (ADMIN_EMAIL) makes a reviewer through
// POST /api/admins; each measured load is a fresh browser context that carries the cookies of a console
// session of that reviewer (POST /api/console/session, one per load: see consoleSession; a returning admin:
// the first screen is the work queue) or none (signed out: the sign-in form). Times come from the page's own clock, from
// the start of the navigation: the HTML's response end and DOMContentLoaded (the navigation timing entry),
// and the moment an admin can act: the queue's first row and an enabled, visible search input in the DOM
// (or the sign-in form's fields and button), stamped at the first frame after it (performance.now() in a
// task queued from requestAnimationFrame). Cold: the browser cache disabled (DevTools protocol); warm: the
// same context loaded the page once before (the assets are immutable and content-hashed, so they come from
// the cache and only the page and the API calls go to the server). Each combination also runs with the CPU
// slowed 4x (Emulation.setCPUThrottlingRate), a slow laptop's main thread. The runs are interleaved (run 1
// of every row, then run 2, ...) so that noise on the machine falls on every row alike.
//
//   npm run bench:console
//   CONSOLE_BENCH_RUNS=10 CONSOLE_BENCH_APPLICATIONS=1000 CONSOLE_BENCH_SLOW=0 (no 4x rows) npm run bench:console
import { loadavg } from 'node:os';
import { MongoClient } from 'mongodb';
import type { Browser, BrowserContext, Cookie, Page } from 'playwright-core';
import { apiIndexes } from '../api/services.ts';
import { startApiInstances } from '../scripts/api-instances.ts';
import { findChromium, launchChromium } from '../scripts/browser.ts';
import { writeConsoleAssets } from '../scripts/build-console.ts';
import { startTarget } from '../scripts/mongo/targets.ts';
import { seedApplications } from '../scripts/seed.ts';
import { ensureIndexes } from '../shared/core/db.ts';
import { markdownTable, percentile, round } from './support.ts';

const RUNS = Number(process.env.CONSOLE_BENCH_RUNS ?? 10);
const APPLICATIONS = Number(process.env.CONSOLE_BENCH_APPLICATIONS ?? 1000);
const SLOW = process.env.CONSOLE_BENCH_SLOW !== '0';
const SLOW_RATE = 4;
const BUDGET_KIB = 100;
const READY_TIMEOUT_MS = 30_000;
const rerun = 'npm run bench:console   (CONSOLE_BENCH_RUNS=10 CONSOLE_BENCH_APPLICATIONS=1000 CONSOLE_BENCH_SLOW=0)';

const BOSS = { email: 'boss@example.com', password: 'console bench boss password' };
const ADMIN = { email: 'reviewer@example.com', password: 'console bench reviewer password', name: 'Rita Reviewer' };

type Visit = 'returning' | 'first';
interface Scenario {
  visit: Visit;
  cache: 'cold' | 'warm';
  cpu: number;
}
interface Sample {
  responseEnd: number;
  domContentLoaded: number;
  /** The condition first held (DOM). */
  inDom: number;
  /** The first frame after it. */
  ready: number;
  resources: { path: string; start: number; end: number; transfer: number }[];
}

const kib = (bytes: number) => round(bytes / 1024, 1);
const ms = (value: number) => Math.round(value);
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const stats = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return { median: median(sorted), p90: percentile(sorted, 90), min: sorted[0]!, max: sorted.at(-1)! };
};
const cell = (values: number[]) => {
  if (values.length === 0) return '-';
  const s = stats(values);
  return `${ms(s.median)} / ${ms(s.p90)} (${ms(s.min)}-${ms(s.max)})`;
};
const load = () =>
  loadavg()
    .map((n) => n.toFixed(2))
    .join(' ');

// --- cleanup: everything started is stopped, in reverse, even on error or Ctrl-C ---
const cleanups: { name: string; run: () => Promise<unknown> }[] = [];
let cleaning: Promise<void> | null = null;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const { name, run } of cleanups.splice(0).reverse()) {
      await run().catch((error) => console.error(`stopping ${name}: ${(error as Error).message}`));
    }
  })();
  return cleaning;
}
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => {
    console.error(`\n${signal}: stopping the browser, the API and the database...`);
    void cleanup().finally(() => process.exit(130));
  });

/**
 * Installed in every document of a context before its own scripts: watches the DOM for the moment an
 * admin can act and stamps it, then the first frame after it.
 */
function watchReady(kind: Visit) {
  type Stamps = { inDom?: number; ready?: number };
  const w = window as unknown as { __bench: Stamps };
  w.__bench = {};
  const usable = (el: Element | null) =>
    el instanceof HTMLElement &&
    !(el as HTMLInputElement).disabled &&
    el.closest('[inert]') === null &&
    (typeof el.checkVisibility !== 'function' || el.checkVisibility());
  const holds =
    kind === 'returning'
      ? () =>
          document.querySelector('table.queue tbody tr') !== null &&
          usable(document.querySelector('input[type="search"]'))
      : () =>
          usable(document.querySelector('input[name="email"]')) &&
          usable(document.querySelector('input[name="password"]')) &&
          usable(document.querySelector('form button[type="submit"]'));
  const observer = new MutationObserver(() => {
    if (w.__bench.inDom !== undefined || !holds()) return;
    w.__bench.inDom = performance.now();
    observer.disconnect();
    // requestAnimationFrame runs just before the frame is drawn; a task queued from it runs after.
    requestAnimationFrame(() => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => {
        w.__bench.ready = performance.now();
      };
      channel.port2.postMessage(null);
    });
  });
  observer.observe(document, {
    childList: true,
    subtree: true,
    attributes: true,
    attributeFilter: ['disabled', 'hidden', 'inert'],
  });
}

async function measuredPage(context: BrowserContext, scenario: Scenario): Promise<Page> {
  await context.addInitScript(watchReady, scenario.visit);
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  if (scenario.cpu !== 1) await cdp.send('Emulation.setCPUThrottlingRate', { rate: scenario.cpu });
  if (scenario.cache === 'cold') {
    await cdp.send('Network.enable');
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  }
  return page;
}

async function waitReady(page: Page): Promise<void> {
  try {
    await page.waitForFunction(() => (window as unknown as { __bench: { ready?: number } }).__bench?.ready, undefined, {
      timeout: READY_TIMEOUT_MS,
      polling: 100,
    });
  } catch (error) {
    const seen = await page
      .evaluate(() => ({
        stamps: (window as unknown as { __bench?: unknown }).__bench,
        text: document.body?.textContent?.slice(0, 300),
      }))
      .catch(() => null);
    throw new Error(`${page.url()}: not ready in ${READY_TIMEOUT_MS} ms (${JSON.stringify(seen)})`, { cause: error });
  }
}

/** One load of /console/ in a fresh context; for a warm one, the context loads the page once before. */
async function sample(browser: Browser, origin: string, scenario: Scenario): Promise<Sample> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    if (scenario.visit === 'returning') await context.addCookies(await consoleSession(origin));
    // No interception (context.route would turn the HTTP cache off and delay every request): the page's
    // CSP refuses other origins, and any request to one is reported.
    const page = await measuredPage(context, scenario);
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    page.on('request', (request) => {
      const url = request.url();
      if (!url.startsWith(`${origin}/`) && !url.startsWith('data:') && url !== 'about:blank')
        errors.push(`request to another origin: ${url}`);
    });
    if (scenario.cache === 'warm') {
      await page.goto(`${origin}/console/`, { waitUntil: 'commit' });
      await waitReady(page);
      await page.goto('about:blank');
    }
    await page.goto(`${origin}/console/`, { waitUntil: 'commit' });
    await waitReady(page);
    const measured = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming;
      const stamps = (window as unknown as { __bench: { inDom: number; ready: number } }).__bench;
      return {
        responseEnd: nav.responseEnd,
        domContentLoaded: nav.domContentLoadedEventStart,
        inDom: stamps.inDom,
        ready: stamps.ready,
        resources: (performance.getEntriesByType('resource') as PerformanceResourceTiming[]).map((r) => ({
          path: new URL(r.name).pathname,
          start: r.startTime,
          end: r.responseEnd,
          transfer: r.transferSize,
        })),
      };
    });
    // Not timed: the screen is the one expected, and its field takes focus (an admin can act).
    const field = page.locator(scenario.visit === 'returning' ? 'input[type="search"]' : 'input[name="email"]');
    await field.focus();
    if (!(await field.evaluate((el) => document.activeElement === el)))
      throw new Error(`${scenario.visit}: the field did not take focus`);
    if (scenario.visit === 'returning') {
      const rows = await page.locator('table.queue tbody tr').count();
      if (rows === 0) throw new Error('the queue has no rows');
    }
    if (errors.length) throw new Error(`page errors: ${errors.join(' | ')}`);
    return { ...measured, resources: measured.resources };
  } finally {
    await context.close();
  }
}

/**
 * A console session of the returning admin, as its cookies (POST /api/console/session, as the sign-in form
 * sends it). One per load: a console page that goes away rotates its session's refresh token (its live
 * stream's error handler refreshes as the page unloads), so contexts sharing one session would present a
 * rotated refresh token and the API would revoke the session as reused.
 */
async function consoleSession(origin: string): Promise<Cookie[]> {
  const res = await fetch(`${origin}/api/console/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: ADMIN.email, password: ADMIN.password }),
  });
  if (!res.ok) throw new Error(`POST /api/console/session: ${res.status} ${await res.text()}`);
  const host = new URL(origin).hostname;
  return res.headers.getSetCookie().map((header) => {
    const [pair = '', ...attributes] = header.split(';').map((part) => part.trim());
    const at = pair.indexOf('=');
    const attribute = (name: string) =>
      attributes.find((a) => a.toLowerCase().startsWith(`${name.toLowerCase()}=`))?.split('=')[1];
    const maxAge = Number(attribute('Max-Age') ?? 3600);
    return {
      name: pair.slice(0, at),
      value: pair.slice(at + 1),
      domain: host,
      path: attribute('Path') ?? '/',
      expires: Math.floor(Date.now() / 1000) + maxAge,
      httpOnly: attributes.some((a) => a.toLowerCase() === 'httponly'),
      secure: attributes.some((a) => a.toLowerCase() === 'secure'),
      sameSite: 'Strict' as const,
    };
  });
}

/** The requests of a load, by path (assets by kind), with median start and end: the critical chain. */
function waterfall(samples: Sample[]): string {
  const byPath = new Map<string, { start: number[]; end: number[] }>();
  for (const s of samples) {
    for (const r of s.resources) {
      if (r.path === '/api/events') continue; // the live stream stays open
      const key = r.path.startsWith('/console/assets/') ? `assets/*${r.path.slice(r.path.lastIndexOf('.'))}` : r.path;
      const entry = byPath.get(key) ?? { start: [], end: [] };
      entry.start.push(r.start);
      entry.end.push(r.end);
      byPath.set(key, entry);
    }
  }
  return [...byPath.entries()]
    .map(([path, { start, end }]) => ({ path, start: median(start), end: median(end) }))
    .sort((a, b) => a.start - b.start)
    .map((r) => `${r.path} ${ms(r.start)}-${ms(r.end)}`)
    .join(', ');
}

// --- the run ---
const startedAt = new Date();
const loadBefore = load();
const built = await writeConsoleAssets(); // the API serves what this measures
const js = built.assets.filter((a) => a.name.endsWith('.js'));
const jsGzip = js.reduce((n, a) => n + a.gzipBytes, 0);
const { gzipSync } = await import('node:zlib');
const sizeRows: (string | number)[][] = [
  ...built.assets.map((a) => [`/console/assets/${a.name}`, kib(Buffer.byteLength(a.body)), kib(a.gzipBytes)]),
  [
    '/console/ (the page)',
    kib(Buffer.byteLength(built.index)),
    kib(gzipSync(Buffer.from(built.index), { level: 9 }).length),
  ],
  [
    `**JS total, against the ${BUDGET_KIB} KiB gzip budget**`,
    kib(js.reduce((n, a) => n + Buffer.byteLength(a.body), 0)),
    `**${kib(jsGzip)}** of ${BUDGET_KIB} (${Math.round((jsGzip / 1024 / BUDGET_KIB) * 100)}%): ${
      jsGzip / 1024 <= BUDGET_KIB ? 'within' : '**over**'
    }`,
  ],
];

console.log('## The admin console: size and time to interactive (`npm run bench:console`)');
const header = [`node ${process.version}`, startedAt.toISOString(), `load average at the start ${loadBefore}`];

const scenarios: Scenario[] = [];
for (const cpu of SLOW ? [1, SLOW_RATE] : [1])
  for (const visit of ['returning', 'first'] as const)
    for (const cache of ['warm', 'cold'] as const) scenarios.push({ visit, cache, cpu });
const samples = new Map<Scenario, Sample[]>(scenarios.map((s) => [s, []]));
let targetDescription = '';
let chromiumVersion = '';

try {
  if (!findChromium()) {
    console.log(`${header.join('; ')}\n`);
    console.log(markdownTable(['asset', 'raw KiB', 'gzip KiB (level 9)'], sizeRows));
    console.log('\nchromium is not installed (npm run setup installs it): no times measured');
    process.exit(0);
  }
  const target = await startTarget((line) => console.error(line));
  cleanups.push({ name: 'the database', run: () => target.stop() });
  targetDescription = target.description;
  const dbName = `bench_console_${Date.now()}`;
  const client = await new MongoClient(target.url).connect();
  cleanups.push({ name: 'the database client', run: () => client.close() });
  const db = client.db(dbName);
  // A shared MONGO_URL keeps nothing of ours; a private server goes away with its data.
  if (target.kind !== 'offline') cleanups.push({ name: 'the bench database', run: () => db.dropDatabase() });
  await ensureIndexes(db, apiIndexes);
  await seedApplications(db, APPLICATIONS);

  const key = () => btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
  const [api] = await startApiInstances(1, {
    MONGO_URL: target.url,
    MONGO_DB: dbName,
    JWT_KEYS: `c1:${key()}`,
    LEDGER_KEYS: `ledger:${key()}`,
    LOG_LEVEL: 'warn',
    ADMIN_EMAIL: BOSS.email,
    ADMIN_PASSWORD: BOSS.password,
    // Sign-ins are set-up here, not measured: cheap hashing, and no throttle the bench would trip.
    PASSWORD_ITERATIONS: '1000',
    LOGIN_ATTEMPTS_PER_ACCOUNT: '100000',
    LOGIN_ATTEMPTS_PER_ADDRESS: '100000',
    RATE_LIMIT_PER_MINUTE: '100000',
  });
  cleanups.push({ name: 'the API process', run: () => api!.stop() });
  const origin = api!.origin;

  // The page served is the build measured above.
  const served = await (await fetch(`${origin}/console/`)).text();
  for (const asset of built.assets)
    if (!served.includes(asset.name)) throw new Error(`/console/ does not load ${asset.name}: a stale build?`);

  // A returning admin: a reviewer, made by the first admin through POST /api/admins.
  const post = async (path: string, body: unknown, token?: string) => {
    const res = await fetch(`${origin}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${await res.text()}`);
    return res.json() as Promise<Record<string, unknown>>;
  };
  const boss = (await post('/api/auth/login', BOSS)).accessToken as string;
  await post('/api/admins', { ...ADMIN, roles: ['reviewer'] }, boss);

  const browser = await launchChromium();
  cleanups.push({ name: 'the browser', run: () => browser.close() });
  chromiumVersion = browser.version();

  // Warm-up, not counted: the API's and the browser's first requests.
  for (const visit of ['returning', 'first'] as const) await sample(browser, origin, { visit, cache: 'warm', cpu: 1 });

  for (let run = 0; run < RUNS; run++) {
    for (const scenario of scenarios) samples.get(scenario)!.push(await sample(browser, origin, scenario));
    process.stderr.write(`run ${run + 1} of ${RUNS}\n`);
  }
} finally {
  await cleanup();
}

const loadAfter = load();
header.push(`chromium ${chromiumVersion}`, `database: ${targetDescription}`, `${APPLICATIONS} applications`);
console.log(`${header.join('; ')}\n`);
console.log(markdownTable(['asset', 'raw KiB', 'gzip KiB (level 9)'], sizeRows));
console.log('');

const screen = (visit: Visit) =>
  visit === 'returning' ? 'work queue (returning admin, signed in)' : 'sign-in form (signed out)';
console.log(
  markdownTable(
    [
      'first screen',
      'cache',
      'CPU',
      'loads',
      'HTML response end, ms',
      'DOMContentLoaded, ms',
      'ready to act, ms (first row + search enabled / sign-in form enabled, painted)',
    ],
    scenarios.map((scenario) => {
      const list = samples.get(scenario)!;
      return [
        screen(scenario.visit),
        scenario.cache === 'warm'
          ? 'warm (assets cached by an earlier visit)'
          : `cold (cache disabled${scenario.visit === 'first' ? ': a first visit' : ''})`,
        scenario.cpu === 1 ? '1x' : `${scenario.cpu}x slower`,
        list.length,
        cell(list.map((s) => s.responseEnd)),
        cell(list.map((s) => s.domContentLoaded)),
        cell(list.map((s) => s.ready)),
      ];
    }),
  ),
);
console.log("\nEach time cell: median / p90 (min-max), ms from the start of the navigation, on the page's clock.");
for (const scenario of scenarios) {
  const list = samples.get(scenario)!;
  if (list.length === 0) continue;
  const gap = median(list.map((s) => s.ready - s.inDom));
  const transfer = median(list.map((s) => s.resources.reduce((n, r) => n + r.transfer, 0)));
  console.log(
    `- ${screen(scenario.visit)}, ${scenario.cache}, CPU ${scenario.cpu}x: requests (median start-end ms) ` +
      `${waterfall(list)}; in the DOM to painted ${ms(gap)} ms; ${kib(transfer)} KiB transferred besides the page`,
  );
}
console.log(`\nload average at the start ${loadBefore}, at the end ${loadAfter}`);
console.log(`rerun: ${rerun}`);
