import { describe, expect, it, vi } from 'vitest';
import { hashPassword, needsRehash, verifyPassword, verifyPasswordAtCost } from '../../shared/identity/password.ts';

describe('password hashing (PBKDF2-SHA256)', () => {
  it('verifies the right password and refuses a wrong one', async () => {
    const stored = await hashPassword('correct horse battery staple', 1000);
    expect(stored).toMatch(/^pbkdf2-sha256\$1000\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}$/);
    expect(await verifyPassword('correct horse battery staple', stored)).toBe(true);
    expect(await verifyPassword('correct horse battery stapler', stored)).toBe(false);
  });

  it('salts: the same password hashes differently twice', async () => {
    expect(await hashPassword('pw', 1000)).not.toBe(await hashPassword('pw', 1000));
  });

  it('refuses malformed stored values instead of throwing', async () => {
    for (const stored of ['', 'plain', 'md5$1$a$b', 'pbkdf2-sha256$-1$AA==$AA==', 'pbkdf2-sha256$10$$']) {
      expect(await verifyPassword('pw', stored)).toBe(false);
    }
  });

  it('asks for a rehash when the stored iteration count is below the current one', async () => {
    const weak = await hashPassword('pw', 1000);
    expect(needsRehash(weak, 600_000)).toBe(true);
    expect(needsRehash(weak, 1000)).toBe(false);
  });

  it('verifyPasswordAtCost spends the given iterations whatever is stored, and still tells right from wrong', async () => {
    const weak = await hashPassword('pw', 1000);
    const current = await hashPassword('pw', 3000);
    const stronger = await hashPassword('pw', 5000);
    const cases: [string, string | null, boolean, number][] = [
      ['pw', weak, true, 3000],
      ['wrong', weak, false, 3000],
      ['pw', current, true, 3000],
      ['wrong', current, false, 3000],
      ['pw', null, false, 3000],
      ['pw', 'pbkdf2-sha256$1000$not base64!$AA==', false, 3000],
      // A hash stronger than asked costs what it costs: nothing is taken away.
      ['wrong', stronger, false, 5000],
    ];
    for (const [password, stored, expected, iterations] of cases) {
      const deriveBits = vi.spyOn(crypto.subtle, 'deriveBits');
      try {
        expect(await verifyPasswordAtCost(password, stored, 3000)).toBe(expected);
        const spent = deriveBits.mock.calls.reduce(
          (sum, [params]) => sum + ((params as Pbkdf2Params).iterations ?? 0),
          0,
        );
        expect({ stored, spent }).toEqual({ stored, spent: iterations });
      } finally {
        deriveBits.mockRestore();
      }
    }
  });
});
