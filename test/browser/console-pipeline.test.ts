// From upload to payment in the console, with the OCR and approval workers running for real: a reviewer
// creates an application and uploads the loan form, the OCR worker reads it and the approval worker
// recommends, an approver approves, a disburser pays, the ledger shows the entry and its verification
// passes. Every screen on the way is checked with axe-core (WCAG 2.2 AA), also on a narrow screen and at
// 200% zoom, and kept as a screenshot under test-results/browser/. Skipped by name without chromium.
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { axeViolations, findChromium } from '../../scripts/browser.ts';
import { seedApplications } from '../../scripts/seed.ts';
import { formPng, sampleForm } from '../fixtures/documents.ts';
import { BOSS, type ConsoleHarness, startConsole } from '../support/console.ts';

const have = findChromium() !== null;
const skipped = have ? '' : ' (skipped: chromium is not installed; run `npm run setup`)';
let h: ConsoleHarness;

beforeAll(async () => {
  if (!have) return;
  h = await startConsole(import.meta.filename, { workers: true });
}, 120_000);
afterAll(async () => {
  await h?.close();
});

const accessible = async (page: Page, what: string) => {
  const violations = await axeViolations(page);
  expect(
    violations.map((v) => `${what}: ${v.id} (${v.help}) at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`),
  ).toEqual([]);
};
/** Nothing wider than the window: no sideways scrolling on a narrow screen or at 200% zoom. */
const fits = async (page: Page, what: string) => {
  const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  const wide = await page.evaluate(() =>
    Array.from(document.querySelectorAll('main *'))
      .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1)
      .slice(0, 5)
      .map((el) => `${el.tagName.toLowerCase()}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`),
  );
  expect(scroll, `${what}: ${scroll} px of content in a ${width} px window (${wide.join(', ')})`).toBeLessThanOrEqual(
    width,
  );
};

