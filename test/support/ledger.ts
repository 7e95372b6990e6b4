// The ledger's unkeyed hash, written out here rather than taken from shared/loans/ledger.ts: what a
// database writer without the ledger key can compute, for the tamper tests.
import { createHash } from 'node:crypto';
import type { LedgerDoc } from '../../shared/loans/ledger.ts';

/** The plain SHA-256 ("loan-ledger/v1") of an entry, as entries were hashed before keying. */
export function plainLedgerHash(doc: LedgerDoc): string {
  const encoding = JSON.stringify([
    'loan-ledger/v1',
    doc._id,
    doc.loanId,
    doc.type,
    doc.amount,
    doc.at.toISOString(),
    doc.idempotencyKey ?? null,
    doc.fence ? [doc.fence.key, doc.fence.token] : null,
    doc.prevHash,
  ]);
  return createHash('sha256').update(encoding, 'utf8').digest('hex');
}
