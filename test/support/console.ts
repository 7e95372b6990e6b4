// The admin console in a real browser: an API process (and, when asked, both workers) on a test
// database, Debian's chromium, and admins made through the API. Each page is watched: a request to any
// other origin, a CSP violation, an uncaught error or an unexpected failed request is recorded, and the
// tests expect none.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { type ApiInstance, startApiInstances } from '../../scripts/api-instances.ts';
import { launchChromium } from '../../scripts/browser.ts';
import { apiProcessEnv } from './app.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from './mongo.ts';
import { type NodeProcess, startNode } from './processes.ts';
import { type RemoteCall, remoteCaller } from './remote.ts';

export const BOSS = { email: 'boss@example.com', password: 'console boss password' };
export const PASSWORD = 'a long console password';
export const artifacts = join(import.meta.dirname, '..', '..', 'test-results', 'browser');

export interface ConsoleHarness {
  origin: string;
  api: ApiInstance;
  browser: Browser;
  database: TestDatabase;
  /** Problems seen on every watched page so far. */
  problems: string[];
  /** A JSON call with a Bearer token. */
  call: RemoteCall;
  login(email: string, password?: string): Promise<string>;
  /** A new admin with these roles: its email, id and a Bearer token. */
  admin(name: string, roles: string[]): Promise<{ email: string; id: string; token: string; name: string }>;
  /** An application filed by `preparer` and approved by `approver` through the API (under review first): its id. */
  approved(preparer: string, approver: string, application: Record<string, unknown>): Promise<string>;
  /** A new browser context signed in to the console as `email`, on the queue. */
  open(email: string, options?: { password?: string; viewport?: { width: number; height: number } }): Promise<Page>;
  screenshot(page: Page, name: string): Promise<void>;
  close(): Promise<void>;
}

export async function startConsole(
  file: string,
  options: { env?: Record<string, string>; workers?: boolean } = {},
): Promise<ConsoleHarness> {
  const database = await openTestDatabase(file);
  const [api] = await startApiInstances(
    1,
    apiProcessEnv(database.name, { ADMIN_EMAIL: BOSS.email, ADMIN_PASSWORD: BOSS.password, ...options.env }),
  );
  const workers: NodeProcess[] = [];
  if (options.workers) {
    const env = { MONGO_URL: mongoUrl(), MONGO_DB: database.name, HOST: '127.0.0.1', LOG_LEVEL: 'warn' };
    workers.push(startNode('workers/ocr/main.ts', { env: { ...env, QUEUE_LEASE_MS: '5000' } }));
    // It decides by itself only loans up to 10,000: larger ones wait for an approver.
    workers.push(
      startNode('workers/approval/main.ts', {
        env: { ...env, APPROVAL_AUTO_DECIDE: 'true', APPROVAL_AUTO_APPROVE_MAX_AMOUNT: '10000' },
      }),
    );
  }
  const browser = await launchChromium();
  const origin = api!.origin;
  const problems: string[] = [];

  const call = remoteCaller(() => origin);
  const login = async (email: string, password = PASSWORD) => {
    const res = await call(null, 'POST', '/api/auth/login', { email, password });
    if (res.status !== 200) throw new Error(`login ${email}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body.accessToken as string;
  };
  let boss: string | undefined;
  const admin = async (name: string, roles: string[]) => {
    boss ??= await login(BOSS.email, BOSS.password);
    const email = `${name.toLowerCase().replace(/\W+/g, '-')}-${crypto.randomUUID().slice(0, 8)}@example.com`;
    const made = await call(boss, 'POST', '/api/admins', { email, name, password: PASSWORD, roles });
    if (made.status !== 201) throw new Error(`admin ${name}: ${made.status} ${JSON.stringify(made.body)}`);
    return { email, id: made.body.id as string, token: await login(email), name };
  };

  const watch = (page: Page) => {
    let signedIn = false;
    page.on('request', (request) => {
      if (!request.url().startsWith(`${origin}/`) && !request.url().startsWith('data:')) {
        problems.push(`other origin: ${request.url()}`);
      }
    });
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      if (message.text().includes('Content Security Policy')) problems.push(`CSP: ${message.text()}`);
    });
    page.on('response', (response) => {
      const path = new URL(response.url()).pathname;
      // Before sign-in the page asks whether it already has a session: 401 is the expected "no".
      if (!signedIn && response.status() === 401 && path.startsWith('/api/console/session')) return;
      if (path === '/api/console/session' && response.request().method() === 'POST' && response.ok()) signedIn = true;
      if (response.status() >= 500) problems.push(`${response.status()} ${response.request().method()} ${path}`);
    });
  };

  const approved: ConsoleHarness['approved'] = async (preparer, approver, application) => {
    const made = await call(preparer, 'POST', '/api/applications', application);
    if (made.status !== 201) throw new Error(`new application: ${made.status} ${JSON.stringify(made.body)}`);
    const id = made.body._id as string;
    for (const [token, status] of [
      [preparer, 'under_review'],
      [approver, 'approved'],
    ] as const) {
      const current = await call(token, 'GET', `/api/applications/${id}`);
      const moved = await call(
        token,
        'PATCH',
        `/api/applications/${id}`,
        { baseVersion: current.body.version, status },
        { 'content-type': 'application/merge-patch+json' },
      );
      if (moved.status !== 200) throw new Error(`${status}: ${moved.status} ${JSON.stringify(moved.body)}`);
    }
    return id;
  };

  const open: ConsoleHarness['open'] = async (email, { password = PASSWORD, viewport } = {}) => {
    const context = await browser.newContext({ viewport: viewport ?? { width: 1280, height: 800 } });
    const page = await context.newPage();
    watch(page);
    await page.goto(`${origin}/console/`);
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Work queue' }).waitFor();
    return page;
  };

  return {
    origin,
    api: api!,
    browser,
    database,
    problems,
    call,
    login,
    admin,
    approved,
    open,
    async screenshot(page, name) {
      mkdirSync(artifacts, { recursive: true });
      await page.screenshot({ path: join(artifacts, `${name}.png`) });
    },
    async close() {
      await browser.close();
      await api?.stop();
      await Promise.all(workers.map((worker) => worker.stop()));
      await database.close();
    },
  };
}
