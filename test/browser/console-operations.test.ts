// The Operations screen in the console, as an admin uses it: a dead-lettered job shows with its last
// error and is retried with its button (the job is waiting again, retried once, and gone from the list);
// the ledger verifies, and once an entry is altered in the database the verification names the first
// broken link. The dead letter is made by a real queue Worker whose handler throws. Skipped by name
// without chromium.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findChromium } from '../../scripts/browser.ts';
import { type JobDocument, Queue, Worker } from '../../shared/concurrency/queue/index.ts';
import { ServerClock } from '../../shared/core/clock.ts';
import { LEDGER_COLLECTION } from '../../shared/loans/ledger.ts';
import { type ConsoleHarness, startConsole } from '../support/console.ts';
import { waitForValue } from '../support/wait.ts';

const have = findChromium() !== null;
const skipped = have ? '' : ' (skipped: chromium is not installed; run `npm run setup`)';
const JOB = 'test.console-dead';

let h: ConsoleHarness;
const db = () => h.database.db;
beforeAll(async () => {
  if (have) h = await startConsole(import.meta.filename);
}, 120_000);
afterAll(async () => {
  await h?.close();
});

describe.skipIf(!have)(`the Operations screen${skipped}`, () => {
  it('shows a dead letter with its error and retries it with its button', async () => {
    const clock = new ServerClock(db());
    await clock.sync();
    await new Queue(db(), { clock }).add(JOB, { note: 'browser' }, { jobId: 'console-dead-1', attempts: 1 });
    const worker = new Worker(
      db(),
      JOB,
      async () => {
        throw new Error('the scanner is out of toner');
      },
      { pollMs: 50, clock },
    );
    await worker.run();
    const jobs = db().collection<JobDocument>('jobs');
    await waitForValue(
      () => jobs.findOne({ _id: 'console-dead-1' }),
      (job) => job?.state === 'failed',
      { what: 'the job dead-lettered' },
    );
    await worker.close(1_000);

    const ops = await h.admin('Olga Operator', ['admin']);
    const page = await h.open(ops.email);
    await page.goto(`${h.origin}/console/#/operations`);
    const letter = page.locator('ul.dead li', { hasText: 'console-dead-1' });
    await letter.waitFor();
    expect(await letter.locator('pre').textContent()).toBe('the scanner is out of toner');
    expect(await letter.textContent()).toContain('after 1 of 1 attempts');
    await h.screenshot(page, 'operations-dead-letter');
    await letter.getByRole('button', { name: `Retry ${JOB}` }).click();
    await page.getByText(`${JOB} console-dead-1 is waiting again.`).waitFor();
    await letter.waitFor({ state: 'detached' });
    expect(await jobs.findOne({ _id: 'console-dead-1' })).toMatchObject({ state: 'waiting', retries: 1 });
    await page.context().close();
  }, 90_000);

  it('verifies the ledger, then names the first broken link once an entry is altered', async () => {
    const preparer = await h.admin('Pia Preparer', ['reviewer']);
    const approver = await h.admin('Al Approver', ['approver']);
    const disburser = await h.admin('Di Disburser', ['disburser']);
    const id = await h.approved(preparer.token, approver.token, {
      applicantName: 'Ledger Checked',
      monthlyIncome: 6000,
      loanAmount: 11_000,
      termMonths: 24,
    });
    const paid = await h.call(disburser.token, 'POST', `/api/applications/${id}/disburse`, undefined, {
      'idempotency-key': crypto.randomUUID(),
    });
    expect(paid.status).toBe(200);

    const ops = await h.admin('Otto Operator', ['admin']);
    const page = await h.open(ops.email);
    await page.goto(`${h.origin}/console/#/operations`);
    await page.getByRole('button', { name: 'Verify the ledger' }).click();
    await page.getByText(/^The ledger verifies: \d+ entries/).waitFor();

    // Someone with database access raises the amount of this loan's entry.
    const ledger = db().collection<{ _id: number; loanId: string; amount: number }>(LEDGER_COLLECTION);
    const entry = await ledger.findOne({ loanId: id });
    expect(entry).not.toBeNull();
    await ledger.updateOne({ _id: entry!._id }, { $set: { amount: entry!.amount + 1 } });
    await page.keyboard.press('l'); // the screen's shortcut for Verify the ledger
    const broken = page.getByText(/^Broken at entry \d+/);
    await broken.waitFor();
    expect(await broken.textContent()).toContain(`Broken at entry ${entry!._id}`); // an entry's _id is its seq
    await h.screenshot(page, 'operations-ledger-broken');
    await page.context().close();
    // No page asked another origin, broke its CSP, threw, or met a failed request.
    expect(h.problems).toEqual([]);
  }, 90_000);
});
