// Secrets given as `kid:base64secret,...` (JWT_KEYS, LEDGER_KEYS): one parser, one set of rules.

/** A key id: what tokens and ledger entries carry to name the key that made them. */
export const kidPattern = /^[A-Za-z0-9_-]{1,64}$/;

/** Parses a key list; throws an Error naming the bad part (`label` says which list, e.g. "ledger key"). */
export function parseKeyList(spec: string, label: string): Map<string, Uint8Array<ArrayBuffer>> {
  const keys = new Map<string, Uint8Array<ArrayBuffer>>();
  for (const part of spec
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const colon = part.indexOf(':');
    const kid = part.slice(0, colon);
    if (colon < 1 || !kidPattern.test(kid))
      throw new Error(`${label} "${part.slice(0, 8)}...": expected kid:base64secret`);
    let secret: Uint8Array<ArrayBuffer>;
    try {
      secret = Uint8Array.from(atob(part.slice(colon + 1)), (ch) => ch.charCodeAt(0));
    } catch {
      throw new Error(`${label} ${kid}: the secret is not base64`);
    }
    if (secret.length < 32) throw new Error(`${label} ${kid}: the secret must be at least 32 bytes`);
    if (keys.has(kid)) throw new Error(`${label} ${kid} is given twice`);
    keys.set(kid, secret);
  }
  return keys;
}
