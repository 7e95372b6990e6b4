// Disbursement under the loan's lease, a loan's ledger entries, and verification of the whole chain.
import { createRoute, type OpenAPIHono, type RouteHandler, z } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import type { ApplicationListCache } from '../../shared/loans/applications.ts';
import {
  type DisbursementResult,
  Disbursements,
  type DisbursementView,
  idempotencyKeyPattern,
  mismatchCodes,
  PendingPaymentError,
} from '../../shared/loans/disbursements.ts';
import { Ledger, type LedgerEntry, LedgerKeys, ledgerEntryTypes } from '../../shared/loans/ledger.ts';
import { PaymentRefusedError, verifyWebhook, WEBHOOK_SIGNATURE_HEADER } from '../../shared/loans/payments.ts';
import type { AppEnv } from '../auth.ts';
import { parseIdempotencyKey } from '../headers.ts';
import { HttpError } from '../http-errors.ts';
import { ApplicationIdParam, errorResponses, signedIn } from '../openapi.ts';
import type { Services } from '../services.ts';

const IdempotencyKeyHeader = z.object({
  'idempotency-key': z
    .string()
    .max(256)
    .optional()
    .openapi({
      description: `Required. ${idempotencyKeyPattern.source} (e.g. a UUID), optionally in double quotes; one per loan`,
      example: '"8e03978e-40d5-43e8-bc93-6894a57f9324"',
    }),
});

const DisbursementJson = z
  .object({
    applicationId: z.string(),
    idempotencyKey: z.string(),
    amount: z.number().int().openapi({ description: 'whole currency units (the loanAmount)' }),
    ledgerSeq: z.number().int(),
    disbursedAt: z.string().openapi({ description: "the ledger entry's time" }),
    status: z.literal('disbursed'),
  })
  .openapi('Disbursement');

const PendingDisbursementJson = z
  .object({
    applicationId: z.string(),
    idempotencyKey: z.string(),
    state: z.literal('disbursing'),
    amount: z.number().int(),
    createdAt: z.string(),
    payment: z
      .object({ state: z.enum(['pending', 'paid', 'refused']), paymentId: z.string().optional() })
      .optional()
      .openapi({ description: "where the provider's payment is: pending until it answers or calls back" }),
    status: z.literal('pending'),
  })
  .openapi('PendingDisbursement');

const CancelledDisbursementJson = z
  .object({
    applicationId: z.string(),
    idempotencyKey: z.string().openapi({ description: "the cancelled attempt's key: it is not accepted again" }),
    state: z.literal('cancelled'),
    amount: z.number().int(),
    attempt: z.number().int().openapi({ description: 'the cancelled attempt: 0 for the first' }),
    createdAt: z.string(),
    payment: z.object({ state: z.enum(['pending', 'paid', 'refused']), paymentId: z.string().optional() }).optional(),
  })
  .openapi('CancelledDisbursement');

const LedgerEntryJson = z
  .object({
    seq: z.number().int(),
    loanId: z.string(),
    type: z.enum(ledgerEntryTypes),
    amount: z.number().int(),
    at: z.string(),
    prevHash: z.string(),
    hash: z.string(),
    kid: z.string().optional().openapi({ description: 'the ledger key whose HMAC `hash` is' }),
    fence: z.object({ key: z.string(), token: z.number().int() }).optional(),
    idempotencyKey: z.string().optional(),
    rekeyedFrom: z.string().optional(),
  })
  .openapi('LedgerEntry');

const LoanLedgerJson = z.object({ applicationId: z.string(), entries: z.array(LedgerEntryJson) }).openapi('LoanLedger');

const VerifyJson = z
  .object({
    ok: z.boolean().openapi({ description: 'the chain holds and the cross-check found nothing' }),
    entries: z.number().int().openapi({ description: 'entries checked (up to the first broken one)' }),
    head: z.object({ seq: z.number().int(), hash: z.string() }).nullable(),
    firstBroken: z
      .object({
        seq: z.number().int(),
        reason: z.enum(['hash', 'link', 'gap', 'key', 'legacy']),
        message: z.string(),
      })
      .optional()
      .openapi({
        description:
          'hash: entry edited or rehashed without the ledger key; link: prevHash or head does not match; ' +
          'gap: entry missing; key: its kid is not in LEDGER_KEYS; legacy: no kid (plain SHA-256)',
      }),
    disbursements: z.number().int().openapi({ description: 'disbursement records cross-checked' }),
    applications: z.number().int().openapi({ description: 'disbursed or disbursing applications cross-checked' }),
    mismatches: z
      .array(
        z.object({
          code: z.enum(mismatchCodes),
          applicationId: z.string(),
          seq: z.number().int().optional(),
          message: z.string(),
        }),
      )
      .openapi({ description: 'contradictions between ledger entries, disbursement records and applications' }),
    mismatchesOmitted: z.number().int().optional().openapi({ description: 'mismatches beyond the first 100' }),
  })
  .openapi('LedgerVerification');

