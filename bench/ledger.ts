// Ledger appends per second with 1 and with 10 concurrent writers (plain and fenced under a lease), the
// exact MongoDB commands per append (command monitoring; lost seq races included), an idempotent re-append,
// and verify throughput over a long chain. Entries are keyed (HMAC-SHA-256) with a random ledger key.
// Run: npx node bench/ledger.ts   (starts the offline server unless MONGO_URL is set)
// Knobs: LEDGER_BENCH_N (appends per scenario, 1000), LEDGER_BENCH_WRITERS (10), LEDGER_BENCH_VERIFY_N (20000).
import { availableParallelism } from 'node:os';
import { type Lease, LockManager } from '../shared/concurrency/leases.ts';
import { systemClock } from '../shared/core/clock.ts';
import { ensureIndexes } from '../shared/core/db.ts';
import { APPLICATIONS_COLLECTION } from '../shared/loans/applications.ts';
import { DISBURSEMENTS_COLLECTION, type DisbursementDoc, Disbursements } from '../shared/loans/disbursements.ts';
import {
  entryHash,
  GENESIS_HASH,
  LEDGER_HEADS_COLLECTION,
  Ledger,
  type LedgerDoc,
  type LedgerEntry,
  LedgerKeys,
  type LedgerStats,
  ledgerIndexes,
  loanLockKey,
} from '../shared/loans/ledger.ts';
import { countingClient, markdownTable, printPreamble, round, startBenchServer, summarize } from './support.ts';

const n = Number(process.env.LEDGER_BENCH_N ?? 1000);
const writers = Number(process.env.LEDGER_BENCH_WRITERS ?? 10);
const verifyN = Number(process.env.LEDGER_BENCH_VERIFY_N ?? 20_000);

const keys = new LedgerKeys(new Map([['bench', crypto.getRandomValues(new Uint8Array(32))]]));

const server = await startBenchServer();
const counting = countingClient(server.url, { maxPoolSize: writers * 2 + 5 });
await counting.client.connect();
const db = counting.client.db(`bench_ledger_${process.pid}`);

interface Row {
  scenario: string;
  appends: number;
  seconds: number;
  latencies: number[];
  commands: string;
  commandsTotal: number;
  collisions: number;
}

async function freshLedger(name: string): Promise<void> {
  await ensureIndexes(db, [{ ...ledgerIndexes, collection: name }]);
}

const sumStats = (ledgers: Ledger[], field: keyof LedgerStats) => ledgers.reduce((s, l) => s + l.stats[field], 0);

/**
 * `count` writers, each appending n / count entries back to back, optionally each under its own loan lease.
 * `instances`: 'shared' = one Ledger for all (one API process: its appends queue FIFO); 'own' = a Ledger
 * per writer (as many processes, racing for the tail).
 */
