// A payment the provider refuses, in the console: the disburser sees the refusal, cancels it with the
// button that then appears, and disburses again; the provider is asked under a new payment identity and
// pays once. The provider is the repository's simulator; skipped by name without chromium.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findChromium } from '../../scripts/browser.ts';
import { type PaymentProviderSim, startPaymentProviderSim } from '../../scripts/payment-provider-sim.ts';
import { type ConsoleHarness, startConsole } from '../support/console.ts';

const have = findChromium() !== null;
const skipped = have ? '' : ' (skipped: chromium is not installed; run `npm run setup`)';
const PROVIDER_KEY = 'console-sim-provider-key-0123';

let h: ConsoleHarness;
let sim: PaymentProviderSim;
beforeAll(async () => {
  if (!have) return;
  sim = await startPaymentProviderSim({ key: PROVIDER_KEY });
  h = await startConsole(import.meta.filename, {
    env: { PAYMENT_PROVIDER_URL: sim.url, PAYMENT_PROVIDER_KEY: PROVIDER_KEY, PAYMENT_MAX_ATTEMPTS: '1' },
  });
}, 120_000);
afterAll(async () => {
  await h?.close();
  await sim?.close();
});

describe.skipIf(!have)(`a refused payment in the console${skipped}`, () => {
  it('is cancelled with its button, and the loan is disbursed again under a new payment identity, once', async () => {
    const preparer = await h.admin('Rita Reviewer', ['reviewer']);
    const approver = await h.admin('Abe Approver', ['approver']);
    const disburser = await h.admin('Dee Disburser', ['disburser']);
    const id = await h.approved(preparer.token, approver.token, {
      applicantName: 'Closed Account',
      monthlyIncome: 5000,
      loanAmount: 14_000,
      termMonths: 36,
    });

    sim.setFaults({ mode: 'refuse', count: 1, duplicateWebhooks: 0 });
    const page = await h.open(disburser.email);
    await page.goto(`${h.origin}/console/#/applications/${id}`);
    await page.getByRole('heading', { name: 'Audit trail' }).waitFor();
    await page.getByRole('button', { name: /^Disburse/ }).click();
    await page.getByText(/refused the payment/).waitFor();
    await page.getByRole('button', { name: 'Cancel the refused payment' }).click();
    await page.getByText(/refused payment is cancelled/).waitFor();
    await page.getByRole('button', { name: /^Disburse/ }).click();
    await page.locator('table.ledger tbody tr').first().waitFor();

    expect(sim.state().payments.map((payment) => payment.idempotencyKey)).toEqual([`disbursement:${id}#1`]);
    const ledger = await h.call(disburser.token, 'GET', `/api/applications/${id}/ledger`);
    expect(ledger.body.entries).toHaveLength(1);
    // The refusal is the one failed request the page saw.
    expect(h.problems).toEqual([`502 POST /api/applications/${id}/disburse`]);
    await page.context().close();
  }, 90_000);
});
