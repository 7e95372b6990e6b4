// Re-keys the ledger with LEDGER_SIGNING_KID (default: the first of LEDGER_KEYS): once after upgrading a
// database whose entries were written with plain SHA-256, or to retire a ledger key. Checks every entry
// under its own scheme first and stops at the first one that does not hold (nothing after it is touched);
// plain SHA-256 entries are accepted only before the first keyed entry. Run it with the API stopped. It
// prints the last plain seq before it starts: if a run stops halfway, rerun with --legacy-through <that seq>
// (the database alone cannot tell a half-done run from a suffix rewritten without the key).
//
//   MONGO_URL=mongodb://127.0.0.1:27017 MONGO_DB=loan_admin LEDGER_KEYS=... npx node scripts/ledger-rekey.ts
import { parseArgs } from 'node:util';
import { loadConfig } from '../shared/core/config.ts';
import { connect } from '../shared/core/db.ts';
import { Ledger, LedgerKeys } from '../shared/loans/ledger.ts';

const config = (() => {
  try {
    return loadConfig(process.env);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(2);
  }
})();
if (!config.LEDGER_KEYS) {
  process.stderr.write('LEDGER_KEYS is required (kid:base64secret[,kid2:base64secret2])\n');
  process.exit(2);
}

const { values } = parseArgs({ options: { 'legacy-through': { type: 'string' } } });
const legacyThrough = values['legacy-through'] === undefined ? undefined : Number(values['legacy-through']);
if (legacyThrough !== undefined && !Number.isSafeInteger(legacyThrough)) {
  process.stderr.write('--legacy-through must be a seq number\n');
  process.exit(2);
}

const keys = LedgerKeys.parse(config.LEDGER_KEYS, config.LEDGER_SIGNING_KID);
const database = await connect(config);
try {
  const ledger = new Ledger(database.db, { keys });
  // Only a chain that starts plain is an upgrade to note; later plain entries are what the run refuses.
  const first = await ledger.entryBySeq(1);
  const lastPlain =
    first && first.kid === undefined
      ? await ledger.entries.findOne({ kid: { $exists: false } }, { sort: { _id: -1 }, projection: { _id: 1 } })
      : null;
  if (lastPlain) {
    process.stdout.write(
      `plain SHA-256 entries up to seq ${lastPlain._id}; if this run stops, rerun with --legacy-through ${lastPlain._id}\n`,
    );
  }
  const result = await ledger.rekey({
    ...(legacyThrough === undefined ? {} : { legacyThrough }),
    onProgress: (seq) => {
      if (seq % 10_000 === 0) process.stdout.write(`re-keyed through seq ${seq}\n`);
    },
  });
  process.stdout.write(
    `${result.entries} entries checked (${result.legacy} plain SHA-256), ${result.rekeyed} re-keyed with ` +
      `${keys.signingKid}; head ${result.head ? `${result.head.seq} ${result.head.hash}` : '(empty ledger)'}\n`,
  );
  const verified = await ledger.verify();
  process.stdout.write(`verify: ${JSON.stringify(verified)}\n`);
  process.exitCode = verified.ok ? 0 : 1;
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exitCode = 1;
} finally {
  await database.close();
}
