// Disbursement under the loan's lease, a loan's ledger entries, and verification of the whole chain.
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { applicationIdSchema } from '../../shared/applications.ts';
import {
  type DisbursementResult,
  Disbursements,
  idempotencyKeyPattern,
  parseIdempotencyKey,
} from '../../shared/disbursements.ts';
import { Ledger, type LedgerEntry, ledgerEntryTypes } from '../../shared/ledger.ts';
import type { Permission } from '../../shared/rbac.ts';
import { type AppEnv, authenticate, authorize, rateLimitPerAdmin } from '../auth.ts';
import { HttpError } from '../http-errors.ts';
import { errorResponses } from '../openapi.ts';
import type { Services } from '../services.ts';

const IdParam = z.object({ id: applicationIdSchema });

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

const LedgerEntryJson = z
  .object({
    seq: z.number().int(),
    loanId: z.string(),
    type: z.enum(ledgerEntryTypes),
    amount: z.number().int(),
    at: z.string(),
    prevHash: z.string(),
    hash: z.string(),
    fence: z.object({ key: z.string(), token: z.number().int() }).optional(),
    idempotencyKey: z.string().optional(),
  })
  .openapi('LedgerEntry');

const LoanLedgerJson = z.object({ applicationId: z.string(), entries: z.array(LedgerEntryJson) }).openapi('LoanLedger');

const VerifyJson = z
  .object({
    ok: z.boolean(),
    entries: z.number().int().openapi({ description: 'entries checked (up to the first broken one)' }),
    head: z.object({ seq: z.number().int(), hash: z.string() }).nullable(),
    firstBroken: z
      .object({ seq: z.number().int(), reason: z.enum(['hash', 'link', 'gap']) })
      .optional()
      .openapi({ description: 'hash: entry edited; link: prevHash or head does not match; gap: entry missing' }),
  })
  .openapi('LedgerVerification');

const security = [{ bearerAuth: [] }];

const toDisbursementJson = (result: DisbursementResult) => ({
  ...result,
  disbursedAt: result.disbursedAt.toISOString(),
});
const toEntryJson = (entry: LedgerEntry) => ({ ...entry, at: entry.at.toISOString() });

export function ledgerRoutes(app: OpenAPIHono<AppEnv>, services: Services) {
  const ledger = new Ledger(services.db, { clock: services.clock });
  const disbursements = new Disbursements(services.db, {
    ledger,
    locks: services.locks,
    clock: services.clock,
    fourEyes: services.config.FOUR_EYES,
  });
  const guard = (permission: Permission) => [
    authenticate(services),
    rateLimitPerAdmin(services),
    authorize(permission),
  ];

  const disburse = createRoute({
    method: 'post',
    path: '/api/applications/{id}/disburse',
    tags: ['disbursement'],
    summary: 'Disburse an approved loan once: approved -> disbursing -> ledger entry -> disbursed',
    description:
      'Runs under the lease loan:<id>. The same Idempotency-Key again returns the same 200 body (and finishes ' +
      'a disbursement a crash interrupted); another key for a loan already disbursing or disbursed gets 409 ' +
      'with the disbursement in `current`. 428 without the header, 400 for a malformed one or a loan that is ' +
      'not approved. 403 four_eyes_preparer_cannot_disburse / four_eyes_approver_cannot_disburse for whoever ' +
      'prepared or approved the loan.',
    security,
    middleware: guard('status:disbursed'),
    request: { params: IdParam, headers: IdempotencyKeyHeader },
    responses: {
      200: { description: 'Disbursed', content: { 'application/json': { schema: DisbursementJson } } },
      ...errorResponses(400, 401, 403, 404, 409, 428, 429, 503),
    },
  });

  const loanLedger = createRoute({
    method: 'get',
    path: '/api/applications/{id}/ledger',
    tags: ['disbursement'],
    summary: "A loan's ledger entries, in chain order",
    security,
    middleware: guard('status:disbursed'),
    request: { params: IdParam },
    responses: {
      200: { description: 'Entries', content: { 'application/json': { schema: LoanLedgerJson } } },
      ...errorResponses(400, 401, 403, 404, 429),
    },
  });

  const verify = createRoute({
    method: 'get',
    path: '/api/ledger/verify',
    tags: ['disbursement'],
    summary: 'Walk the whole chain, recomputing hashes and links; names the first broken entry',
    security,
    middleware: guard('admins:manage'),
    responses: {
      200: { description: 'The verification', content: { 'application/json': { schema: VerifyJson } } },
      ...errorResponses(401, 403, 429),
    },
  });

  app.openapi(disburse, async (c) => {
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
    const result = await disbursements.disburse(id, key, { id: c.get('auth').sub, requestId: c.get('requestId') });
    return c.json(toDisbursementJson(result), 200);
  });

  app.openapi(loanLedger, async (c) => {
    const { id } = c.req.valid('param');
    const entries = await ledger.entriesForLoan(id);
    if (entries.length === 0 && !(await disbursements.applicationExists(id))) {
      throw new HttpError(404, 'not_found', `Application ${id} not found.`);
    }
    return c.json({ applicationId: id, entries: entries.map(toEntryJson) }, 200);
  });

  app.openapi(verify, async (c) => c.json(await ledger.verify(), 200));
}
