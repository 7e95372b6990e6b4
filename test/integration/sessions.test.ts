// Sessions and revocation across two "instances" (separate clients and caches on one database).
import { SignJWT, UnsecuredJWT } from 'jose';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type Clock, systemClock } from '../../shared/core/clock.ts';
import { ensureIndexes } from '../../shared/core/db.ts';
import { Revocations, revocationIndexes } from '../../shared/identity/revocations.ts';
import { parseJwtKeys, Sessions, sessionIndexes, VERIFY_LEEWAY_S } from '../../shared/identity/sessions.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

const secret = (fill: number) => btoa(String.fromCharCode(...new Uint8Array(32).fill(fill)));
const keys = parseJwtKeys(`k1:${secret(1)},k2:${secret(2)}`);
const admin = { id: 'admin-1', roles: ['admin' as const] };

let database: TestDatabase;
let otherClient: MongoClient;

function instance(
  db: TestDatabase['db'],
  options: { signingKid?: string; clock?: Clock; maxStalenessMs?: number } = {},
) {
  const clock = options.clock ?? systemClock;
  const revocations = new Revocations(db, { retainMs: 900_000, maxStalenessMs: options.maxStalenessMs ?? 300, clock });
  return new Sessions(db, {
    keys,
    signingKid: options.signingKid ?? 'k1',
    accessTtlS: 900,
    refreshTtlS: 86_400,
    clock,
    revocations,
  });
}

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  await ensureIndexes(database.db, [sessionIndexes, revocationIndexes]);
  otherClient = new MongoClient(mongoUrl());
});
afterAll(async () => {
  await otherClient.close();
  await database.close();
});

describe('access tokens', () => {
  it('verify what they issue, with the session id, roles and a kid', async () => {
    const a = instance(database.db);
    const pair = await a.issue(admin);
    expect(pair).toMatchObject({ tokenType: 'Bearer', expiresIn: 900 });
    const claims = await a.verify(pair.accessToken);
    expect(claims).toMatchObject({ sub: 'admin-1', roles: ['admin'] });
    expect(claims.sid).toBe(pair.refreshToken.split('.')[0]);
  });

  it('rotate keys without logging anyone out: a token signed by k1 verifies where k2 signs', async () => {
    const oldSigner = instance(database.db, { signingKid: 'k1' });
    const newSigner = instance(database.db, { signingKid: 'k2' });
    const pair = await oldSigner.issue(admin);
    await expect(newSigner.verify(pair.accessToken)).resolves.toMatchObject({ sub: 'admin-1' });
  });

  it('refuse alg none, an unknown kid, a tampered payload and an expired token', async () => {
    const a = instance(database.db);
    const none = new UnsecuredJWT({ sid: 's', roles: ['admin'] }).setSubject('x').setJti('j').setIssuedAt().encode();
    await expect(a.verify(none)).rejects.toMatchObject({ code: 'unauthorized' });

    const foreign = await new SignJWT({ sid: 's', roles: ['admin'] })
      .setProtectedHeader({ alg: 'HS256', kid: 'k9' })
      .setSubject('x')
      .setJti('j')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(new Uint8Array(32).fill(9));
    await expect(a.verify(foreign)).rejects.toMatchObject({ code: 'unauthorized' });

    const { accessToken } = await a.issue(admin);
    const [header, payload, signature] = accessToken.split('.');
    const raised = btoa(JSON.stringify({ ...JSON.parse(atob(payload!)), roles: ['admin', 'disburser'] })).replace(
      /=+$/,
      '',
    );
    await expect(a.verify(`${header}.${raised}.${signature}`)).rejects.toMatchObject({ code: 'unauthorized' });

    const past: Clock = { now: () => Date.now() - 3_600_000 };
    const expired = await instance(database.db, { clock: past }).issue(admin);
    await expect(a.verify(expired.accessToken)).rejects.toMatchObject({ code: 'token_expired' });
  });
});

