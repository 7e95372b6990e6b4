import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadDotEnv } from '../../api/dotenv.ts';
import { apiConfigSchema, databaseNameOf, loadConfig } from '../../shared/core/config.ts';
import { ConfigError } from '../../shared/core/errors.ts';

describe('loadConfig', () => {
  it('applies safe defaults', () => {
    const config = loadConfig({ MONGO_URL: 'mongodb://127.0.0.1:27017' });
    expect(config).toMatchObject({ MONGO_DB: 'loan_admin', DB_POOL_MAX: 50, PORT: 3000, LEASE_TTL_MS: 15_000 });
  });

  it('coerces numbers from strings', () => {
    expect(loadConfig({ MONGO_URL: 'mongodb://h', DB_POOL_MAX: '7', PORT: '8080' })).toMatchObject({
      DB_POOL_MAX: 7,
      PORT: 8080,
    });
  });

  it('lists every problem in one error', () => {
    let error: unknown;
    try {
      loadConfig({ DB_POOL_MAX: '0', PORT: 'eighty', LOG_LEVEL: 'loud', MONGO_DB: 'a/b' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as ConfigError).message;
    for (const name of ['MONGO_URL', 'DB_POOL_MAX', 'PORT', 'LOG_LEVEL', 'MONGO_DB']) expect(message).toContain(name);
    expect((error as ConfigError).details).toHaveLength(5);
  });

  it('refuses a URL that is not a MongoDB URL', () => {
    expect(() => loadConfig({ MONGO_URL: 'http://example' })).toThrow(/MONGO_URL: must start with mongodb/);
  });

  it('the API needs LEDGER_KEYS: kid:base64secret pairs with secrets of at least 32 bytes', () => {
    const base = { MONGO_URL: 'mongodb://h', JWT_KEYS: `j:${btoa('j'.repeat(32))}` };
    const ledgerKeys = (value?: string) => () => loadConfig({ ...base, LEDGER_KEYS: value }, apiConfigSchema);
    expect(ledgerKeys()).toThrow(/LEDGER_KEYS: is required/);
    expect(ledgerKeys('no-kid')).toThrow(/LEDGER_KEYS: must be kid:base64secret/);
    expect(ledgerKeys(`k1:${btoa('short')}`)).toThrow(/LEDGER_KEYS: every secret must be base64 of at least 32 bytes/);
    const two = `k2:${btoa('b'.repeat(32))}, k1:${btoa('a'.repeat(40))}`;
    expect(ledgerKeys(two)()).toMatchObject({ LEDGER_KEYS: two });
  });

  it('takes MONGO_URI as MONGO_URL, and the database named in its path when MONGO_DB is unset', () => {
    expect(loadConfig({ MONGO_URI: 'mongodb://db.example:27017/loans?replicaSet=rs0' })).toMatchObject({
      MONGO_URL: 'mongodb://db.example:27017/loans?replicaSet=rs0',
      MONGO_DB: 'loans',
    });
    expect(loadConfig({ MONGO_URI: 'mongodb+srv://u:p@cluster.example/loan-prod' }).MONGO_DB).toBe('loan-prod');
    // Several hosts, a path under MONGO_URL works the same; no path keeps the default.
    expect(loadConfig({ MONGO_URL: 'mongodb://a:1,b:2/other' }).MONGO_DB).toBe('other');
    expect(loadConfig({ MONGO_URI: 'mongodb://h:1/?replicaSet=rs0' }).MONGO_DB).toBe('loan_admin');
    expect(loadConfig({ MONGO_URI: 'mongodb://h:1' }).MONGO_DB).toBe('loan_admin');
  });

  it('MONGO_DB wins over the path; MONGO_URI and MONGO_URL that differ are refused, naming both', () => {
    expect(loadConfig({ MONGO_URI: 'mongodb://h/loans', MONGO_DB: 'explicit' }).MONGO_DB).toBe('explicit');
    expect(loadConfig({ MONGO_URI: 'mongodb://h/loans', MONGO_URL: 'mongodb://h/loans' }).MONGO_DB).toBe('loans');
    expect(() => loadConfig({ MONGO_URI: 'mongodb://a/x', MONGO_URL: 'mongodb://b/x' })).toThrow(
      /MONGO_URI: differs from MONGO_URL/,
    );
    // A path that is no valid database name is reported under MONGO_DB, not used.
    expect(() => loadConfig({ MONGO_URI: 'mongodb://h/a%2Fb' })).toThrow(/MONGO_DB: must be/);
    expect(() => loadConfig({})).toThrow(/MONGO_URL: is required .*MONGO_URI also works/);
    expect(databaseNameOf('mongodb://h:1/db%5Fname?x=1')).toBe('db_name');
  });
});

describe('loadDotEnv', () => {
  it('fills unset variables from the file, keeps those already set, and is a no-op without a file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dotenv-'));
    const names = ['DOTENV_TEST_A', 'DOTENV_TEST_B', 'DOTENV_TEST_C'];
    try {
      writeFileSync(join(dir, '.env'), 'DOTENV_TEST_A=from-file\nDOTENV_TEST_B="quoted value"\n# a comment\n');
      process.env.DOTENV_TEST_A = 'from-environment';
      expect(loadDotEnv(join(dir, '.env'))).toBe(true);
      expect(process.env.DOTENV_TEST_A).toBe('from-environment');
      expect(process.env.DOTENV_TEST_B).toBe('quoted value');
      expect(loadDotEnv(join(dir, 'missing.env'))).toBe(false);
      expect(process.env.DOTENV_TEST_C).toBeUndefined();
    } finally {
      for (const name of names) delete process.env[name];
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