const toDisbursementJson = (result: DisbursementResult) => ({
  ...result,
  disbursedAt: result.disbursedAt.toISOString(),
});
const toPendingJson = (view: DisbursementView) => ({
  applicationId: view.applicationId,
  idempotencyKey: view.idempotencyKey,
  state: 'disbursing' as const,
  amount: view.amount,
  createdAt: view.createdAt.toISOString(),
  ...(view.payment ? { payment: view.payment } : {}),
  status: 'pending' as const,
});
const toEntryJson = (entry: LedgerEntry) => ({ ...entry, at: entry.at.toISOString() });

const disburseRoute = createRoute({
  method: 'post',
  path: '/api/applications/{id}/disburse',
  tags: ['disbursement'],
  summary: 'Disburse an approved loan once: approved -> disbursing -> ledger entry -> disbursed',
  description:
    'Runs under the lease loan:<id>. The same Idempotency-Key again returns the same 200 body (and finishes ' +
    'a disbursement a crash interrupted); another key for a loan already disbursing or disbursed gets 409 ' +
    'with the disbursement in `current`. 428 without the header, 400 for a malformed one or a loan that is ' +
    'not approved. 403 four_eyes_preparer_cannot_disburse / four_eyes_approver_cannot_disburse for whoever ' +
    'prepared or approved the loan. With a payment provider (PAYMENT_PROVIDER_URL) the money moves first: ' +
    'when the provider times out, answers 5xx or its circuit breaker is open, the answer is 202 at once with ' +
    'the disbursement pending; the same request again, the resume sweep or the provider callback completes ' +
    "it (the provider pays a loan at most once: it gets the loan's payment identity as its Idempotency-Key). " +
    '502 payment_refused when the provider refuses the payment (4xx).',
  ...signedIn('status:disbursed'),
  request: { params: ApplicationIdParam, headers: IdempotencyKeyHeader },
  responses: {
    200: { description: 'Disbursed', content: { 'application/json': { schema: DisbursementJson } } },
    202: {
      description: 'Accepted: the payment provider has not paid yet; repeat the request (same key) to complete it',
      content: { 'application/json': { schema: PendingDisbursementJson } },
    },
    ...errorResponses(400, 401, 403, 404, 409, 428, 429, 502, 503),
  },
});

const cancelRoute = createRoute({
  method: 'post',
  path: '/api/applications/{id}/disbursement/cancel',
  tags: ['disbursement'],
  summary: 'Cancel a disbursement whose payment the provider refused, so that the loan can be disbursed again',
  description:
    'Under the lease loan:<id>: the disbursement intent leaves the application (a logged, audited change; the ' +
    'application stays approved) and the disbursement record becomes cancelled. Disbursing again takes a new ' +
    'Idempotency-Key (the cancelled key gets 409) and is paid under a payment identity of its own ' +
    '(disbursement:<id>#<attempt>); a provider callback for the cancelled attempt completes nothing. 404 when ' +
    'the loan has no disbursement; 409 with the disbursement in `current` when its payment was not refused ' +
    '(pending, paid, disbursed, or already cancelled).',
  ...signedIn('status:disbursed'),
  request: { params: ApplicationIdParam },
  responses: {
    200: { description: 'Cancelled', content: { 'application/json': { schema: CancelledDisbursementJson } } },
    ...errorResponses(400, 401, 403, 404, 409, 429, 503),
  },
});

const loanLedgerRoute = createRoute({
  method: 'get',
  path: '/api/applications/{id}/ledger',
  tags: ['disbursement'],
  summary: "A loan's ledger entries, in chain order",
  ...signedIn('status:disbursed'),
  request: { params: ApplicationIdParam },
  responses: {
    200: { description: 'Entries', content: { 'application/json': { schema: LoanLedgerJson } } },
    ...errorResponses(400, 401, 403, 404, 429),
  },
});

const verifyRoute = createRoute({
  method: 'get',
  path: '/api/ledger/verify',
  tags: ['disbursement'],
  summary: 'Walk the whole keyed chain and cross-check it with disbursement records and applications',
  description:
    "Recomputes every entry's HMAC under its own kid and every link, and names the first broken entry; " +
    'then names every contradiction between ledger entries, disbursement records and applications ' +
    '(amounts, application ids, seq numbers, disbursed status).',
  ...signedIn('admins:manage'),
  responses: {
    200: { description: 'The verification', content: { 'application/json': { schema: VerifyJson } } },
    ...errorResponses(401, 403, 429),
  },
});

function disburseHandler(
  disbursements: Disbursements,
  listCache: ApplicationListCache,
): RouteHandler<typeof disburseRoute, AppEnv> {
  return async (c) => {
    const { id } = c.req.valid('param');
    const header = c.req.valid('header')['idempotency-key'];
    if (header === undefined) {
      throw new HttpError(428, 'precondition_required', 'Send an Idempotency-Key header (e.g. a UUID).');
    }
    const key = parseIdempotencyKey(header);
    if (key === null) {
      throw new HttpError(400, 'validation', 'The Idempotency-Key header is not valid.', [
        { path: 'idempotency-key', message: `must match ${idempotencyKeyPattern.source}, optionally quoted` },
      ]);
    }
    const actor = { id: c.get('auth').sub, requestId: c.get('requestId') };
    // Whatever step it reached (intent, disbursed), this instance's lists show it at once.
    try {
      const result = await disbursements
        .disburse(id, key, actor)
        .finally(() => listCache.changed({ status: 'disbursed', from: 'approved' }));
      return c.json(toDisbursementJson(result), 200);
    } catch (error) {
      if (error instanceof PendingPaymentError) return c.json(toPendingJson(error.view), 202);
      if (error instanceof PaymentRefusedError) {
        throw new HttpError(502, 'payment_refused', 'The payment provider refused the payment.', {
          status: error.status,
          answer: error.detail,
        });
      }
      throw error;
    }
  };
}