describe('a token checked once is not checked by HMAC again on this instance', () => {
  it('the second verify skips the signature check, yet expiry (exactly at exp + leeway) and revocation still apply', async () => {
    const clock = { t: Date.UTC(2026, 0, 1, 12), now: () => clock.t };
    const a = instance(database.db, { clock });
    const pair = await a.issue(admin);
    const hmac = vi.spyOn(crypto.subtle, 'verify');
    try {
      const first = await a.verify(pair.accessToken);
      expect(hmac).toHaveBeenCalledTimes(1);
      await expect(a.verify(pair.accessToken)).resolves.toEqual(first);
      expect(hmac).toHaveBeenCalledTimes(1);
      // A tampered copy is another text: verified whole, and refused.
      const [header, payload, signature] = pair.accessToken.split('.');
      const tampered = `${header}.${payload}.${signature!.slice(0, -2)}${signature!.endsWith('AA') ? 'BA' : 'AA'}`;
      await expect(a.verify(tampered)).rejects.toMatchObject({ code: 'unauthorized' });
      expect(hmac).toHaveBeenCalledTimes(2);
      // Expiry is checked on the remembered claims with jose's rule: valid until floor(now / 1000)
      // reaches exp + leeway.
      clock.t = (first.exp + VERIFY_LEEWAY_S) * 1000 - 1;
      await expect(a.verify(pair.accessToken)).resolves.toEqual(first);
      expect(hmac).toHaveBeenCalledTimes(2);
      clock.t += 1;
      await expect(a.verify(pair.accessToken)).rejects.toMatchObject({ code: 'token_expired' });
      // A clock moved back (it may be injected) verifies whole again, and a logout still ends the token.
      clock.t = first.iat * 1000;
      await expect(a.verify(pair.accessToken)).resolves.toEqual(first);
      expect(hmac).toHaveBeenCalledTimes(4);
      await a.logout(first);
      await expect(a.verify(pair.accessToken)).rejects.toMatchObject({ code: 'token_revoked' });
    } finally {
      hmac.mockRestore();
    }
  });
});

describe('refresh tokens', () => {
  it('rotate on every use; reuse of a rotated one revokes the family, its access tokens included', async () => {
    const a = instance(database.db);
    const first = await a.issue(admin);
    const second = await a.refresh(first.refreshToken);
    expect(second.refreshToken).not.toBe(first.refreshToken);
    const third = await a.refresh(second.refreshToken);
    await expect(a.verify(third.accessToken)).resolves.toBeTruthy();

    await expect(a.refresh(first.refreshToken)).rejects.toMatchObject({ code: 'refresh_reused' });
    await expect(a.refresh(third.refreshToken)).rejects.toMatchObject({ code: 'unauthorized' });
    await expect(a.verify(third.accessToken)).rejects.toMatchObject({ code: 'token_revoked' });
  });

  it('refuse garbage without revoking anything', async () => {
    const a = instance(database.db);
    const pair = await a.issue(admin);
    const sid = pair.refreshToken.split('.')[0];
    for (const bad of ['', 'nodot', '.x', `${sid}.forged`]) {
      await expect(a.refresh(bad)).rejects.toMatchObject({ code: 'unauthorized' });
    }
    await expect(a.refresh(pair.refreshToken)).resolves.toBeTruthy();
  });
});