async function appendScenario(
  scenario: string,
  name: string,
  count: number,
  options: { fenced: boolean; instances: 'shared' | 'own' },
): Promise<Row> {
  await freshLedger(name);
  const shared = new Ledger(db, { collection: name, keys });
  const ledgers = Array.from({ length: count }, () =>
    options.instances === 'shared' ? shared : new Ledger(db, { collection: name, keys }),
  );
  const fenced = options.fenced;
  const locks = new LockManager(db, { ttlMs: 600_000 });
  const leases: (Lease | null)[] = fenced
    ? await Promise.all(ledgers.map((_, w) => locks.acquire(loanLockKey(`APP-bench-${w}`))))
    : ledgers.map(() => null);
  const per = Math.ceil(n / count);
  const latencies: number[] = [];
  counting.reset();
  const t0 = performance.now();
  await Promise.all(
    ledgers.map(async (ledger, w) => {
      for (let i = 0; i < per; i++) {
        const start = performance.now();
        await ledger.append(
          { loanId: `APP-bench-${w}`, type: 'disbursement', amount: 1000 + i, idempotencyKey: `${name}:${w}:${i}` },
          leases[w] ? { lease: leases[w]! } : {},
        );
        latencies.push(performance.now() - start);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const appends = per * count;
  const row: Row = {
    scenario,
    appends,
    seconds,
    latencies,
    commands: counting.perOperation(appends),
    commandsTotal: counting.total() / appends,
    collisions: sumStats([...new Set(ledgers)], 'seqCollisions') / appends,
  };
  for (const lease of leases) if (lease) await locks.release(lease);
  const verified = await new Ledger(db, { collection: name, keys }).verify();
  if (!verified.ok || verified.entries !== appends)
    throw new Error(`${scenario}: chain broken ${JSON.stringify(verified)}`);
  return row;
}

/** Re-appending an entry whose idempotency key is already in the ledger: what a retried disbursement costs. */
async function idempotentScenario(): Promise<Row> {
  const name = 'ledger_idem';
  await freshLedger(name);
  const ledger = new Ledger(db, { collection: name, keys });
  const input = { loanId: 'APP-bench-idem', type: 'disbursement' as const, amount: 5, idempotencyKey: 'idem' };
  await ledger.append(input);
  const repeats = Math.min(n, 500);
  const latencies: number[] = [];
  counting.reset();
  const t0 = performance.now();
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    const { created } = await ledger.append(input);
    if (created) throw new Error('idempotent append wrote a second entry');
    latencies.push(performance.now() - start);
  }
  return {
    scenario: '1 writer, same idempotency key again',
    appends: repeats,
    seconds: (performance.now() - t0) / 1000,
    latencies,
    commands: counting.perOperation(repeats),
    commandsTotal: counting.total() / repeats,
    collisions: 0,
  };
}

/**
 * A valid chain of `count` entries written directly (hashes computed here), then verify() over it; then a
 * disbursement record and a disbursed application for every entry, and the whole GET /api/ledger/verify
 * (chain + cross-check) over them.
 */
async function verifyScenario(count: number) {
  const name = 'ledger_verify';
  await freshLedger(name);
  let prevHash = GENESIS_HASH;
  const at = new Date();
  for (let from = 1; from <= count; from += 1000) {
    const docs: LedgerDoc[] = [];
    for (let seq = from; seq < Math.min(from + 1000, count + 1); seq++) {
      const unhashed: Omit<LedgerEntry, 'hash'> = {
        seq,
        loanId: `APP-verify-${seq}`,
        type: 'disbursement',
        amount: 100 + seq,
        at,
        prevHash,
        idempotencyKey: `disbursement:APP-verify-${seq}`,
        kid: keys.signingKid,
      };
      const hash = await entryHash(unhashed, keys);
      const { seq: _id, ...rest } = unhashed;
      docs.push({ _id, ...rest, hash });
      prevHash = hash;
    }
    await db.collection<LedgerDoc>(name).insertMany(docs);
  }
  await db.collection(LEDGER_HEADS_COLLECTION).insertOne({ _id: name as never, seq: count, hash: prevHash });
  const ledger = new Ledger(db, { collection: name, keys });
  counting.reset();
  const t0 = performance.now();
  const result = await ledger.verify();
  const seconds = (performance.now() - t0) / 1000;
  if (!result.ok || result.entries !== count) throw new Error(`verify failed: ${JSON.stringify(result)}`);
  const chain = { what: 'chain only (Ledger.verify)', entries: count, seconds, commands: counting.perOperation(1) };

  for (let from = 1; from <= count; from += 1000) {
    const seqs = Array.from({ length: Math.min(1000, count + 1 - from) }, (_, i) => from + i);
    await db.collection<DisbursementDoc>(DISBURSEMENTS_COLLECTION).insertMany(
      seqs.map((seq) => ({
        _id: `APP-verify-${seq}`,
        idempotencyKey: `key-${seq}`,
        state: 'disbursed' as const,
        amount: 100 + seq,
        requestedBy: 'bench',
        token: 1,
        createdAt: at,
        updatedAt: at,
        ledgerSeq: seq,
        disbursedAt: at,
      })),
    );
    await db.collection(APPLICATIONS_COLLECTION).insertMany(
      seqs.map((seq) => ({
        _id: `APP-verify-${seq}` as never,
        status: 'disbursed',
        loanAmount: 100 + seq,
        disbursement: { idempotencyKey: `key-${seq}`, amount: 100 + seq, token: 1, state: 'disbursed', ledgerSeq: seq },
      })),
    );
  }
  const disbursements = new Disbursements(db, { ledger, locks: new LockManager(db), clock: systemClock });
  counting.reset();
  const t1 = performance.now();
  const crossChecked = await disbursements.verifyLedger();
  const crossSeconds = (performance.now() - t1) / 1000;
  if (!crossChecked.ok || crossChecked.disbursements !== count) {
    throw new Error(`cross-check failed: ${JSON.stringify(crossChecked).slice(0, 500)}`);
  }
  const full = {
    what: 'chain + cross-check (GET /api/ledger/verify)',
    entries: count,
    seconds: crossSeconds,
    commands: counting.perOperation(1),
  };
  return [chain, full];
}

const rows = [
  await appendScenario('1 writer', 'ledger_1', 1, { fenced: false, instances: 'own' }),
  await appendScenario(`${writers} concurrent writers, one process`, 'ledger_n', writers, {
    fenced: false,
    instances: 'shared',
  }),
  await appendScenario(`${writers} concurrent writers, one process, fenced`, 'ledger_nf', writers, {
    fenced: true,
    instances: 'shared',
  }),
  await appendScenario(`${writers} writers as ${writers} processes (racing)`, 'ledger_np', writers, {
    fenced: false,
    instances: 'own',
  }),
  await appendScenario(`${writers} writers as ${writers} processes, fenced`, 'ledger_npf', writers, {
    fenced: true,
    instances: 'own',
  }),
  await idempotentScenario(),
];
const verified = await verifyScenario(verifyN);
await db.dropDatabase();
await counting.client.close();
await server.stop();

printPreamble(
  'shared/loans/ledger: appends and verify',
  `npx node bench/ledger.ts (LEDGER_BENCH_N=${n} LEDGER_BENCH_WRITERS=${writers} LEDGER_BENCH_VERIFY_N=${verifyN}; MONGO_URL=... for another server)`,
  server,
);
console.log(`${availableParallelism()} cores; writers share one MongoClient (one API process).\n`);
console.log(
  markdownTable(
    [
      'scenario',
      'appends',
      'appends/s',
      'p50 ms',
      'p95 ms',
      'p99 ms',
      'commands/append',
      'by command',
      'lost seq races/append',
    ],
    rows.map((row) => {
      const s = summarize(row.latencies);
      return [
        row.scenario,
        row.appends,
        round(row.appends / row.seconds, 0),
        round(s.p50, 2),
        round(s.p95, 2),
        round(s.p99, 2),
        round(row.commandsTotal, 2),
        row.commands,
        round(row.collisions, 2),
      ];
    }),
  ),
);
console.log('\nverify (one cursor in seq order, every HMAC checked with WebCrypto; then records and applications):\n');
console.log(
  markdownTable(
    ['verify', 'entries', 'seconds', 'entries/s', 'commands (whole walk)'],
    verified.map((v) => [v.what, v.entries, round(v.seconds, 2), round(v.entries / v.seconds, 0), v.commands]),
  ),
);
