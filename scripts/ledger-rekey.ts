// Re-keys the ledger with LEDGER_SIGNING_KID (default: the first of LEDGER_KEYS): once after upgrading a
// database whose entries were written with plain SHA-256, or to retire a ledger key. Checks every entry
// under its own scheme first and stops at the first one that does not hold (nothing after it is touched);
// plain SHA-256 entries are accepted only before the first keyed entry. Run it with the API stopped; safe to
// run again after a crash (it continues). Then GET /api/ledger/verify.
//
//   MONGO_URL=mongodb://127.0.0.1:27017 MONGO_DB=loan_admin LEDGER_KEYS=... npx node scripts/ledger-rekey.ts
import { loadConfig } from '../shared/config.ts';
import { connect } from '../shared/db.ts';
import { Ledger, LedgerKeys } from '../shared/ledger.ts';

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

const keys = LedgerKeys.parse(config.LEDGER_KEYS, config.LEDGER_SIGNING_KID);
const database = await connect(config);
try {
  const ledger = new Ledger(database.db, { keys });
  const result = await ledger.rekey((seq) => {
    if (seq % 10_000 === 0) process.stdout.write(`re-keyed through seq ${seq}\n`);
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