describe('revocation across instances', () => {
  it('a logout on instance A is refused by instance B within its staleness bound, with no query per request', async () => {
    const a = instance(database.db);
    const b = instance(otherClient.db(database.name), { maxStalenessMs: 300 });
    const pair = await a.issue(admin);
    const claims = await b.verify(pair.accessToken);

    const syncsBefore = b.revocations.syncs;
    for (let i = 0; i < 50; i++) await b.verify(pair.accessToken);
    expect(b.revocations.syncs - syncsBefore).toBeLessThanOrEqual(1);

    await a.logout(claims);
    await expect(a.verify(pair.accessToken)).rejects.toMatchObject({ code: 'token_revoked' });
    const revokedAt = Date.now();
    let refusedAfter = Number.NaN;
    while (Date.now() - revokedAt < 5_000) {
      const ok = await b.verify(pair.accessToken).then(
        () => true,
        () => false,
      );
      if (!ok) {
        refusedAfter = Date.now() - revokedAt;
        break;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(refusedAfter).toBeLessThanOrEqual(1_000);
    await expect(b.refresh(pair.refreshToken)).rejects.toMatchObject({ code: 'unauthorized' });
  });

  it('logout-all refuses every earlier token of that admin everywhere, and not other admins', async () => {
    const a = instance(database.db);
    const b = instance(otherClient.db(database.name), { maxStalenessMs: 200 });
    const one = await a.issue({ id: 'admin-2', roles: ['viewer'] });
    const two = await a.issue({ id: 'admin-2', roles: ['viewer'] });
    const bystander = await a.issue({ id: 'admin-3', roles: ['viewer'] });
    await b.verify(one.accessToken);
    await a.logoutAll('admin-2');
    await new Promise((r) => setTimeout(r, 250));
    await expect(b.verify(one.accessToken)).rejects.toMatchObject({ code: 'token_revoked' });
    await expect(b.verify(two.accessToken)).rejects.toMatchObject({ code: 'token_revoked' });
    await expect(b.refresh(two.refreshToken)).rejects.toMatchObject({ code: 'unauthorized' });
    await expect(b.verify(bystander.accessToken)).resolves.toMatchObject({ sub: 'admin-3' });
  });

  it('a fresh cache on a new instance loads revocations made before it started', async () => {
    const a = instance(database.db);
    const pair = await a.issue(admin);
    await a.logout(await a.verify(pair.accessToken));
    const late = instance(otherClient.db(database.name));
    await expect(late.verify(pair.accessToken)).rejects.toMatchObject({ code: 'token_revoked' });
  });
});

describe('revocations are kept until no token they cover can pass', () => {
  // jose refuses a token once floor(now / 1000) >= exp + leeway: its last accepted instant is
  // (exp + leeway) * 1000 - 1 ms, and a revocation must still be cached then, on every instance.
  const LEEWAY_S = 5;

  it('a revoked token is refused as revoked up to exp + leeway - 1 ms and as expired after; the entry goes only then', async () => {
    const start = Math.floor(Date.now() / 1000) * 1000;
    const clock = { t: start, now: () => clock.t };
    const a = instance(database.db, { clock });
    const pair = await a.issue(admin);
    const claims = await a.verify(pair.accessToken);
    await a.logout(claims);
    const viaAdmin = await a.issue({ id: 'admin-boundary', roles: ['viewer'] });
    const adminClaims = await a.verify(viaAdmin.accessToken);
    clock.t += 1; // the cutoff refuses tokens issued strictly before it
    await a.logoutAll('admin-boundary');
    // Only the admin's cutoff covers this identity (its jti and sid were never revoked).
    const cutoffOnly = { jti: 'no-such-jti', sid: 'no-such-sid', sub: 'admin-boundary', iatMs: adminClaims.iatMs };

    clock.t = (claims.exp + LEEWAY_S) * 1000 - 1;
    const late = instance(otherClient.db(database.name), { clock });
    for (const on of [a, late]) {
      await expect(on.verify(pair.accessToken)).rejects.toMatchObject({ code: 'token_revoked' });
      await expect(on.verify(viaAdmin.accessToken)).rejects.toMatchObject({ code: 'token_revoked' });
      await on.revocations.sync();
      expect(on.revocations.isRevoked(claims)).toBe(true);
      expect(on.revocations.isRevoked(cutoffOnly)).toBe(true);
    }

    clock.t = (claims.exp + LEEWAY_S) * 1000;
    for (const on of [a, late]) {
      await expect(on.verify(pair.accessToken)).rejects.toMatchObject({ code: 'token_expired' });
      await expect(on.verify(viaAdmin.accessToken)).rejects.toMatchObject({ code: 'token_expired' });
    }

    // Memory stays bounded: well after every covered token expired, the entries are gone.
    clock.t = (claims.exp + LEEWAY_S) * 1000 + 60_000;
    await a.revocations.sync();
    expect(a.revocations.isRevoked(claims)).toBe(false);
    expect(a.revocations.isRevoked(cutoffOnly)).toBe(false);
  });
});
