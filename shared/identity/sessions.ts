// Sessions: short-lived signed access JWTs and rotating refresh tokens, stored as families.
//
// Access token: HS256 JWT with `kid` (several verification keys, one signs, so keys rotate
// without logging anyone out), checked against the Revocations cache (no database round trip
// while the cache is fresh). Refresh token: `<sid>.<secret>`, only its SHA-256 is stored; each
// use rotates it, and presenting one that was already rotated away revokes the whole family
// (OAuth 2.0 Security BCP, refresh token rotation), access tokens of that family included.
import { decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import type { Collection, Db } from 'mongodb';
import type { Clock } from '../core/clock.ts';
import type { IndexPlan } from '../core/db.ts';
import { UnauthorizedError } from '../core/errors.ts';
import { parseKeyList } from '../core/keys.ts';
import type { Revocations } from './revocations.ts';

import { type Role, roles } from './roles.ts';

export { type Role, roles };

export interface AccessClaims {
  sub: string;
  sid: string;
  jti: string;
  iat: number;
  /** Issue time in milliseconds: a logout-all refuses exactly the tokens issued before it. */
  iatMs: number;
  exp: number;
  roles: Role[];
}

export interface TokenPair {
  accessToken: string;
  refreshToken: string;
  tokenType: 'Bearer';
  /** Seconds until the access token expires. */
  expiresIn: number;
}

/** The admin as sessions see it now. Every role change or disable bumps `epoch`. */
export interface AdminState {
  roles: Role[];
  disabled: boolean;
  epoch: number;
}

/** Whom a session is for, as read at login: roles, and the admin's epoch at that read. */
export interface SessionSubject {
  id: string;
  roles: Role[];
  epoch?: number;
}

export interface SessionDoc {
  _id: string;
  adminId: string;
  roles: Role[];
  /** The admin's epoch when the session started; a session of an older epoch refreshes no more. */
  adminEpoch?: number;
  tokenHash: string;
  /** Hashes rotated away, to recognise reuse (bounded). */
  previousHashes: string[];
  createdAt: Date;
  rotatedAt: Date;
  expiresAt: Date;
  revokedAt: Date | null;
}

export const sessionIndexes: IndexPlan = {
  collection: 'sessions',
  indexes: [
    { key: { adminId: 1 }, name: 'adminId_1' },
    { key: { expiresAt: 1 }, name: 'expiresAt_ttl', expireAfterSeconds: 0 },
  ],
};

/** `kid:secret` pairs, comma-separated; secrets are base64 of at least 32 bytes. */
export function parseJwtKeys(spec: string): Map<string, Uint8Array> {
  const keys = parseKeyList(spec, 'JWT key');
  if (keys.size === 0) throw new Error('no JWT keys given');
  return keys;
}

export interface SessionOptions {
  keys: Map<string, Uint8Array>;
  signingKid: string;
  accessTtlS: number;
  refreshTtlS: number;
  issuer?: string;
  clock: Clock;
  revocations: Revocations;
  /**
   * Reads the admin now (null when there is none). The API always passes it; without it sessions keep
   * the roles read at login (only tests of token mechanics leave it out).
   */
  admins?: (adminId: string) => Promise<AdminState | null>;
}

/** Logins retried when the admin changed between the caller's read and the session insert. */
const ISSUE_ATTEMPTS = 3;

const encoder = new TextEncoder();
const PREVIOUS_HASHES_KEPT = 50;
/** Verification leeway for instance clocks: a token passes until floor(now / 1000) reaches exp + this. */
export const VERIFY_LEEWAY_S = 5;
/** The longest access token lifetime shared/core/config.ts accepts. */
const MAX_ACCESS_TOKEN_AGE_S = 86_400;
/** Access tokens whose signature this instance has checked, kept so the next request skips the HMAC. */
const VERIFIED_TOKENS_KEPT = 10_000;

/** jose's time checks, as jwtVerify makes them with clockTolerance VERIFY_LEEWAY_S and maxTokenAge. */
function timelyAt(claims: AccessClaims, nowMs: number): boolean {
  const nowS = Math.floor(nowMs / 1000);
  const { nbf } = claims as { nbf?: number };
  return (
    nowS - VERIFY_LEEWAY_S < claims.exp &&
    (nbf === undefined || nbf <= nowS + VERIFY_LEEWAY_S) &&
    claims.iat <= nowS + VERIFY_LEEWAY_S &&
    nowS - claims.iat - VERIFY_LEEWAY_S <= MAX_ACCESS_TOKEN_AGE_S
  );
}

async function sha256(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', encoder.encode(text)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

const base64url = (bytes: Uint8Array) =>
  btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '');

async function csrfMac(key: Uint8Array, sid: string): Promise<string> {
  const hmac = await crypto.subtle.importKey('raw', key as BufferSource, { name: 'HMAC', hash: 'SHA-256' }, false, [
    'sign',
  ]);
  return base64url(new Uint8Array(await crypto.subtle.sign('HMAC', hmac, encoder.encode(`csrf:${sid}`))));
}

/** Compares two strings in time that depends on their length only. */
function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return difference === 0;
}

