// /docs in a real browser (Debian's chromium through playwright-core): it renders every operation of
// /openapi.json, asks nothing of any other origin, breaks no rule of its strict CSP (script-src and
// style-src 'self'), needs no font the machine may lack, and axe-core finds no WCAG 2.2 A or AA
// violation (also on a phone's width with every operation open). Skipped by name without chromium
// (`npm run setup` installs it). A screenshot is kept under test-results/.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ApiInstance, startApiInstances } from '../../scripts/api-instances.ts';
import { axeViolations, findChromium, launchChromium } from '../../scripts/browser.ts';
import { apiProcessEnv } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const have = findChromium() !== null;
const artifacts = join(import.meta.dirname, '..', '..', 'test-results', 'browser');
let database: TestDatabase;
let api: ApiInstance | undefined;
let browser: Browser | undefined;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  if (!have) return;
  [api] = await startApiInstances(1, apiProcessEnv(database.name));
  browser = await launchChromium();
}, 60_000);
afterAll(async () => {
  await browser?.close();
  await api?.stop();
  await database?.close();
});

it.skipIf(!have)(
  `renders every operation from this origin only, within its CSP, and passes axe-core at WCAG 2.2 AA${have ? '' : ' (skipped: chromium is not installed; run `npm run setup`)'}`,
  async () => {
    const spec = (await (await fetch(`${api!.origin}/openapi.json`)).json()) as { paths: Record<string, object> };
    const operations = Object.values(spec.paths).reduce((n, methods) => n + Object.keys(methods).length, 0);
    const page = await browser!.newPage();
    const requests: string[] = [];
    const problems: string[] = [];
    page.on('request', (request) => requests.push(request.url()));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(error.message));
    page.on('response', (response) => {
      if (response.status() >= 400) problems.push(`${response.status()} ${response.url()}`);
    });
    const response = await page.goto(`${api!.origin}/docs`);
    // Under the strict policy: this origin's files only, no inline script or style (a refusal is a console error).
    expect(response?.headers()['content-security-policy']).toMatch(/script-src 'self'; style-src 'self'/);
    await page
      .locator('details')
      .nth(operations - 1)
      .waitFor();
    expect(await page.locator('details').count()).toBe(operations);
    expect(requests.filter((url) => !url.startsWith(`${api!.origin}/`))).toEqual([]);
    expect(problems).toEqual([]);
    // Nothing that needs a font beyond the basic planes (an emoji shows as a box on a machine without one).
    const text = (await page.evaluate(() => document.body.textContent)) ?? '';
    expect([...text].filter((char) => char.codePointAt(0)! > 0xffff)).toEqual([]);
    // Open one operation, as a reader would, before the accessibility check.
    await page.locator('details summary').first().click();
    expect(await axeViolations(page)).toEqual([]);
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, 'docs.png'), fullPage: false });
    // On a phone's width with every operation open: long schemas wrap (a scrolling block would need a
    // keyboard stop of its own: axe's scrollable-region-focusable).
    await page.setViewportSize({ width: 360, height: 800 });
    await page.evaluate(() =>
      document.querySelectorAll('details').forEach((node) => {
        node.open = true;
      }),
    );
    expect(await axeViolations(page)).toEqual([]);
    await page.close();
  },
  60_000,
);
