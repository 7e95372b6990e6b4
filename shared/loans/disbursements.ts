// Disbursing an approved loan: an idempotent state machine on unique keys, no transactions. Under the lease
// loan:<id> it moves through steps that each leave a state the next attempt resumes from:
//   claim        insert disbursements/<appId> {idempotencyKey, state: 'disbursing', amount}: one per loan
//                (unique _id), so a different key gets 409 with the disbursement that won
//   intent       versioned update of the application (still approved) recording {idempotencyKey, amount,
//                token, state: 'disbursing'}: the application shows the money is on its way
//   ledger       fenced, idempotent ledger append (idempotencyKey `disbursement:<appId>`): never two entries
//   application  versioned update approved -> disbursed with the ledger seq
//   record       the disbursement record -> 'disbursed' with the result every retry returns
// With a payment provider (PAYMENT_PROVIDER_URL), one more step comes between intent and ledger:
//   payment      the provider is asked to pay under the loan's payment identity (disbursement:<appId>, its
//                Idempotency-Key); its receipt is recorded on the record (payment.state 'paid'). The ledger
//                entry records money that has moved, so it is appended only after the provider's yes: a
//                crash between the two leaves a paid record that the next attempt completes without paying
//                again (it reads 'paid' and skips the call; were the write lost, the provider answers the
//                same key with the same receipt). A time-out, 5xx or open breaker leaves the record
//                'pending' (PendingPaymentError: the API answers 202) until a retry of the request, the
//                resume sweep (resumePending) or the provider's signed callback (paymentCallback) completes
//                it. A 4xx leaves it 'refused' (PaymentRefusedError: 502); the application stays approved
//                with its intent, and nothing more happens to it until an admin cancels it (cancelRefused):
//                the intent leaves the application, the record becomes 'cancelled', and a new
//                Idempotency-Key may claim the loan again as the record's next attempt, paid under a payment
//                identity of its own (disbursement:<appId>#<attempt>), so the provider never answers it with
//                the refused attempt's answer and a callback for the old attempt completes nothing.
// A retry with the same key reads what exists and redoes only the missing steps; a crash anywhere (even a
// stale holder slipping past its lease) cannot produce a second ledger entry, because the ledger refuses
// a second entry with the same identity whatever the lease says.
import type { Collection, Db, Filter, UpdateFilter } from 'mongodb';
import type { Lease, LockManager } from '../concurrency/leases.ts';
import { retryOnConflict, writeMissed } from '../concurrency/versions.ts';
import type { Clock } from '../core/clock.ts';
import { type IndexPlan, isDuplicateKeyError } from '../core/db.ts';
import { ConflictError, NotFoundError, ValidationError } from '../core/errors.ts';
import { contextOf, inSpan, linkToActive, recordingSpan, tracingEnabled } from '../core/tracing.ts';
import { fourEyesError, fourEyesFilter, fourEyesRefusal } from '../identity/rbac.ts';
import { changeEntry, type PathChange, withChange } from './applications/history.ts';
import {
  type Actor,
  APPLICATIONS_COLLECTION,
  type ApplicationDoc,
  type ApplicationStatus,
  type LastChange,
} from './applications.ts';
import { type AuditEntry, AuditLog, auditId } from './audit.ts';
import { type Ledger, type LedgerEntry, loanLockKey, type VerifyResult } from './ledger.ts';
import { type PaymentProvider, PaymentRefusedError, PaymentUnavailableError } from './payments.ts';

export const DISBURSEMENTS_COLLECTION = 'disbursements';

export const disbursementSteps = ['claim', 'intent', 'ledger', 'application', 'record'] as const;
export type DisbursementStep = (typeof disbursementSteps)[number];
export type DisbursementState = 'disbursing' | 'disbursed' | 'cancelled';

/**
 * Idempotency-Key values we accept: 8 to 128 of letters, digits and `-_.:` (a UUID fits), optionally as an
 * RFC 8941 string in double quotes (draft-ietf-httpapi-idempotency-key-header). Scoped to one loan.
 */
export const idempotencyKeyPattern = /^[A-Za-z0-9._:-]{8,128}$/;

/** The ledger identity of a loan's disbursement: one per loan, whatever key the client sent. */
export const disbursementLedgerKey = (applicationId: string) => `disbursement:${applicationId}`;

/**
 * The payment identity the provider gets as its Idempotency-Key: the ledger identity for the first attempt
 * (as before attempts existed), with `#<attempt>` after a refused attempt was cancelled.
 */
export const paymentKey = (applicationId: string, attempt = 0) =>
  attempt === 0 ? disbursementLedgerKey(applicationId) : `${disbursementLedgerKey(applicationId)}#${attempt}`;

