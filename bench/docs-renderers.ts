// The docs page (/docs) side by side with the maintained renderers: Swagger UI (swagger-ui-dist), Redoc
// (redoc's standalone bundle) and Scalar (@scalar/api-reference's standalone bundle), each rendering this
// API's real /openapi.json in Debian's chromium (scripts/browser.ts), from a tiny local server per page.
// Per page: the bytes of the page, its JS and CSS (raw, gzip); the time until every operation is in the DOM
// (median of BENCH_LOADS cold loads); axe-core's WCAG 2.2 A/AA violations; the Content-Security-Policy it
// needs to run with no violation, found by starting from a strict one and adding only what the browser
// reported blocked; the requests it makes to other origins (refused here: the product runs offline); and
// the Workers bundle with its files embedded, against test/runtimes/bundle.test.ts's bounds.
//
// The renderers are not dependencies of this project: install them in a scratch directory and name it:
//   mkdir -p /tmp/renderers && cd /tmp/renderers && npm init -y && npm i swagger-ui-dist redoc @scalar/api-reference
//   DOCS_RENDERERS_DIR=/tmp/renderers npm run bench:docs-renderers
// A renderer missing there is skipped by name. BENCH_LOADS (5), BENCH_SKIP_BUNDLE=1 skips the Workers build.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import { MongoClient } from 'mongodb';
import type { Browser, Page } from 'playwright-core';
import { createApp } from '../api/app.ts';
import { docsRoutes } from '../api/docs.ts';
import { createLogger } from '../api/log.ts';
import { createServices } from '../api/services.ts';
import { axeViolations, findChromium, launchChromium } from '../scripts/browser.ts';
import { apiConfigSchema, loadConfig } from '../shared/core/config.ts';
import { markdownTable, round, startBenchServer } from './support.ts';

const LOADS = Number(process.env.BENCH_LOADS ?? 5);
const RENDER_TIMEOUT_MS = 30_000;
const rendererDir = process.env.DOCS_RENDERERS_DIR;
const rerun = 'DOCS_RENDERERS_DIR=/tmp/renderers npm run bench:docs-renderers';

/** The policy every page starts from: its own files only, no inline script or style, no eval. */
const STRICT: Record<string, string[]> = {
  'default-src': ["'none'"],
  'script-src': ["'self'"],
  'style-src': ["'self'"],
  'connect-src': ["'self'"],
  'img-src': ["'self'", 'data:'],
  'font-src': ["'self'"],
  'worker-src': ["'self'"],
  'base-uri': ["'none'"],
  'form-action': ["'none'"],
  'frame-ancestors': ["'none'"],
};
const policyText = (policy: Record<string, string[]>) =>
  Object.entries(policy)
    .map(([directive, sources]) => `${directive} ${sources.join(' ')}`)
    .join('; ');

interface Asset {
  path: string;
  type: string;
  body: Uint8Array;
}

interface Candidate {
  name: string;
  /** A selector matching one element per rendered operation. */
  operations: string;
  /** What that selector counts, for the reader of the table. */
  counted: string;
  /** Clicked before the accessibility check, as a reader opens an operation (when the page folds them). */
  open?: string;
  /** The files the page needs; for a renderer, what would be embedded in the bundle. */
  assets: Asset[];
  /** Serves /docs and its files (not /openapi.json). */
  app: Hono;
}

const js = 'text/javascript; charset=utf-8';
const css = 'text/css; charset=utf-8';