const WebhookJson = z
  .object({
    idempotencyKey: z.string().max(200).openapi({ description: 'the payment identity we sent: disbursement:<id>' }),
    paymentId: z.string().min(1).max(200),
    status: z.enum(['paid']),
  })
  .openapi('PaymentCallback');

const webhookRoute = createRoute({
  method: 'post',
  path: '/api/payments/webhook',
  tags: ['disbursement'],
  summary: "The payment provider's callback: a payment it made completes its disbursement",
  description:
    `No session: the provider signs the raw body with PAYMENT_WEBHOOK_SECRET, \`${WEBHOOK_SIGNATURE_HEADER}: ` +
    'sha256=<hex HMAC-SHA256>`, checked in constant time before anything is read (401 otherwise). Repeated ' +
    'or late callbacks are harmless: the payment is recorded once and the disbursement completed once. ' +
    '404 when no webhook secret is configured.',
  request: {
    headers: z.object({ [WEBHOOK_SIGNATURE_HEADER]: z.string().max(200).optional() }),
    body: { required: true, content: { 'application/json': { schema: WebhookJson } } },
  },
  responses: {
    200: {
      description: 'Taken: what the disbursement is now (unknown: no such disbursement, ignored)',
      content: {
        'application/json': {
          schema: z
            .object({ result: z.enum(['unknown', 'pending', 'disbursing', 'disbursed', 'cancelled']) })
            .openapi('PaymentCallbackResult'),
        },
      },
    },
    ...errorResponses(400, 401, 404, 503),
  },
});

/** Before the body is validated: the signature over the raw bytes (the body is cached, the validator reuses it). */
function signedByProvider(secret: string | undefined): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (!secret) throw new HttpError(404, 'not_found', 'No payment webhook is configured.');
    const body = await c.req.text();
    if (!(await verifyWebhook(secret, body, c.req.header(WEBHOOK_SIGNATURE_HEADER)))) {
      throw new HttpError(401, 'unauthorized', 'The payment callback signature is not valid.');
    }
    await next();
  };
}

export function ledgerRoutes(app: OpenAPIHono<AppEnv>, services: Services) {
  // Parsed when the app is built, so a bad key stops the process at start-up.
  const keys = LedgerKeys.parse(services.config.LEDGER_KEYS, services.config.LEDGER_SIGNING_KID);
  const ledger = new Ledger(services.db, { keys, clock: services.clock });
  const disbursements = new Disbursements(services.db, {
    ledger,
    locks: services.locks,
    clock: services.clock,
    fourEyes: services.config.FOUR_EYES,
    ...(services.payments ? { payments: services.payments } : {}),
  });

  app.openapi(disburseRoute, disburseHandler(disbursements, services.listCache));

  app.openapi(
    { ...webhookRoute, middleware: [signedByProvider(services.config.PAYMENT_WEBHOOK_SECRET)] as const },
    async (c) => {
      const { idempotencyKey, paymentId } = c.req.valid('json');
      const result = await disbursements.paymentCallback(idempotencyKey, paymentId);
      if (result !== 'unknown') services.listCache.changed({ status: 'disbursed', from: 'approved' });
      return c.json({ result }, 200);
    },
  );

  app.openapi(cancelRoute, async (c) => {
    const { id } = c.req.valid('param');
    const view = await disbursements.cancelRefused(id, { id: c.get('auth').sub, requestId: c.get('requestId') });
    services.listCache.changed({ status: 'approved' });
    return c.json(
      {
        applicationId: view.applicationId,
        idempotencyKey: view.idempotencyKey,
        state: 'cancelled' as const,
        amount: view.amount,
        attempt: view.attempt,
        createdAt: view.createdAt.toISOString(),
        ...(view.payment ? { payment: view.payment } : {}),
      },
      200,
    );
  });

  app.openapi(loanLedgerRoute, async (c) => {
    const { id } = c.req.valid('param');
    const entries = await ledger.entriesForLoan(id);
    if (entries.length === 0 && !(await disbursements.applicationExists(id))) {
      throw new HttpError(404, 'not_found', `Application ${id} not found.`);
    }
    return c.json({ applicationId: id, entries: entries.map(toEntryJson) }, 200);
  });

  app.openapi(verifyRoute, async (c) => {
    const result = await disbursements.verifyLedger();
    const checks = services.ledgerChecks;
    checks[result.ok ? 'ok' : 'failed']++;
    checks.last = { ok: result.ok, atMs: services.clock.now() };
    return c.json(result, 200);
  });
}