/** A refresh token is `<session id>.<secret>`; null when it is not shaped so. */
export function refreshTokenParts(token: string): { sid: string; secret: string } | null {
  const dot = token.indexOf('.');
  const secret = token.slice(dot + 1);
  return dot < 1 || !secret ? null : { sid: token.slice(0, dot), secret };
}

function randomToken(bytes = 32): string {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

export class Sessions {
  private readonly collection: Collection<SessionDoc>;
  private readonly options: SessionOptions;
  private readonly issuer: string;
  /**
   * Tokens that passed the signature and claims checks, by their exact text (insertion order, the
   * oldest dropped first). An admin's console sends one token many times: an HMAC check through
   * WebCrypto costs more than the rest of a cached list request. Expiry and revocation are still
   * checked on every request; a token not in here (or tampered with: another text) is verified whole.
   */
  private readonly verified = new Map<string, AccessClaims>();

  constructor(db: Db, options: SessionOptions) {
    if (!options.keys.has(options.signingKid))
      throw new Error(`signing key ${options.signingKid} is not among the keys`);
    this.collection = db.collection<SessionDoc>('sessions');
    this.options = options;
    this.issuer = options.issuer ?? 'loan-admin';
    // A revoked token issued at t passes the signature and expiry checks until t + TTL + leeway: the
    // cache must not forget its revocation before then.
    options.revocations.cover((options.accessTtlS + VERIFY_LEEWAY_S) * 1000);
  }

  get revocations(): Revocations {
    return this.options.revocations;
  }

  /**
   * Starts a new session family for an authenticated admin, as read by the caller. The admin is read
   * again after the insert: a role change or disable that this read misses was written after it, so its
   * logout-all finds the session and revokes it; one this read sees ends the session here, and the login
   * goes on with the admin as they are now (UnauthorizedError once disabled or gone).
   */
  async issue(admin: SessionSubject): Promise<TokenPair> {
    let subject = admin;
    for (let attempt = 1; ; attempt++) {
      const sid = crypto.randomUUID();
      const secret = randomToken();
      // Issued before the insert, hence before any revocation that covers this session.
      const now = this.options.clock.now();
      const epoch = subject.epoch ?? 0;
      await this.collection.insertOne({
        _id: sid,
        adminId: subject.id,
        roles: subject.roles,
        adminEpoch: epoch,
        tokenHash: await sha256(secret),
        previousHashes: [],
        createdAt: new Date(now),
        rotatedAt: new Date(now),
        expiresAt: new Date(now + this.options.refreshTtlS * 1000),
        revokedAt: null,
      });
      if (!this.options.admins) return this.pair(subject.id, subject.roles, sid, secret, now);
      const current = await this.options.admins(subject.id);
      if (current && !current.disabled && current.epoch === epoch)
        return this.pair(subject.id, current.roles, sid, secret, now);
      // No token of this session was handed out: ending it in the database is enough.
      await this.collection.updateOne({ _id: sid }, { $set: { revokedAt: new Date(this.options.clock.now()) } });
      if (!current || current.disabled || attempt >= ISSUE_ATTEMPTS)
        throw new UnauthorizedError('This admin cannot sign in now.');
      subject = { id: subject.id, roles: current.roles, epoch: current.epoch };
    }
  }

  /**
   * Rotates a refresh token. Reuse of a rotated one revokes the family and is refused. The admin is read
   * again: a session started before a role change or disable (an older epoch) is ended, never refreshed.
   */
  async refresh(refreshToken: string): Promise<TokenPair> {
    const parts = refreshTokenParts(refreshToken);
    if (!parts) throw new UnauthorizedError('The refresh token is not valid.');
    const { sid, secret } = parts;
    const hash = await sha256(secret);
    const next = randomToken();
    const now = new Date(this.options.clock.now());
    const rotated = await this.collection.findOneAndUpdate(
      { _id: sid, tokenHash: hash, revokedAt: null, expiresAt: { $gt: now } },
      {
        $set: { tokenHash: await sha256(next), rotatedAt: now },
        $push: { previousHashes: { $each: [hash], $slice: -PREVIOUS_HASHES_KEPT } },
      },
      { returnDocument: 'after' },
    );
    if (rotated) {
      if (!this.options.admins) return this.pair(rotated.adminId, rotated.roles, sid, next, now.getTime());
      const current = await this.options.admins(rotated.adminId);
      if (current && !current.disabled && current.epoch === (rotated.adminEpoch ?? 0))
        return this.pair(rotated.adminId, current.roles, sid, next, now.getTime());
      await this.revokeFamily(sid);
      throw new UnauthorizedError("The admin's roles or access changed; sign in again.", 'session_revoked');
    }

    const family = await this.collection.findOne({ _id: sid });
    if (family?.previousHashes.includes(hash) && !family.revokedAt) {
      await this.revokeFamily(sid);
      throw new UnauthorizedError('This refresh token was already used; the session is revoked.', 'refresh_reused');
    }
    throw new UnauthorizedError('The refresh token is not valid.');
  }

  /** Verifies signature, expiry and revocation. No database round trip while the cache is fresh. */
  async verify(accessToken: string): Promise<AccessClaims> {
    let claims = this.verified.get(accessToken);
    if (claims && !timelyAt(claims, this.options.clock.now())) {
      this.verified.delete(accessToken);
      claims = undefined;
    }
    claims ??= await this.verifySignature(accessToken);
    await this.options.revocations.ensureFresh();
    if (this.options.revocations.isRevoked(claims))
      throw new UnauthorizedError('The token was revoked.', 'token_revoked');
    return claims;
  }

  /** Signature, issuer, audience and time checks (jose), remembered for the next request on success. */
  private async verifySignature(accessToken: string): Promise<AccessClaims> {
    let claims: AccessClaims;
    try {
      const { kid } = decodeProtectedHeader(accessToken);
      const key = kid ? this.options.keys.get(kid) : undefined;
      if (!key) throw new UnauthorizedError('The token is signed with an unknown key.');
      const { payload } = await jwtVerify(accessToken, key, {
        algorithms: ['HS256'],
        issuer: this.issuer,
        audience: this.issuer,
        currentDate: new Date(this.options.clock.now()),
        clockTolerance: VERIFY_LEEWAY_S,
        // Also refuses an iat in the future beyond the tolerance (jose checks iat only with maxTokenAge);
        // exp stays the real limit: no valid ACCESS_TOKEN_TTL_S exceeds a day.
        maxTokenAge: MAX_ACCESS_TOKEN_AGE_S,
        requiredClaims: ['sub', 'jti', 'iat', 'exp', 'sid', 'iatMs'],
      });
      claims = payload as unknown as AccessClaims;
    } catch (error) {
      if (error instanceof UnauthorizedError) throw error;
      if (error instanceof joseErrors.JWTExpired)
        throw new UnauthorizedError('The token has expired.', 'token_expired', { cause: error });
      throw new UnauthorizedError('The token is not valid.', 'unauthorized', { cause: error });
    }
    if (this.verified.size >= VERIFIED_TOKENS_KEPT) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(accessToken, claims);
    return claims;
  }

  /**
   * The CSRF token of a session family (a cookie session of the console): HMAC-SHA-256 of its id under
   * the signing key, base64url. It stays the same across refreshes; a page gets it from the API (never
   * from a cookie) and sends it in X-CSRF-Token on every state-changing request.
   */
  csrfToken(sid: string): Promise<string> {
    return csrfMac(this.options.keys.get(this.options.signingKid)!, sid);
  }

  /** Whether `token` is the CSRF token of `sid` under any of the keys (so a key rotation keeps sessions). */
  async checkCsrf(sid: string, token: string | undefined): Promise<boolean> {
    if (!token || token.length > 128) return false;
    for (const key of this.options.keys.values()) if (sameText(await csrfMac(key, sid), token)) return true;
    return false;
  }

  /** Ends one session: its access token and its refresh family. */
  async logout(claims: AccessClaims): Promise<void> {
    await this.options.revocations.revokeToken(claims.jti);
    await this.revokeFamily(claims.sid);
  }

  /** Ends every session of an admin, on every instance. */
  async logoutAll(adminId: string): Promise<void> {
    // The cutoff refuses tokens issued before now; revoking each live family by id as well does not
    // depend on instance clocks agreeing to the millisecond.
    await this.options.revocations.revokeAdmin(adminId);
    const families = await this.collection
      .find({ adminId, revokedAt: null }, { projection: { _id: 1 } })
      .map((doc) => doc._id)
      .toArray();
    await this.collection.updateMany(
      { adminId, revokedAt: null },
      { $set: { revokedAt: new Date(this.options.clock.now()) } },
    );
    await this.options.revocations.revokeSessions(families);
  }

  private async revokeFamily(sid: string): Promise<void> {
    await this.collection.updateOne({ _id: sid }, { $set: { revokedAt: new Date(this.options.clock.now()) } });
    await this.options.revocations.revokeSession(sid);
  }

  /** `nowMs` is taken before the write that let this token out, so a revocation after it covers it. */
  private async pair(
    adminId: string,
    adminRoles: Role[],
    sid: string,
    secret: string,
    nowMs: number,
  ): Promise<TokenPair> {
    const { keys, signingKid, accessTtlS } = this.options;
    const nowS = Math.floor(nowMs / 1000);
    const accessToken = await new SignJWT({ sid, roles: adminRoles, iatMs: nowMs })
      .setProtectedHeader({ alg: 'HS256', kid: signingKid, typ: 'JWT' })
      .setSubject(adminId)
      .setJti(crypto.randomUUID())
      .setIssuer(this.issuer)
      .setAudience(this.issuer)
      .setIssuedAt(nowS)
      .setExpirationTime(nowS + accessTtlS)
      .sign(keys.get(signingKid)!);
    return { accessToken, refreshToken: `${sid}.${secret}`, tokenType: 'Bearer', expiresIn: accessTtlS };
  }
}