function pageHtml(head: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API documentation</title>
<link rel="icon" href="data:,">
${head}
</head>
<body>
${body}
</body>
</html>`;
}

/** A renderer page: its package's files under /docs/, an init file of our own (no inline script). */
function rendererApp(head: string, body: string, assets: Asset[]): Hono {
  const app = new Hono();
  const html = pageHtml(head, body);
  app.get('/docs', (c) => c.html(html));
  for (const asset of assets)
    app.get(asset.path, (c) => c.body(asset.body as Uint8Array<ArrayBuffer>, 200, { 'content-type': asset.type }));
  return app;
}

function packageDir(name: string): string | null {
  if (!rendererDir) return null;
  const dir = join(rendererDir, 'node_modules', name);
  return existsSync(join(dir, 'package.json')) ? dir : null;
}

const version = (dir: string) =>
  (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
const file = (path: string, type: string, dir: string, name: string): Asset => ({
  path,
  type,
  body: readFileSync(join(dir, name)),
});
const text = (path: string, type: string, body: string): Asset => ({
  path,
  type,
  body: new TextEncoder().encode(body),
});

type Loaded = Candidate | { name: string; skipped: string };

function handMade(): Loaded {
  const app = new Hono();
  docsRoutes(app as never);
  return {
    name: 'hand-made (api/docs.ts)',
    operations: 'details',
    counted: 'every operation, folded, its whole description in the DOM',
    open: 'details summary',
    assets: [],
    app,
  };
}

function missing(name: string, pkg: string): Loaded {
  const where = rendererDir ? `${rendererDir}/node_modules` : 'DOCS_RENDERERS_DIR (not set)';
  return { name, skipped: `${pkg} not found in ${where}; install it there: npm i ${pkg}` };
}

function swaggerUi(): Loaded {
  const dir = packageDir('swagger-ui-dist');
  if (!dir) return missing('Swagger UI', 'swagger-ui-dist');
  const assets = [
    file('/docs/swagger-ui.css', css, dir, 'swagger-ui.css'),
    file('/docs/swagger-ui-bundle.js', js, dir, 'swagger-ui-bundle.js'),
    // No validator badge (it would ask validator.swagger.io), no deep links.
    text(
      '/docs/init.js',
      js,
      "window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui', validatorUrl: null });\n",
    ),
  ];
  const app = rendererApp(
    '<link rel="stylesheet" href="/docs/swagger-ui.css">',
    '<div id="swagger-ui"></div>\n<script src="/docs/swagger-ui-bundle.js"></script>\n<script src="/docs/init.js"></script>',
    assets,
  );
  return {
    name: `Swagger UI ${version(dir)} (swagger-ui-dist)`,
    operations: '.opblock',
    counted: 'every operation, folded; its description is built when opened',
    open: '.opblock-summary-control',
    assets,
    app,
  };
}

function redoc(): Loaded {
  const dir = packageDir('redoc');
  if (!dir) return missing('Redoc', 'redoc');
  const assets = [
    file('/docs/redoc.standalone.js', js, join(dir, 'bundles'), 'redoc.standalone.js'),
    text('/docs/init.js', js, "Redoc.init('/openapi.json', {}, document.getElementById('redoc'));\n"),
  ];
  const app = rendererApp(
    '',
    '<div id="redoc"></div>\n<script src="/docs/redoc.standalone.js"></script>\n<script src="/docs/init.js"></script>',
    assets,
  );
  return {
    name: `Redoc ${version(dir)} (redoc, standalone)`,
    // Every operation's section, in full (Redoc renders them all at once).
    operations: '[data-section-id*="/paths/"]',
    counted: 'every operation, in full',
    assets,
    app,
  };
}

function scalar(): Loaded {
  const dir = packageDir('@scalar/api-reference');
  if (!dir) return missing('Scalar', '@scalar/api-reference');
  const assets = [
    file('/docs/standalone.js', js, join(dir, 'dist', 'browser'), 'standalone.js'),
    // Offline as far as its options go: its fonts come from fonts.scalar.com and its agent asks
    // api.scalar.com (through proxy.scalar.com) unless told otherwise; no telemetry.
    text(
      '/docs/init.js',
      js,
      "Scalar.createApiReference('#app', { url: '/openapi.json', withDefaultFonts: false, telemetry: false, agent: { disabled: true }, defaultOpenAllTags: true });\n",
    ),
  ];
  const app = rendererApp(
    '',
    '<div id="app"></div>\n<script src="/docs/standalone.js"></script>\n<script src="/docs/init.js"></script>',
    assets,
  );
  return {
    name: `Scalar ${version(dir)} (@scalar/api-reference, standalone)`,
    // Its sidebar lists every operation (with every tag open; by default only the first tag's are listed).
    operations: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']
      .map((method) => `aside.t-doc__sidebar li[data-sidebar-id*="/${method}/"]`)
      .join(', '),
    counted: 'every operation listed in the sidebar (defaultOpenAllTags)',
    assets,
    app,
  };
}

/** This API's real spec: the app on a private offline database, asked for /openapi.json. */
async function realSpec(): Promise<string> {
  const server = await startBenchServer();
  const client = new MongoClient(server.url);
  try {
    const key = () => btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
    const config = loadConfig(
      { MONGO_URL: server.url, JWT_KEYS: `b1:${key()}`, LEDGER_KEYS: `ledger:${key()}`, LOG_LEVEL: 'silent' },
      apiConfigSchema,
    );
    const services = await createServices(client.db(`bench_docs_${Date.now()}`), config, createLogger('silent'));
    const res = await createApp(services).request('/openapi.json');
    if (!res.ok) throw new Error(`/openapi.json: HTTP ${res.status}`);
    return await res.text();
  } finally {
    await client.close();
    await server.stop();
  }
}

/** Serves one candidate with the policy of the moment (replacing any the page sets itself). */
async function serveCandidate(candidate: Candidate, spec: string) {
  const state = { policy: policyText(STRICT) };
  const app = new Hono();
  app.get('/openapi.json', (c) => c.body(spec, 200, { 'content-type': 'application/json' }));
  app.route('/', candidate.app);
  const listener = getRequestListener(async (request) => {
    const res = await app.fetch(request);
    const headers = new Headers(res.headers);
    headers.set('content-security-policy', state.policy);
    headers.set('cache-control', 'no-store');
    return new Response(res.body, { status: res.status, headers });
  });
  const server: Server = createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { origin, state, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

interface Violation {
  directive: string;
  blocked: string;
}

interface LoadResult {
  renderedMs: number | null;
  rendered: number;
  violations: Violation[];
  otherOrigins: string[];
  consoleErrors: string[];
  bytes: { url: string; raw: number; gzip: number }[];
  page: Page;
}

/**
 * One cold load in a fresh context: watches the DOM from before the page's first script for the moment
 * `selector` matches `expected` elements, and records CSP violations as the page sees them.
 */
async function load(browser: Browser, origin: string, selector: string, expected: number): Promise<LoadResult> {
  const context = await browser.newContext();
  const page = await context.newPage();
  const otherOrigins: string[] = [];
  const consoleErrors: string[] = [];
  const responses: Promise<{ url: string; raw: number; gzip: number } | null>[] = [];
  // Nothing leaves this machine: any other origin is refused, and noted.
  await context.route(
    (url) => url.origin !== origin,
    (route) => {
      otherOrigins.push(route.request().url());
      return route.abort();
    },
  );
  page.on('console', (message) => {
    if (message.type() === 'error' && !/Content.Security.Policy/i.test(message.text()))
      consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => consoleErrors.push(error.message));
  page.on('response', (response) => {
    const kind = response.request().resourceType();
    if (!['document', 'script', 'stylesheet', 'font'].includes(kind) || !response.url().startsWith(origin)) return;
    responses.push(
      response
        .body()
        .then((body) => ({ url: response.url().slice(origin.length), raw: body.length, gzip: gzipSync(body).length }))
        .catch(() => null),
    );
  });
  await page.addInitScript(
    ([selector, expected]) => {
      const w = window as unknown as { __rendered?: number; __count?: number; __violations: unknown[] };
      w.__violations = [];
      document.addEventListener('securitypolicyviolation', (event) =>
        w.__violations.push({ directive: event.effectiveDirective, blocked: event.blockedURI }),
      );
      const check = () => {
        if (w.__rendered !== undefined) return;
        const count = document.querySelectorAll(selector).length;
        w.__count = count;
        if (count >= expected) {
          w.__rendered = performance.now();
          observer.disconnect();
        }
      };
      const observer = new MutationObserver(check);
      observer.observe(document, { childList: true, subtree: true });
    },
    [selector, expected] as const,
  );
  await page.goto(`${origin}/docs`);
  let renderedMs: number | null = null;
  try {
    renderedMs = (await (
      await page.waitForFunction(() => (window as unknown as { __rendered?: number }).__rendered, undefined, {
        timeout: RENDER_TIMEOUT_MS,
        polling: 50,
      })
    ).jsonValue()) as number;
  } catch {}
  // Late violations (a font, a worker) arrive after the operations: give them a moment.
  await page.waitForTimeout(500);
  const seen = await page.evaluate(() => {
    const w = window as unknown as { __count?: number; __violations: Violation[] };
    return { count: w.__count ?? 0, violations: w.__violations };
  });
  const bytes = (await Promise.all(responses)).filter((r) => r !== null);
  return {
    renderedMs,
    rendered: seen.count,
    violations: seen.violations,
    otherOrigins,
    consoleErrors,
    bytes,
    page,
  };
}

const closePage = (page: Page) => page.context().close();

/** What to add to a policy for a violation: null when it is another origin (never allowed here). */
function allowance(violation: Violation, origin: string): { directive: string; source: string } | null {
  const keywords: Record<string, string> = {
    inline: "'unsafe-inline'",
    eval: "'unsafe-eval'",
    'wasm-eval': "'wasm-unsafe-eval'",
    data: 'data:',
    blob: 'blob:',
  };
  const source =
    keywords[violation.blocked] ??
    (violation.blocked.startsWith('data:')
      ? 'data:'
      : violation.blocked.startsWith('blob:')
        ? 'blob:'
        : violation.blocked.startsWith(origin)
          ? "'self'"
          : null);
  return source ? { directive: violation.directive, source } : null;
}

function addTo(policy: Record<string, string[]>, directive: string, source: string): boolean {
  // A -elem/-attr directive not yet in the policy starts from what its base directive allows.
  const base = directive.replace(/-(elem|attr)$/, '');
  const sources = policy[directive] ?? [...(policy[base] ?? policy['default-src'] ?? [])];
  if (sources.includes(source)) return false;
  policy[directive] = [...sources.filter((s) => s !== "'none'"), source];
  return true;
}

const kib = (bytes: number) => round(bytes / 1024, 1);
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** The current Workers bundle (wrangler's dry run, as test/runtimes/bundle.test.ts builds it), or why not. */
async function workersBundle(): Promise<Buffer | string> {
  if (process.env.BENCH_SKIP_BUNDLE === '1') return 'BENCH_SKIP_BUNDLE=1';
  const outdir = mkdtempSync(join(tmpdir(), 'docs-bench-bundle-'));
  try {
    const wrangler = join(import.meta.dirname, '..', 'node_modules', '.bin', 'wrangler');
    await new Promise<void>((resolve, reject) =>
      execFile(
        wrangler,
        ['deploy', '--dry-run', '--outdir', outdir],
        { env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: 'true' }, timeout: 180_000 },
        (error, stdout, stderr) => (error ? reject(new Error(`${error.message}\n${stdout}\n${stderr}`)) : resolve()),
      ),
    );
    return readFileSync(join(outdir, 'cloudflare.js'));
  } catch (error) {
    return `wrangler failed: ${(error as Error).message.split('\n')[0]}`;
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

// --- the run ---
if (!findChromium()) {
  console.log('chromium is not installed (npm run setup installs it): nothing measured');
  process.exit(0);
}
const spec = await realSpec();
const paths = (JSON.parse(spec) as { paths: Record<string, Record<string, unknown>> }).paths;
const methods = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']);
const expected = Object.values(paths).reduce(
  (n, item) => n + Object.keys(item).filter((k) => methods.has(k)).length,
  0,
);
const bundlePromise = workersBundle();
const candidates = [handMade(), swaggerUi(), redoc(), scalar()];
const browser = await launchChromium();
const rows: (string | number)[][] = [];
const notes: string[] = [];
const bundle = await bundlePromise;

console.log('## Docs page: the hand-made page against Swagger UI, Redoc and Scalar (`npm run bench:docs-renderers`)');
console.log(
  `node ${process.version}; chromium ${browser.version()}; ${new Date().toISOString()}; ` +
    `/openapi.json ${kib(spec.length)} KiB, ${expected} operations; ${LOADS} cold loads each; ` +
    `load average ${loadavg()
      .map((n) => n.toFixed(1))
      .join(' ')}`,
);
console.log(`rerun: ${rerun}\n`);

for (const candidate of candidates) {
  if ('skipped' in candidate) {
    console.log(`skipped: ${candidate.name}: ${candidate.skipped}`);
    continue;
  }
  const served = await serveCandidate(candidate, spec);
  try {
    // The policy it needs: start strict, add only what the browser reported blocked, until nothing is.
    const policy = structuredClone(STRICT);
    const added: string[] = [];
    const otherOrigins = new Set<string>();
    let first: LoadResult | undefined;
    for (let round = 0; round < 6; round++) {
      served.state.policy = policyText(policy);
      const result = await load(browser, served.origin, candidate.operations, expected);
      for (const url of result.otherOrigins) otherOrigins.add(url);
      for (const v of result.violations) {
        const allow = allowance(v, served.origin);
        if (!allow) otherOrigins.add(v.blocked);
        else if (addTo(policy, allow.directive, allow.source)) added.push(`${allow.directive} ${allow.source}`);
      }
      first ??= result;
      await closePage(result.page);
      if (!result.violations.some((v) => allowance(v, served.origin))) break;
    }
    served.state.policy = policyText(policy);
    const times: number[] = [];
    let last: LoadResult | undefined;
    for (let i = 0; i < LOADS; i++) {
      if (last) await closePage(last.page);
      last = await load(browser, served.origin, candidate.operations, expected);
      for (const url of last.otherOrigins) otherOrigins.add(url);
      if (last.renderedMs !== null) times.push(last.renderedMs);
    }
    const page = last!.page;
    // The accessibility check sees the page settled (a renderer may still be filling in after its list).
    await page.waitForLoadState('networkidle');
    await page.waitForTimeout(2000);
    if (candidate.open) await page.locator(candidate.open).first().click();
    const violations = await axeViolations(page);
    await closePage(page);

    const bytes = last!.bytes;
    const raw = bytes.reduce((n, b) => n + b.raw, 0);
    const gzip = bytes.reduce((n, b) => n + b.gzip, 0);
    let fits = 'already in it';
    if (candidate.assets.length > 0) {
      if (typeof bundle === 'string') fits = `not measured (${bundle})`;
      else {
        // Embedded as string literals in the one bundle.
        const embedded = Buffer.concat([
          bundle,
          ...candidate.assets.map((a) => Buffer.from(JSON.stringify(new TextDecoder().decode(a.body)))),
        ]);
        const ok = embedded.length < 4.5 * 1024 * 1024 && gzipSync(embedded).length < 1024 * 1024;
        fits = `${ok ? 'yes' : '**no**'}: ${kib(embedded.length).toFixed(0)} KiB, ${kib(gzipSync(embedded).length).toFixed(0)} KiB gzip`;
      }
    }
    const axe = violations.length
      ? violations.map((v) => `${v.id} (${v.impact}, ${v.nodes.length} el.)`).join(', ')
      : 'none';
    const rendered =
      times.length === LOADS
        ? `${Math.round(median(times))} (${Math.round(Math.min(...times))}-${Math.round(Math.max(...times))})`
        : `not all rendered in ${RENDER_TIMEOUT_MS / 1000} s (${last!.rendered} of ${expected})`;
    const csp = added.length ? added.join('; ') : "none: script-src 'self'; style-src 'self' suffice";
    const others = otherOrigins.size
      ? [...new Set([...otherOrigins].map((u) => new URL(u).origin))].join(', ')
      : 'none';
    rows.push([
      candidate.name,
      `${kib(raw)} / ${kib(gzip)}`,
      rendered,
      `${violations.length}: ${axe}`,
      csp,
      others,
      last!.consoleErrors.length ? `${last!.consoleErrors.length}` : '0',
      fits,
    ]);
    notes.push(
      `${candidate.name}: counted ${candidate.counted}; files ${bytes.map((b) => `${b.url} ${kib(b.raw)} KiB`).join(', ')}; ` +
        `under the strict policy: ${first!.rendered} of ${expected} operations, violations ${
          [...new Set(first!.violations.map((v) => `${v.directive} ${v.blocked}`))].join(', ') || 'none'
        }${otherOrigins.size ? `; other-origin URLs: ${[...otherOrigins].join(', ')}` : ''}${
          last!.consoleErrors.length ? `; console errors: ${last!.consoleErrors.slice(0, 3).join(' | ')}` : ''
        }`,
    );
  } finally {
    await served.close();
  }
}
await browser.close();

console.log(
  markdownTable(
    [
      'page',
      'page + JS + CSS KiB (raw / gzip)',
      'all operations rendered, ms: median (min-max)',
      'axe WCAG 2.2 A/AA violations',
      'CSP beyond a strict one, to run with no violation',
      'requests to other origins',
      'console errors',
      'Workers bundle with it embedded (bound 4,608 KiB, 1,024 KiB gzip)',
    ],
    rows,
  ),
);
console.log('');
if (typeof bundle !== 'string')
  console.log(
    `Workers bundle today: ${kib(bundle.length).toFixed(0)} KiB, ${kib(gzipSync(bundle).length).toFixed(0)} KiB gzip.`,
  );
console.log(`Strict policy: ${policyText(STRICT)}.`);
for (const note of notes) console.log(`- ${note}`);
console.log(`\nrerun: ${rerun}`);