/** The loan and attempt a payment identity names; null when it is not one of ours. */
export function parsePaymentKey(key: string): { applicationId: string; attempt: number } | null {
  const prefix = disbursementLedgerKey('');
  if (!key.startsWith(prefix)) return null;
  const match = /^(.+?)(?:#([1-9][0-9]{0,5}))?$/.exec(key.slice(prefix.length));
  if (!match) return null;
  return { applicationId: match[1]!, attempt: match[2] ? Number(match[2]) : 0 };
}

/** One per loan (_id = application id): the key that won, how far it got, and the result once done. */
export interface DisbursementDoc {
  _id: string;
  idempotencyKey: string;
  state: DisbursementState;
  amount: number;
  /** The admin who asked first. */
  requestedBy: string;
  /** The fencing token of the lease that claimed it. */
  token: number;
  createdAt: Date;
  updatedAt: Date;
  ledgerSeq?: number;
  /** The ledger entry's `at`: the same on every answer. */
  disbursedAt?: Date;
  /** With a payment provider: where the payment is (absent until the provider is first asked). */
  payment?: DisbursementPayment;
  /** Attempts before this one, cancelled after a refusal (absent: this is the first). */
  attempt?: number;
  /** Set when state is 'cancelled'. */
  cancelledAt?: Date;
  cancelledBy?: string;
  /** The cancelled attempts, oldest first: their keys, requesters and the provider's refusal. */
  cancelledAttempts?: CancelledAttempt[];
}

export interface CancelledAttempt {
  attempt: number;
  idempotencyKey: string;
  requestedBy: string;
  amount: number;
  payment?: DisbursementPayment;
  cancelledAt: Date;
  cancelledBy: string;
}

export type PaymentState = 'pending' | 'paid' | 'refused';

export interface DisbursementPayment {
  state: PaymentState;
  /** Calls that did not settle it (time-outs, 5xx, open breaker, refusals). */
  attempts?: number;
  lastError?: string;
  paymentId?: string;
  /** How it became paid: the provider's answer or its callback. */
  via?: 'answer' | 'callback';
}

/** The payment did not go through yet (provider down, slow or its breaker open): the request answers 202. */
export class PendingPaymentError extends Error {
  readonly view: DisbursementView;
  constructor(view: DisbursementView, message: string) {
    super(message);
    this.name = 'PendingPaymentError';
    this.view = view;
  }
}

/** What the application records while the money moves (and keeps, with the seq, once it has). */
export interface DisbursementIntent {
  idempotencyKey: string;
  amount: number;
  token: number;
  state: DisbursementState;
  startedAt: Date;
  ledgerSeq?: number;
  disbursedAt?: Date;
}

type DisbursableApplication = ApplicationDoc & { disbursement?: DisbursementIntent };

/** The answer to every request with the winning key, identical each time. */
export interface DisbursementResult {
  applicationId: string;
  idempotencyKey: string;
  amount: number;
  ledgerSeq: number;
  disbursedAt: Date;
  status: 'disbursed';
}

/** The disbursement as a 409 shows it to a request with another key. */
export interface DisbursementView {
  applicationId: string;
  idempotencyKey: string;
  state: DisbursementState;
  amount: number;
  createdAt: Date;
  ledgerSeq?: number;
  disbursedAt?: Date;
  payment?: { state: PaymentState; paymentId?: string };
  /** 0 for the first attempt; one more for each refused attempt cancelled before this one. */
  attempt: number;
}

// ---- Indexes, filters and updates -------------------------------------------------------------------

/** Every read and write of a disbursement record names its _id: nothing to index. */
export const disbursementIndexPlans: IndexPlan[] = [];

export const disbursementQueries = {
  byId: (applicationId: string): Filter<DisbursementDoc> => ({ _id: applicationId }),
  /** Only the key that won may move the record on. */
  ownedBy: (applicationId: string, key: string): Filter<DisbursementDoc> => ({
    _id: applicationId,
    idempotencyKey: key,
  }),
  done: (entry: LedgerEntry, at: Date): UpdateFilter<DisbursementDoc> => ({
    $set: { state: 'disbursed', ledgerSeq: entry.seq, disbursedAt: entry.at, updatedAt: at },
  }),
  application: (applicationId: string): Filter<DisbursableApplication> => ({ _id: applicationId }),
  /** Applications the cross-check reads: disbursed, or carrying a disbursement intent. */
  disbursedOrDisbursing: {
    $or: [{ status: 'disbursed' }, { disbursement: { $exists: true } }],
  } as Filter<DisbursableApplication>,
  /**
   * The intent goes on an approved application, at the version read, that carries no intent yet; with
   * four eyes, only if the disburser neither prepared nor approved it.
   */
  intentWritable: (applicationId: string, version: number, fourEyesOf?: string): Filter<DisbursableApplication> => ({
    _id: applicationId,
    version,
    status: 'approved',
    disbursement: { $exists: false },
    ...(fourEyesOf === undefined ? {} : fourEyesFilter('disburse', fourEyesOf)),
  }),
  /** The final move: still approved, at the version read, and carrying this key's intent. */
  finalWritable: (applicationId: string, version: number, key: string): Filter<DisbursableApplication> => ({
    _id: applicationId,
    version,
    status: 'approved',
    'disbursement.idempotencyKey': key,
  }),
  recordIntent: (intent: DisbursementIntent, meta: ChangeMeta): UpdateFilter<DisbursableApplication> =>
    logged(
      {
        $set: { disbursement: intent, updatedAt: meta.at, updatedBy: meta.actor, lastChange: meta.lastChange },
        $inc: { version: 1 },
      },
      meta,
      [{ path: 'disbursement', new: intent.state }],
    ),
  /** The refused attempt's intent leaves the application (still approved, at the version read). */
  intentCancellable: (applicationId: string, version: number, key: string): Filter<DisbursableApplication> => ({
    _id: applicationId,
    version,
    status: 'approved',
    'disbursement.idempotencyKey': key,
  }),
  cancelIntent: (meta: ChangeMeta): UpdateFilter<DisbursableApplication> =>
    logged(
      {
        $unset: { disbursement: '' },
        $set: { updatedAt: meta.at, updatedBy: meta.actor, lastChange: meta.lastChange },
        $inc: { version: 1 },
      },
      meta,
      [{ path: 'disbursement', old: 'disbursing', new: 'cancelled' }],
    ),
  /** Only a refused attempt, and only the one read. */
  refused: (record: DisbursementDoc): Filter<DisbursementDoc> => ({
    _id: record._id,
    idempotencyKey: record.idempotencyKey,
    state: 'disbursing',
    'payment.state': 'refused',
  }),
  cancelled: (record: DisbursementDoc, actor: string, at: Date): UpdateFilter<DisbursementDoc> => ({
    $set: { state: 'cancelled', cancelledAt: at, cancelledBy: actor, updatedAt: at },
    $push: {
      cancelledAttempts: {
        attempt: record.attempt ?? 0,
        idempotencyKey: record.idempotencyKey,
        requestedBy: record.requestedBy,
        amount: record.amount,
        ...(record.payment ? { payment: record.payment } : {}),
        cancelledAt: at,
        cancelledBy: actor,
      },
    },
  }),
  /** A new key claims a cancelled record as its next attempt (only the cancelled one read). */
  reclaimable: (record: DisbursementDoc): Filter<DisbursementDoc> => ({
    _id: record._id,
    idempotencyKey: record.idempotencyKey,
    state: 'cancelled',
  }),
  reclaim: (key: string, amount: number, actor: string, token: number, at: Date): UpdateFilter<DisbursementDoc> => ({
    $set: { idempotencyKey: key, state: 'disbursing', amount, requestedBy: actor, token, updatedAt: at },
    $unset: { payment: '', cancelledAt: '', cancelledBy: '' },
    $inc: { attempt: 1 },
  }),
  markDisbursed: (entry: LedgerEntry, meta: ChangeMeta): UpdateFilter<DisbursableApplication> =>
    logged(
      {
        $set: {
          status: 'disbursed',
          'disbursement.state': 'disbursed',
          'disbursement.ledgerSeq': entry.seq,
          'disbursement.disbursedAt': entry.at,
          updatedAt: meta.at,
          updatedBy: meta.actor,
          lastChange: meta.lastChange,
        },
        $inc: { version: 1 },
      },
      meta,
      [
        { path: 'status', old: 'approved', new: 'disbursed' },
        { path: 'disbursement', old: 'disbursing', new: 'disbursed' },
      ],
    ),
};

/** A disbursement step's update with its change-log entry (every write that bumps the version logs one). */
function logged(update: Record<string, unknown>, meta: ChangeMeta, paths: PathChange[]) {
  const { version, at } = meta.lastChange;
  return withChange(update, changeEntry({ version, at, by: meta.actor, action: 'disbursement', paths }));
}

// ---- The cross-check: ledger <-> disbursement records <-> applications ------------------------------

export const mismatchCodes = [
  'record_missing',
  'entry_missing',
  'entry_other_loan',
  'duplicate_entry',
  'amount_mismatch',
  'seq_mismatch',
  'status_mismatch',
] as const;
export type MismatchCode = (typeof mismatchCodes)[number];

/** One contradiction between the ledger, a disbursement record and an application. */
export interface Mismatch {
  code: MismatchCode;
  applicationId: string;
  /** The ledger entry concerned, when there is one. */
  seq?: number;
  message: string;
}

/** The chain's own verification plus the cross-check; ok only when both hold. */
export interface LedgerVerification extends VerifyResult {
  /** Disbursement records and disbursed (or disbursing) applications cross-checked. */
  disbursements: number;
  applications: number;
  /** At most MAX_MISMATCHES, in ledger then application order; `mismatchesOmitted` counts the rest. */
  mismatches: Mismatch[];
  mismatchesOmitted?: number;
}

const MAX_MISMATCHES = 100;

interface SeenEntry {
  seq: number;
  loanId: string;
  amount: number;
  idempotencyKey?: string;
}

interface ChangeMeta {
  at: Date;
  actor: string;
  lastChange: LastChange;
}

// ---- The state machine ------------------------------------------------------------------------------

export interface DisbursementsOptions {
  ledger: Ledger;
  locks: LockManager;
  clock: Clock;
  audit?: AuditLog;
  /** How long a request waits for the loan's lease (another request disbursing it) before a 503. */
  lockWaitMs?: number;
  lockTtlMs?: number;
  /** Four eyes (FOUR_EYES): who prepared or approved a loan may not disburse it. On unless turned off. */
  fourEyes?: boolean;
  /** The payment provider (PAYMENT_PROVIDER_URL); without one the ledger entry is the payment, as before. */
  payments?: PaymentProvider;
  /** Called after each step is durable; tests use it to kill the process between steps. */
  onStep?: (step: DisbursementStep, applicationId: string) => void | Promise<void>;
}

export function viewOf(doc: DisbursementDoc): DisbursementView {
  return {
    applicationId: doc._id,
    idempotencyKey: doc.idempotencyKey,
    state: doc.state,
    amount: doc.amount,
    createdAt: doc.createdAt,
    ...(doc.ledgerSeq === undefined ? {} : { ledgerSeq: doc.ledgerSeq }),
    ...(doc.disbursedAt === undefined ? {} : { disbursedAt: doc.disbursedAt }),
    attempt: doc.attempt ?? 0,
    ...(doc.payment === undefined
      ? {}
      : {
          payment: {
            state: doc.payment.state,
            ...(doc.payment.paymentId === undefined ? {} : { paymentId: doc.payment.paymentId }),
          },
        }),
  };
}

function resultOf(doc: DisbursementDoc): DisbursementResult {
  return {
    applicationId: doc._id,
    idempotencyKey: doc.idempotencyKey,
    amount: doc.amount,
    ledgerSeq: doc.ledgerSeq!,
    disbursedAt: doc.disbursedAt!,
    status: 'disbursed',
  };
}

function stateOf(doc: DisbursementDoc): string {
  if (doc.state !== 'disbursing') return doc.state;
  return doc.payment ? `disbursing, payment ${doc.payment.state}` : 'disbursing';
}

function cancelledConflict(doc: DisbursementDoc): ConflictError<DisbursementView> {
  return new ConflictError(
    `the disbursement of ${doc._id} under this Idempotency-Key was cancelled; send a new key to disburse again`,
    viewOf(doc),
  );
}

function otherKeyConflict(doc: DisbursementDoc): ConflictError<DisbursementView> {
  return new ConflictError(`application ${doc._id} is already ${doc.state} under another Idempotency-Key`, viewOf(doc));
}

/** verifyLedger's cross-check: the ledger entries it has seen, and its mismatches, each reported once. */
class LedgerCrossCheck {
  readonly bySeq = new Map<number, SeenEntry>();
  readonly byLoan = new Map<string, SeenEntry[]>();
  readonly mismatches: Mismatch[] = [];
  private readonly seen = new Set<string>();
  private readonly ledger: Ledger;
  private readonly readRecord: (applicationId: string) => Promise<DisbursementDoc | null>;

  constructor(ledger: Ledger, readRecord: (applicationId: string) => Promise<DisbursementDoc | null>) {
    this.ledger = ledger;
    this.readRecord = readRecord;
  }

  remember(entry: SeenEntry): void {
    this.bySeq.set(entry.seq, entry);
    const list = this.byLoan.get(entry.loanId) ?? [];
    list.push(entry);
    this.byLoan.set(entry.loanId, list);
  }

  /** Entries past the walk's end (appended meanwhile): looked up once before calling them missing. */
  async lateEntry(applicationId: string): Promise<SeenEntry | undefined> {
    const known = this.byLoan.get(applicationId)?.[0];
    if (known) return known;
    const late = await this.ledger.entries.findOne({ idempotencyKey: disbursementLedgerKey(applicationId) });
    if (!late || this.bySeq.has(late._id)) return undefined;
    const entry = { seq: late._id, loanId: late.loanId, amount: late.amount, idempotencyKey: late.idempotencyKey };
    this.remember(entry);
    return entry;
  }

  report(code: MismatchCode, applicationId: string, seq: number | undefined, message: string): void {
    const id = `${code}|${applicationId}|${seq ?? ''}`;
    if (this.seen.has(id)) return;
    this.seen.add(id);
    this.mismatches.push({ code, applicationId, ...(seq === undefined ? {} : { seq }), message });
  }

  checkEntries(records: Map<string, DisbursementDoc>): void {
    // Every entry: its loan has a record, one entry per loan, and its identity names its own loan.
    for (const [loanId, entries] of this.byLoan) {
      const first = entries[0]!;
      if (!records.has(loanId)) {
        // A record is inserted before its entry is appended, so a missing one was removed.
        this.report(
          'record_missing',
          loanId,
          first.seq,
          `ledger entry ${first.seq} pays ${loanId}, which has no disbursement record`,
        );
      }
      for (const extra of entries.slice(1)) {
        this.report('duplicate_entry', loanId, extra.seq, `${loanId} has ledger entries ${first.seq} and ${extra.seq}`);
      }
      for (const entry of entries) {
        if (entry.idempotencyKey !== undefined && entry.idempotencyKey !== disbursementLedgerKey(loanId)) {
          this.report(
            'entry_other_loan',
            loanId,
            entry.seq,
            `ledger entry ${entry.seq} pays ${loanId} but carries the identity ${entry.idempotencyKey}`,
          );
        }
      }
    }
  }

  async checkRecords(
    records: Map<string, DisbursementDoc>,
    applications: Map<string, DisbursableApplication>,
  ): Promise<void> {
    // Every record: a done one names its entry (there, for this loan, this amount) and a disbursed application.
    for (const record of records.values()) {
      const id = record._id;
      if (record.state === 'disbursed') {
        await this.checkDoneRecord(record, applications.get(id));
        continue;
      }
      const entry = this.byLoan.get(id)?.[0];
      if (entry && entry.amount !== record.amount) {
        this.report(
          'amount_mismatch',
          id,
          entry.seq,
          `ledger entry ${entry.seq} pays ${entry.amount}, disbursement record ${id} says ${record.amount}`,
        );
      }
    }
  }

  private async checkDoneRecord(record: DisbursementDoc, app: DisbursableApplication | undefined): Promise<void> {
    const id = record._id;
    const seq = record.ledgerSeq!;
    const entry = this.bySeq.get(seq);
    if (!entry) {
      const own = await this.lateEntry(id);
      if (own?.seq === seq) {
        if (own.amount !== record.amount) {
          this.report(
            'amount_mismatch',
            id,
            seq,
            `ledger entry ${seq} pays ${own.amount}, disbursement record ${id} says ${record.amount}`,
          );
        }
      } else if (own) {
        this.report(
          'seq_mismatch',
          id,
          seq,
          `disbursement record ${id} names ledger entry ${seq}, its entry is ${own.seq}`,
        );
      } else {
        this.report('entry_missing', id, seq, `disbursement record ${id} names ledger entry ${seq}, which is missing`);
      }
    } else if (entry.loanId !== id) {
      this.report(
        'entry_other_loan',
        id,
        seq,
        `disbursement record ${id} names ledger entry ${seq}, which pays ${entry.loanId}`,
      );
    } else if (entry.amount !== record.amount) {
      this.report(
        'amount_mismatch',
        id,
        seq,
        `ledger entry ${seq} pays ${entry.amount}, disbursement record ${id} says ${record.amount}`,
      );
    }
    if (app?.status !== 'disbursed') {
      this.report(
        'status_mismatch',
        id,
        seq,
        `disbursement record ${id} is done but the application is ${app ? app.status : 'not disbursed or missing'}`,
      );
    }
  }

  async checkApplications(
    applications: Map<string, DisbursableApplication>,
    records: Map<string, DisbursementDoc>,
  ): Promise<void> {
    // Every disbursed (or disbursing) application: its record, and once disbursed its entry at its seq.
    for (const app of applications.values()) {
      const id = app._id;
      // A record claimed after the records were read (a disbursement started meanwhile) is read now.
      const record = records.get(id) ?? (await this.readRecord(id)) ?? undefined;
      const seq = app.disbursement?.ledgerSeq;
      if (!record) {
        this.report('record_missing', id, seq, `application ${id} is ${app.status} without a disbursement record`);
      } else if (app.disbursement && app.disbursement.amount !== record.amount) {
        this.report(
          'amount_mismatch',
          id,
          seq,
          `application ${id} disburses ${app.disbursement.amount}, its record says ${record.amount}`,
        );
      }
      if (app.status !== 'disbursed') continue;
      const entry = await this.lateEntry(id);
      if (!entry) {
        this.report('entry_missing', id, seq, `application ${id} is disbursed but no ledger entry pays it`);
      } else if (seq !== entry.seq) {
        this.report('seq_mismatch', id, seq, `application ${id} names ledger entry ${seq}, its entry is ${entry.seq}`);
      } else if (app.disbursement && entry.amount !== app.disbursement.amount) {
        this.report(
          'amount_mismatch',
          id,
          seq,
          `ledger entry ${seq} pays ${entry.amount}, application ${id} says ${app.disbursement.amount}`,
        );
      }
    }
  }
}

export class Disbursements {
  readonly collection: Collection<DisbursementDoc>;
  private readonly applications: Collection<DisbursableApplication>;
  private readonly ledger: Ledger;
  private readonly locks: LockManager;
  private readonly clock: Clock;
  private readonly audit: AuditLog;
  private readonly lockWaitMs: number;
  private readonly lockTtlMs: number | undefined;
  private readonly onStep: DisbursementsOptions['onStep'];
  private readonly fourEyes: boolean;
  private readonly payments: PaymentProvider | undefined;

  constructor(db: Db, options: DisbursementsOptions) {
    this.collection = db.collection<DisbursementDoc>(DISBURSEMENTS_COLLECTION);
    this.applications = db.collection<DisbursableApplication>(APPLICATIONS_COLLECTION);
    this.ledger = options.ledger;
    this.locks = options.locks;
    this.clock = options.clock;
    this.audit = options.audit ?? new AuditLog(db);
    this.lockWaitMs = options.lockWaitMs ?? 15_000;
    this.lockTtlMs = options.lockTtlMs;
    this.onStep = options.onStep;
    this.fourEyes = options.fourEyes ?? true;
    this.payments = options.payments;
  }

  async get(applicationId: string): Promise<DisbursementDoc | null> {
    return this.collection.findOne(disbursementQueries.byId(applicationId));
  }

  async applicationExists(applicationId: string): Promise<boolean> {
    const found = await this.applications.findOne(disbursementQueries.application(applicationId), {
      projection: { _id: 1 },
    });
    return found !== null;
  }

  /**
   * The ledger's verification (Ledger.verify) and a cross-check of every disbursement entry, disbursement
   * record and application against each other: a done record's entry exists at its seq, for its loan, with
   * its amount; every entry has its loan's record; a disbursed application has its record and its entry, at
   * the seq and amount it names; a done record's application is disbursed. A disbursement still in flight
   * (record 'disbursing') is not a contradiction. Entries appended after the walk are looked up before
   * anything is called missing, so a concurrent disbursement is not reported.
   */
  async verifyLedger(): Promise<LedgerVerification> {
    const check = new LedgerCrossCheck(this.ledger, (id) => this.get(id));
    const chain = await this.ledger.verify({
      onEntry: (e) => {
        if (e.type === 'disbursement')
          check.remember({ seq: e.seq, loanId: e.loanId, amount: e.amount, idempotencyKey: e.idempotencyKey });
      },
    });
    const records = new Map<string, DisbursementDoc>();
    for await (const record of this.collection.find({})) records.set(record._id, record);
    const applications = new Map<string, DisbursableApplication>();
    for await (const app of this.applications.find(disbursementQueries.disbursedOrDisbursing, {
      projection: { _id: 1, status: 1, disbursement: 1 },
    })) {
      applications.set(app._id, app);
    }
    check.checkEntries(records);
    await check.checkRecords(records, applications);
    await check.checkApplications(applications, records);
    const { mismatches } = check;
    const shown = mismatches.slice(0, MAX_MISMATCHES);
    return {
      ...chain,
      ok: chain.ok && mismatches.length === 0,
      disbursements: records.size,
      applications: applications.size,
      mismatches: shown,
      ...(mismatches.length > shown.length ? { mismatchesOmitted: mismatches.length - shown.length } : {}),
    };
  }

  /**
   * Disburses the approved application once. The same key again returns the same result (finishing what
   * a crashed attempt began); another key for a loan already disbursing or disbursed is a ConflictError
   * whose `current` is the disbursement. NotFoundError for an unknown application; ValidationError when
   * it is not approved.
   */
  async disburse(applicationId: string, idempotencyKey: string, actor: Actor): Promise<DisbursementResult> {
    if (!idempotencyKeyPattern.test(idempotencyKey)) {
      throw new ValidationError('Idempotency-Key is not valid', [{ path: 'idempotency-key', message: 'bad format' }]);
    }
    // Before anything is claimed: a refused admin must not hold the loan's one disbursement record.
    const app =
      this.fourEyes || tracingEnabled()
        ? await this.applications.findOne(disbursementQueries.application(applicationId), {
            projection: { createdBy: 1, preparedBy: 1, approvedBy: 1, approvalTrace: 1 },
          })
        : null;
    if (app) this.assertFourEyes(app, actor);
    // The money continues the trace its approval ran in (upload -> OCR -> approval -> disbursement), linked
    // both ways with the request (or sweep, or callback) that asked for it, which has a trace of its own.
    const asking = recordingSpan();
    const options = {
      root: true,
      ...(app?.approvalTrace ? { parent: contextOf(app.approvalTrace) } : {}),
      links: app?.approvalTrace ? linkToActive() : [],
      attributes: { 'loan_admin.application.id': applicationId },
    };
    return inSpan('disburse', options, (span) => {
      if (span && app?.approvalTrace) asking?.addLink({ context: span.spanContext() });
      return this.disburseTraced(applicationId, idempotencyKey, actor);
    });
  }

  private async disburseTraced(
    applicationId: string,
    idempotencyKey: string,
    actor: Actor,
  ): Promise<DisbursementResult> {
    // Answered without the lease: a finished disbursement or another key's claim.
    const known = await this.get(applicationId);
    if (known?.state === 'cancelled' && known.idempotencyKey === idempotencyKey) throw cancelledConflict(known);
    if (known && known.state !== 'cancelled' && known.idempotencyKey !== idempotencyKey) throw otherKeyConflict(known);
    if (known?.state === 'disbursed') return resultOf(known);
    return this.locks.withLock(
      loanLockKey(applicationId),
      (lease) => this.disburseUnderLease(applicationId, idempotencyKey, actor, lease),
      {
        waitMs: this.lockWaitMs,
        ...(this.lockTtlMs ? { ttlMs: this.lockTtlMs } : {}),
      },
    );
  }

  private async disburseUnderLease(
    applicationId: string,
    key: string,
    actor: Actor,
    lease: Lease,
  ): Promise<DisbursementResult> {
    const record = await this.claim(applicationId, key, actor, lease);
    if (record.state === 'disbursed') return resultOf(record);

    lease.signal.throwIfAborted();
    let app = await this.recordIntent(applicationId, record, actor, lease);
    await this.step('intent', applicationId);

    if (this.payments && record.payment?.state !== 'paid') {
      lease.signal.throwIfAborted();
      await this.pay(this.payments, record, lease);
    }

    lease.signal.throwIfAborted();
    const { entry } = await this.ledger.append(
      {
        loanId: applicationId,
        type: 'disbursement',
        amount: record.amount,
        idempotencyKey: disbursementLedgerKey(applicationId),
      },
      { lease, signal: lease.signal },
    );
    await this.step('ledger', applicationId);

    lease.signal.throwIfAborted();
    app = await this.markDisbursed(app, record, entry, actor);
    await this.step('application', applicationId);

    const now = new Date(this.clock.now());
    await this.collection.updateOne(
      disbursementQueries.ownedBy(applicationId, key),
      disbursementQueries.done(entry, now),
    );
    await this.step('record', applicationId);
    return resultOf({ ...record, state: 'disbursed', ledgerSeq: entry.seq, disbursedAt: entry.at });
  }

  /**
   * Step payment: the provider pays under the loan's payment identity, or the record says why not yet.
   * Only the key that owns the record writes it; 'paid' is never overwritten (a callback may land first).
   */
  private async pay(payments: PaymentProvider, record: DisbursementDoc, lease: Lease): Promise<void> {
    const applicationId = record._id;
    const owned = disbursementQueries.ownedBy(applicationId, record.idempotencyKey);
    const notPaid = { ...owned, 'payment.state': { $ne: 'paid' } } as Filter<DisbursementDoc>;
    const unsettled = async (state: PaymentState, message: string) => {
      await this.collection.updateOne(notPaid, {
        $set: { 'payment.state': state, 'payment.lastError': message, updatedAt: new Date(this.clock.now()) },
        $inc: { 'payment.attempts': 1 },
      });
    };
    try {
      const receipt = await payments.pay(
        {
          idempotencyKey: paymentKey(applicationId, record.attempt),
          applicationId,
          amount: record.amount,
          reference: record.idempotencyKey,
        },
        lease.signal,
      );
      await this.collection.updateOne(notPaid, {
        $set: {
          'payment.state': 'paid',
          'payment.paymentId': receipt.paymentId,
          'payment.via': 'answer',
          updatedAt: new Date(this.clock.now()),
        },
      });
    } catch (error) {
      if (error instanceof PaymentUnavailableError) {
        await unsettled('pending', error.message);
        const current = (await this.get(applicationId)) ?? record;
        // A callback may have recorded the payment while we waited: then go on.
        if (current.payment?.state === 'paid') return;
        throw new PendingPaymentError(viewOf(current), error.message);
      }
      if (error instanceof PaymentRefusedError) await unsettled('refused', error.message);
      throw error;
    }
  }

  /**
   * The provider's (signature-checked) callback: records the payment of the loan whose payment identity it
   * names, then completes the disbursement under its lease as the admin who asked for it. Harmless when
   * repeated or late. Returns what it found: unknown (no such disbursement), or the record's state after.
   */
  async paymentCallback(key: string, paymentId: string): Promise<'unknown' | DisbursementState | 'pending'> {
    const named = parsePaymentKey(key);
    if (!named) return 'unknown';
    const record = await this.get(named.applicationId);
    // An attempt that is not the record's current one (a cancelled attempt) completes nothing.
    if (!record || (record.attempt ?? 0) !== named.attempt) return 'unknown';
    if (record.state !== 'disbursing') return record.state;
    await this.collection.updateOne(
      {
        _id: record._id,
        idempotencyKey: record.idempotencyKey,
        state: 'disbursing',
        'payment.state': { $ne: 'paid' },
      } as Filter<DisbursementDoc>,
      {
        $set: {
          'payment.state': 'paid',
          'payment.paymentId': paymentId,
          'payment.via': 'callback',
          updatedAt: new Date(this.clock.now()),
        },
      },
    );
    return this.resume(record);
  }

  /**
   * Completes disbursements left unfinished (a provider that was down, a process that died) whose record
   * has not moved for `olderThanMs`: each under its lease, as the admin who asked. API instances run
   * it on an interval. Returns how many it completed and how many are still pending.
   */
  async resumePending(olderThanMs: number, limit = 100): Promise<{ completed: number; pending: number }> {
    const before = new Date(this.clock.now() - olderThanMs);
    const stuck = await this.collection
      .find({ state: 'disbursing', updatedAt: { $lte: before }, 'payment.state': { $ne: 'refused' } })
      .limit(limit)
      .toArray();
    let completed = 0;
    let pending = 0;
    for (const record of stuck) {
      const state = await this.resume(record).catch(() => 'pending' as const);
      if (state === 'disbursed') completed++;
      else pending++;
    }
    return { completed, pending };
  }

  private async resume(record: DisbursementDoc): Promise<DisbursementState | 'pending'> {
    try {
      await this.disburse(record._id, record.idempotencyKey, { id: record.requestedBy });
      return 'disbursed';
    } catch (error) {
      if (error instanceof PendingPaymentError) return 'pending';
      throw error;
    }
  }

  private async step(step: DisbursementStep, applicationId: string): Promise<void> {
    await this.onStep?.(step, applicationId);
  }

  /** The loan's one disbursement record: ours (new or resumed), or a ConflictError for another key. */
  private async claim(applicationId: string, key: string, actor: Actor, lease: Lease): Promise<DisbursementDoc> {
    const existing = await this.get(applicationId);
    if (existing?.state === 'cancelled') return this.reclaim(existing, key, actor, lease);
    if (existing) {
      if (existing.idempotencyKey !== key) throw otherKeyConflict(existing);
      return existing;
    }
    const app = await this.applications.findOne(disbursementQueries.application(applicationId));
    if (!app) throw new NotFoundError(`application ${applicationId} not found`);
    this.assertDisbursable(app);
    const at = new Date(this.clock.now());
    const record: DisbursementDoc = {
      _id: applicationId,
      idempotencyKey: key,
      state: 'disbursing',
      amount: app.loanAmount,
      requestedBy: actor.id,
      token: lease.token,
      createdAt: at,
      updatedAt: at,
    };
    try {
      await this.collection.insertOne(record);
    } catch (error) {
      if (!isDuplicateKeyError(error)) throw error;
      // Someone claimed it between our read and our insert (only possible past a lost lease).
      const winner = await this.get(applicationId);
      if (winner && winner.idempotencyKey !== key) throw otherKeyConflict(winner);
      if (winner) return winner;
      throw error;
    }
    await this.step('claim', applicationId);
    return record;
  }

  /** A new key takes a cancelled record as its next attempt; the cancelled key itself gets a 409. */
  private async reclaim(cancelled: DisbursementDoc, key: string, actor: Actor, lease: Lease): Promise<DisbursementDoc> {
    if (cancelled.idempotencyKey === key) throw cancelledConflict(cancelled);
    const app = await this.applications.findOne(disbursementQueries.application(cancelled._id));
    if (!app) throw new NotFoundError(`application ${cancelled._id} not found`);
    this.assertDisbursable(app);
    const at = new Date(this.clock.now());
    const record = await this.collection.findOneAndUpdate(
      disbursementQueries.reclaimable(cancelled),
      disbursementQueries.reclaim(key, app.loanAmount, actor.id, lease.token, at),
      { returnDocument: 'after' },
    );
    if (record) {
      await this.step('claim', cancelled._id);
      return record;
    }
    // Claimed again between our read and write (only possible past a lost lease).
    const winner = await this.get(cancelled._id);
    if (winner && winner.idempotencyKey === key) return winner;
    throw winner ? otherKeyConflict(winner) : new NotFoundError(`disbursement ${cancelled._id} not found`);
  }

  /**
   * Cancels a disbursement whose payment the provider refused, so that the loan can be disbursed again
   * (with a new Idempotency-Key, as a new attempt): under the loan's lease, the intent leaves the
   * application first (a versioned, logged, audited change; the application stays approved), then the
   * record becomes 'cancelled' and remembers the attempt. A crash between the two is finished by calling
   * it again. NotFoundError without a disbursement; ConflictError (with the disbursement) for one that is
   * not refused: pending, paid, disbursed or already cancelled.
   */
  async cancelRefused(applicationId: string, actor: Actor): Promise<DisbursementView> {
    return this.locks.withLock(
      loanLockKey(applicationId),
      async (lease) => {
        const record = await this.get(applicationId);
        if (!record) throw new NotFoundError(`application ${applicationId} has no disbursement`);
        if (record.state !== 'disbursing' || record.payment?.state !== 'refused') {
          throw new ConflictError(
            `only a disbursement whose payment was refused can be cancelled; this one is ${stateOf(record)}`,
            viewOf(record),
          );
        }
        lease.signal.throwIfAborted();
        await this.cancelIntent(record, actor);
        lease.signal.throwIfAborted();
        const at = new Date(this.clock.now());
        const cancelled = await this.collection.findOneAndUpdate(
          disbursementQueries.refused(record),
          disbursementQueries.cancelled(record, actor.id, at),
          { returnDocument: 'after' },
        );
        if (!cancelled) {
          const now = await this.get(applicationId);
          throw new ConflictError(
            `disbursement ${applicationId} changed while it was being cancelled`,
            now && viewOf(now),
          );
        }
        return viewOf(cancelled);
      },
      { waitMs: this.lockWaitMs, ...(this.lockTtlMs ? { ttlMs: this.lockTtlMs } : {}) },
    );
  }

  /** The refused attempt's intent leaves the application, or already has (a cancel finished after a crash). */
  private async cancelIntent(record: DisbursementDoc, actor: Actor): Promise<void> {
    await retryOnConflict(
      3,
      async () => {
        const app = await this.applications.findOne(disbursementQueries.application(record._id));
        if (!app) throw new NotFoundError(`application ${record._id} not found`);
        if (app.disbursement?.idempotencyKey !== record.idempotencyKey) return;
        const at = new Date(this.clock.now());
        const updated = await this.applications.findOneAndUpdate(
          disbursementQueries.intentCancellable(record._id, app.version, record.idempotencyKey),
          disbursementQueries.cancelIntent(this.changeMeta(at, actor, app.status, app.version + 1)),
          { returnDocument: 'after' },
        );
        if (updated) {
          await this.recordAudit(updated);
          return;
        }
        return writeMissed;
      },
      async () => {
        const current = await this.applications.findOne(disbursementQueries.application(record._id));
        return new ConflictError(
          `application ${record._id} kept changing; retry`,
          current && publicApplication(current),
        );
      },
    );
  }

  private assertFourEyes(
    app: Pick<DisbursableApplication, '_id' | 'createdBy' | 'preparedBy' | 'approvedBy'>,
    actor: Actor,
  ) {
    if (!this.fourEyes) return;
    const rule = fourEyesRefusal('disburse', app, actor.id);
    if (rule) throw fourEyesError(rule, app._id);
  }

  private assertDisbursable(app: DisbursableApplication): void {
    if (app.status === 'approved') return;
    if (app.status === 'disbursed') {
      // Disbursed without a record here: moved by some other path. Nothing we may do again.
      throw new ConflictError(`application ${app._id} is already disbursed`, publicApplication(app));
    }
    throw new ValidationError(`cannot disburse an application that is ${app.status}; it must be approved`, {
      reason: 'invalid_transition',
      from: app.status,
      to: 'disbursed',
    });
  }

  /** Step intent: the application records the disbursement, or already does (resume). */
  private async recordIntent(
    applicationId: string,
    record: DisbursementDoc,
    actor: Actor,
    lease: Lease,
  ): Promise<DisbursableApplication> {
    return retryOnConflict(
      3,
      async () => {
        const app = await this.applications.findOne(disbursementQueries.application(applicationId));
        if (!app) throw new NotFoundError(`application ${applicationId} not found`);
        // On the version this loop writes (its filter repeats the rule).
        this.assertFourEyes(app, actor);
        if (app.disbursement) {
          if (app.disbursement.idempotencyKey !== record.idempotencyKey) {
            throw new ConflictError(
              `application ${applicationId} records another disbursement`,
              publicApplication(app),
            );
          }
          // Resuming: the intent is there; redo its audit entry in case the crash came before it.
          await this.recordAudit(app);
          return app;
        }
        this.assertDisbursable(app);
        const at = new Date(this.clock.now());
        const intent: DisbursementIntent = {
          idempotencyKey: record.idempotencyKey,
          amount: record.amount,
          token: lease.token,
          state: 'disbursing',
          startedAt: at,
        };
        const meta = this.changeMeta(at, actor, 'approved', app.version + 1);
        const updated = await this.applications.findOneAndUpdate(
          disbursementQueries.intentWritable(applicationId, app.version, this.fourEyes ? actor.id : undefined),
          disbursementQueries.recordIntent(intent, meta),
          { returnDocument: 'after' },
        );
        if (updated) {
          await this.recordAudit(updated);
          return updated;
        }
        // Changed between our read and write: read again and decide again.
        return writeMissed;
      },
      async () => {
        const current = await this.applications.findOne(disbursementQueries.application(applicationId));
        return new ConflictError(
          `application ${applicationId} kept changing; retry`,
          current && publicApplication(current),
        );
      },
    );
  }

  /** Step application: approved -> disbursed at the version read, or already done (resume). */
  private async markDisbursed(
    read: DisbursableApplication,
    record: DisbursementDoc,
    entry: LedgerEntry,
    actor: Actor,
  ): Promise<DisbursableApplication> {
    let app: DisbursableApplication | null = read;
    return retryOnConflict(
      3,
      async () => {
        if (!app) throw new NotFoundError(`application ${read._id} not found`);
        if (app.status === 'disbursed' && app.disbursement?.idempotencyKey === record.idempotencyKey) {
          await this.recordAudit(app);
          return app;
        }
        if (app.status !== 'approved' || app.disbursement?.idempotencyKey !== record.idempotencyKey) {
          throw new ConflictError(`application ${app._id} moved away from its disbursement`, publicApplication(app));
        }
        const at = new Date(this.clock.now());
        const updated = await this.applications.findOneAndUpdate(
          disbursementQueries.finalWritable(app._id, app.version, record.idempotencyKey),
          disbursementQueries.markDisbursed(entry, this.changeMeta(at, actor, 'approved', app.version + 1)),
          { returnDocument: 'after' },
        );
        if (updated) {
          await this.recordAudit(updated);
          return updated;
        }
        app = await this.applications.findOne(disbursementQueries.application(read._id));
        return writeMissed;
      },
      () => new ConflictError(`application ${read._id} kept changing; retry`, app && publicApplication(app)),
    );
  }

  private changeMeta(at: Date, actor: Actor, from: ApplicationStatus, version: number): ChangeMeta {
    const lastChange: LastChange = { at, actor: actor.id, action: 'update', from, fields: ['disbursement'], version };
    if (actor.requestId) lastChange.requestId = actor.requestId;
    return { at, actor: actor.id, lastChange };
  }

  /** The audit entry of the application's latest change (keyed by version: writing it twice is harmless). */
  private async recordAudit(app: DisbursableApplication): Promise<void> {
    const change = app.lastChange;
    if (!change?.fields?.includes('disbursement')) return;
    const entry: AuditEntry = {
      _id: auditId(app._id, app.version),
      at: change.at,
      actor: change.actor,
      action: change.action,
      applicationId: app._id,
      from: change.from ?? null,
      to: app.status,
      version: app.version,
      fields: change.fields,
      ...(change.requestId ? { requestId: change.requestId } : {}),
    };
    await this.audit.record([entry]);
  }
}

function publicApplication(
  app: DisbursableApplication,
): Omit<DisbursableApplication, 'lastChange' | 'changes' | 'changeHead'> {
  const { lastChange: _omitted, changes: _log, changeHead: _head, ...rest } = app;
  return rest;
}
