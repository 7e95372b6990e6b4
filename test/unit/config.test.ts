import { describe, expect, it } from 'vitest';
import { apiConfigSchema, loadConfig } from '../../shared/config.ts';
import { ConfigError } from '../../shared/errors.ts';

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
});
