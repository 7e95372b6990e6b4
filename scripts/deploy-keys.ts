// `node scripts/deploy-keys.ts <file>`: the secrets a deployment needs, made once. Writes an env file
// (JWT_KEYS, LEDGER_KEYS, METRICS_TOKEN) with fresh random values for whichever are missing from it,
// and leaves the values it already holds alone, so every restart keeps the same keys. compose.yaml's
// `keys` service runs it into a volume; each Node process reads the file with --env-file-if-exists.
// Given a second file, it also writes METRICS_TOKEN alone there for Prometheus (another user, which must
// not read the other keys): `node scripts/deploy-keys.ts <env file> [uid:gid] [token file uid:gid]`.
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** What a fresh deployment gets: a signing key for tokens, one for the ledger, and the /metrics token. */
export const deploymentSecrets: Record<string, () => string> = {
  JWT_KEYS: () => `k1:${randomBytes(32).toString('base64')}`,
  LEDGER_KEYS: () => `l1:${randomBytes(32).toString('base64')}`,
  METRICS_TOKEN: () => randomBytes(32).toString('hex'),
};

/** Adds the missing secrets to `file` (created 0600 if absent); returns the names it added. */
export function ensureDeploymentSecrets(file: string, owner?: { uid: number; gid: number }): string[] {
  const existing = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const present = new Set([...existing.matchAll(/^\s*([A-Z_][A-Z0-9_]*)\s*=/gm)].map((m) => m[1]));
  const added = Object.keys(deploymentSecrets).filter((name) => !present.has(name));
  if (added.length > 0 || !existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true });
    const lines = added.map((name) => `${name}=${deploymentSecrets[name]!()}`);
    const prefix = existing && !existing.endsWith('\n') ? `${existing}\n` : existing;
    writeFileSync(file, `${prefix}${lines.join('\n')}${lines.length ? '\n' : ''}`, { mode: 0o600 });
  }
  chmodSync(file, 0o600);
  // Made as root in a fresh volume, read by the image's unprivileged user.
  if (owner) chownSync(file, owner.uid, owner.gid);
  return added;
}

/** METRICS_TOKEN of the env file, alone in `tokenFile` (0400, for the scraper's user). */
export function writeMetricsTokenFile(envFile: string, tokenFile: string, owner?: { uid: number; gid: number }): void {
  const token = /^\s*METRICS_TOKEN\s*=\s*(\S+)\s*$/m.exec(readFileSync(envFile, 'utf8'))?.[1];
  if (!token) throw new Error(`${envFile} has no METRICS_TOKEN`);
  if (existsSync(tokenFile)) chmodSync(tokenFile, 0o600);
  writeFileSync(tokenFile, token, { mode: 0o400 });
  chmodSync(tokenFile, 0o400);
  if (owner) chownSync(tokenFile, owner.uid, owner.gid);
}

const parseOwner = (arg: string | undefined) =>
  arg ? { uid: Number(arg.split(':')[0]), gid: Number(arg.split(':')[1]) } : undefined;

if (import.meta.main) {
  const [file, ownerArg, tokenFile, tokenOwnerArg] = process.argv.slice(2);
  if (!file || file.startsWith('-')) {
    console.error('Usage: node scripts/deploy-keys.ts <env file> [uid:gid] [metrics token file] [uid:gid]');
    process.exit(2);
  }
  const added = ensureDeploymentSecrets(file, parseOwner(ownerArg));
  console.log(added.length ? `${file}: made ${added.join(', ')}` : `${file}: every secret is there already`);
  if (tokenFile) {
    writeMetricsTokenFile(file, tokenFile, parseOwner(tokenOwnerArg));
    console.log(`${tokenFile}: METRICS_TOKEN for Prometheus`);
  }
}