describe.skipIf(!have)(`from upload to payment in the console${skipped}`, () => {
  let applicationId = '';

  it('a reviewer, an approver and a disburser take one application from upload to payment; the ledger verifies', async () => {
    const reviewer = await h.admin('Rosa Reviewer', ['reviewer']);
    const approver = await h.admin('Alan Approver', ['approver']);
    const disburser = await h.admin('Dina Disburser', ['disburser']);

    // The reviewer creates it (c), uploads the form, starts the review.
    const r = await h.open(reviewer.email);
    await r.keyboard.press('c');
    await r.getByRole('heading', { name: 'New application' }).waitFor();
    await accessible(r, 'new application');
    await r.getByLabel('Applicant name').fill(sampleForm.applicantName);
    await r.getByLabel('Monthly income').fill('4250');
    await r.getByLabel('Loan amount').fill('18500');
    await r.getByLabel('Term (months)').fill('60');
    await r.getByRole('button', { name: 'Create' }).click();
    await r.getByRole('heading', { name: 'Audit trail' }).waitFor();
    applicationId = new URL(r.url()).hash.split('/').at(-1)!;
    expect(applicationId).toMatch(/^APP-/);
    await r.getByLabel('Add a document (PNG, JPEG or PDF)').setInputFiles({
      name: 'loan-form.png',
      mimeType: 'image/png',
      buffer: Buffer.from(formPng()),
    });
    await r.getByRole('button', { name: 'Upload' }).click();
    await r.getByRole('img', { name: 'Document loan-form.png' }).waitFor();
    // The preview is the document itself, shown (not downloaded) by this origin.
    const preview = r.getByRole('img', { name: 'Document loan-form.png' });
    await vi.waitFor(
      async () => expect(await preview.evaluate((img: HTMLImageElement) => img.naturalWidth)).toBeGreaterThan(0),
      {
        timeout: 15_000,
      },
    );

    // The OCR worker reads the form: the page shows it live, with each field's confidence.
    const ocr = r.locator('table.ocr tbody tr');
    await vi.waitFor(async () => expect(await ocr.count()).toBe(4), { timeout: 90_000, interval: 200 });
    expect(await r.locator('table.ocr').textContent()).toContain(sampleForm.applicantName);
    expect(await r.locator('table.ocr').textContent()).toMatch(/\d+%/);
    // The approval worker scores what was read. A move is refused while evidence changes under it (the
    // decision is taken on what the admin saw), so the review starts once the score is on the page.
    await vi.waitFor(async () => expect(await r.locator('.recommendation').count()).toBe(1), {
      timeout: 60_000,
      interval: 200,
    });
    await r.getByRole('heading', { name: sampleForm.applicantName }).click(); // focus leaves the file field
    await r.keyboard.press('v'); // Start review
    await r.getByText(/^Moved to under review/).waitFor();
    await accessible(r, 'application with evidence');
    await h.screenshot(r, 'console-application');

    // The approver approves (a): above the worker's limit, the decision is theirs.
    const a = await h.open(approver.email);
    await a.goto(`${h.origin}/console/#/applications/${applicationId}`);
    await a.getByRole('button', { name: 'Approve' }).waitFor();
    await a.keyboard.press('a');
    await a.getByText(/^Moved to approved/).waitFor();

    // The disburser pays; the ledger shows the entry.
    const d = await h.open(disburser.email);
    await d.goto(`${h.origin}/console/#/applications/${applicationId}`);
    await d.getByRole('button', { name: /^Disburse 18,500/ }).click();
    await d.getByText(/^Disbursed 18,500/).waitFor();
    const entry = d.locator('table.ledger tbody tr');
    await entry.first().waitFor();
    expect(await entry.count()).toBe(1);
    expect(await entry.textContent()).toContain('18,500');
    await accessible(d, 'disbursed application with its ledger');

    // An admin verifies the ledger in Operations.
    const boss = await h.open(BOSS.email, { password: BOSS.password });
    await boss.keyboard.press('g');
    await boss.keyboard.press('o');
    await boss.getByRole('heading', { name: 'Operations' }).waitFor();
    await boss.getByRole('button', { name: 'Verify the ledger' }).click();
    await boss.getByText(/^The ledger verifies: 1 entries/).waitFor();
    await boss.locator('dd[data-stat="completed"]').waitFor();
    await accessible(boss, 'operations');
    await h.screenshot(boss, 'console-operations');
    await Promise.all([r, a, d, boss].map((page) => page.context().close()));
  }, 180_000);

  it('every main screen passes axe-core at WCAG 2.2 AA, also on a narrow screen and at 200% zoom; the queue marks what someone is editing', async () => {
    // A working day's queue, and someone editing one of its applications right now.
    await seedApplications(h.database.db, 60);
    const editor = await h.admin('Eve Editor', ['reviewer']);
    const newest = await h.call(editor.token, 'GET', '/api/applications?limit=3&sort=-updatedAt&status=pending');
    const edited: string = newest.body.items[2]._id;
    expect((await h.call(editor.token, 'PUT', `/api/applications/${edited}/presence`, { editing: true })).status).toBe(
      200,
    );
    const screens: [string, { width: number; height: number }][] = [
      ['desktop', { width: 1280, height: 800 }],
      ['narrow', { width: 390, height: 844 }],
      // 200% zoom of a 1280 x 800 window lays the page out in 640 x 400 CSS pixels.
      ['zoom-200', { width: 640, height: 400 }],
    ];
    for (const [name, viewport] of screens) {
      const page = await h.open(BOSS.email, { password: BOSS.password, viewport });
      await page.locator('table.queue tbody tr').first().waitFor();
      if (name === 'desktop') {
        await page.goto(`${h.origin}/console/#/queue?status=pending&sort=-updatedAt`);
        await page.locator(`tr[data-id="${edited}"] .editing`, { hasText: 'being edited by Eve Editor' }).waitFor();
      }
      await accessible(page, `${name} queue`);
      await fits(page, `${name} queue`);
      if (name === 'desktop') await h.screenshot(page, 'console-queue');
      await page.keyboard.press('?');
      await page.getByRole('dialog', { name: 'Keyboard shortcuts' }).waitFor();
      await accessible(page, `${name} shortcuts`);
      await page.keyboard.press('Escape');
      await page.goto(`${h.origin}/console/#/applications/${applicationId}`);
      await page.getByRole('heading', { name: 'Audit trail' }).waitFor();
      await accessible(page, `${name} application`);
      await fits(page, `${name} application`);
      await page.goto(`${h.origin}/console/#/admins`);
      await page.locator('table.admins tbody tr').first().waitFor();
      await accessible(page, `${name} admins`);
      if (name === 'desktop') await h.screenshot(page, 'console-admins');
      await page.context().close();
    }
    expect(h.problems).toEqual([]);
  }, 120_000);
});
