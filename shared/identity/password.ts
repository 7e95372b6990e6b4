// Password hashing with WebCrypto PBKDF2-SHA256, available alike on Node, workerd and Deno.
// The stored string carries its parameters, so the iteration count can rise without a migration:
// needsRehash() tells the login path to store a stronger hash.

/** OWASP Password Storage Cheat Sheet (2023+) for PBKDF2-HMAC-SHA256. */
export const DEFAULT_ITERATIONS = 600_000;
const SCHEME = 'pbkdf2-sha256';
const encoder = new TextEncoder();

function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

async function derive(password: string, salt: Uint8Array<ArrayBuffer>, iterations: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey('raw', encoder.encode(password.normalize('NFKC')), 'PBKDF2', false, [
    'deriveBits',
  ]);
  const bits = await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations }, key, 256);
  return new Uint8Array(bits);
}

export async function hashPassword(password: string, iterations = DEFAULT_ITERATIONS): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const hash = await derive(password, salt, iterations);
  return `${SCHEME}$${iterations}$${toBase64(salt)}$${toBase64(hash)}`;
}

interface Parsed {
  iterations: number;
  salt: Uint8Array<ArrayBuffer>;
  hash: Uint8Array;
}

function parse(stored: string): Parsed | null {
  const [scheme, iterationsText, saltText, hashText] = stored.split('$');
  const iterations = Number(iterationsText);
  if (scheme !== SCHEME || !Number.isSafeInteger(iterations) || iterations < 1 || !saltText || !hashText) return null;
  try {
    return { iterations, salt: fromBase64(saltText), hash: fromBase64(hashText) };
  } catch {
    return null;
  }
}

async function matches(password: string, parsed: Parsed): Promise<boolean> {
  const actual = await derive(password, parsed.salt, parsed.iterations);
  let difference = parsed.hash.length ^ actual.length;
  for (let i = 0; i < actual.length; i++) difference |= (actual[i] ?? 0) ^ (parsed.hash[i] ?? 0);
  return difference === 0;
}

/** Constant-time with respect to the hash bytes; false for a malformed stored value. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parsed = parse(stored);
  return parsed !== null && (await matches(password, parsed));
}

/**
 * verifyPassword at the cost of a check at `iterations`, whatever `stored` is: a weaker legacy hash,
 * a malformed value, or null (no such account). The iterations the stored hash did not cost are spent
 * on a throwaway key, so how long the answer takes tells nothing about what the account holds.
 */
export async function verifyPasswordAtCost(
  password: string,
  stored: string | null,
  iterations: number,
): Promise<boolean> {
  const parsed = stored === null ? null : parse(stored);
  const ok = parsed !== null && (await matches(password, parsed));
  const missing = iterations - (parsed?.iterations ?? 0);
  if (missing > 0) await derive(password, crypto.getRandomValues(new Uint8Array(16)), missing);
  return ok;
}

export function needsRehash(stored: string, iterations = DEFAULT_ITERATIONS): boolean {
  const [scheme, iterationsText] = stored.split('$');
  return scheme !== SCHEME || Number(iterationsText) < iterations;
}
