// The 1000-admin scenario, shared by bench/api-load.ts (one instance) and bench/nginx-load.ts (one
// instance vs three behind nginx); bench/k6/admins.ts is the same mix for k6. Each admin has its own
// login; each sends list (80%), get (15%) and versioned PUT (5%) requests, closed loop.
import { readFileSync } from 'node:fs';
import type { Db } from 'mongodb';
import { apiIndexes } from '../api/services.ts';
import { seedApplications } from '../scripts/seed.ts';
import { ensureIndexes } from '../shared/core/db.ts';
import type { AdminDoc } from '../shared/identity/admins.ts';
import { hashPassword } from '../shared/identity/password.ts';
import type { LoadRequest, LoadResult } from './load-generator.ts';
import { markdownTable, round } from './support.ts';

export const LOAD_PASSWORD = 'load test password';
export const loadEmail = (i: number) => `load${i}@example.com`;

/** Signs in the i-th load admin over HTTP and returns its access token; throws on anything but 200. */
export async function loginLoadAdmin(origin: string, i: number): Promise<string> {
  const res = await fetch(`${origin}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: loadEmail(i), password: LOAD_PASSWORD }),
  });
  if (res.status !== 200) throw new Error(`login of ${loadEmail(i)} answered ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { accessToken: string }).accessToken;
}

/** utime + stime of a process in seconds (Linux /proc; clock ticks of 10 ms). */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Indexes, `docs` applications and `admins` reviewers who all share LOAD_PASSWORD. */
export async function prepareLoadData(db: Db, options: { admins: number; docs: number }): Promise<void> {
  await ensureIndexes(db, apiIndexes);
  await seedApplications(db, options.docs);
  // One hash serves every load admin (same password): hashing it 1000 times would only time PBKDF2.
  const passwordHash = await hashPassword(LOAD_PASSWORD, 1000);
  await db.collection<AdminDoc>('admins').insertMany(
    Array.from({ length: options.admins }, (_, i) => ({
      _id: crypto.randomUUID(),
      email: loadEmail(i),
      name: `Load ${i}`,
      passwordHash,
      roles: ['reviewer' as const],
      disabled: false,
      createdAt: new Date(),
    })),
  );
}

/** The API's environment for a load run: no throttling that the scenario would trip by design. */
export function loadApiEnv(mongoUrl: string, dbName: string): Record<string, string> {
  return {
    MONGO_URL: mongoUrl,
    MONGO_DB: dbName,
    LOG_LEVEL: 'warn',
    JWT_KEYS: `l1:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`,
    LEDGER_KEYS: `ledger:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`,
    PASSWORD_ITERATIONS: '1000',
    LOGIN_ATTEMPTS_PER_ADDRESS: '100000',
    RATE_LIMIT_PER_MINUTE: '100000',
    TRUST_PROXY: 'true',
  };
}

/** Every admin logs in through HTTP, `parallel` at a time; returns their access tokens. */
export async function loginAll(origin: string, admins: number, parallel = 10): Promise<string[]> {
  const tokens: string[] = new Array(admins);
  for (let start = 0; start < admins; start += parallel) {
    await Promise.all(
      Array.from({ length: Math.min(parallel, admins - start) }, async (_, k) => {
        const i = start + k;
        const res = await fetch(`${origin}/api/auth/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ email: loadEmail(i), password: LOAD_PASSWORD }),
        });
        if (res.status !== 200) throw new Error(`login ${i}: ${res.status} ${await res.text()}`);
        tokens[i] = (await res.json()).accessToken;
      }),
    );
  }
  return tokens;
}

/** The request mix; PUTs send the last version this generator saw, so 409s measure real contention. */
export async function adminScenario(db: Db, tokens: string[]) {
  const all = await db
    .collection<{ _id: string; status: string }>('applications')
    .find({}, { projection: { status: 1 } })
    .toArray();
  const ids = all.map((d) => d._id);
  const editable = all.filter((d) => d.status === 'pending' || d.status === 'under_review').map((d) => d._id);
  const versions = new Map<string, number>(editable.map((id) => [id, 1]));
  const statusFilters = ['', '&status=pending', '&status=under_review', '&status=approved'];
  const pick = <T>(list: T[]) => list[Math.floor(Math.random() * list.length)]!;

  return {
    next(user: number): LoadRequest {
      const headers = { authorization: `Bearer ${tokens[user]}` };
      const roll = Math.random();
      if (roll < 0.8) {
        return {
          kind: 'list',
          method: 'GET',
          path: `/api/applications?page=${1 + Math.floor(Math.random() * 5)}&limit=50${pick(statusFilters)}`,
          headers,
        };
      }
      if (roll < 0.95) return { kind: 'get', method: 'GET', path: `/api/applications/${pick(ids)}`, headers };
      const id = pick(editable);
      return {
        kind: 'put',
        method: 'PUT',
        path: `/api/applications/${id}`,
        headers,
        body: JSON.stringify({ loanAmount: 1000 + Math.floor(Math.random() * 1000) * 100, version: versions.get(id) }),
      };
    },
    onResponse(_user: number, request: LoadRequest, status: number, body: string) {
      if (request.kind !== 'put' || (status !== 200 && status !== 409)) return;
      const doc = JSON.parse(body);
      const current = status === 200 ? doc : doc.current;
      if (current?._id) versions.set(current._id, Math.max(versions.get(current._id) ?? 0, current.version));
    },
  };
}

/** The per-kind table (requests, percentiles, statuses). */
export function kindTable(result: LoadResult): string {
  return markdownTable(
    ['kind', 'requests', 'p50 ms', 'p95 ms', 'p99 ms', 'statuses'],
    [
      ...Object.entries(result.byKind).map(([kind, k]) => [kind, k.n, k.p50, k.p95, k.p99, JSON.stringify(k.statuses)]),
      [
        'all',
        result.requests,
        result.latency.p50,
        result.latency.p95,
        result.latency.p99,
        JSON.stringify(result.statuses),
      ],
    ],
  );
}

/** Error rate (anything but 2xx and the scenario's expected 409) and 409 rate among PUTs, in percent. */
export function rates(result: LoadResult): { errorPct: number; conflictPct: number } {
  const failed = Object.entries(result.statuses)
    .filter(([status]) => !/^2\d\d$/.test(status) && status !== '409')
    .reduce((sum, [, n]) => sum + n, 0);
  const puts = result.byKind.put;
  const conflicts = puts?.statuses['409'] ?? 0;
  return {
    errorPct: result.requests ? round((100 * failed) / result.requests, 2) : 0,
    conflictPct: puts?.n ? round((100 * conflicts) / puts.n, 1) : 0,
  };
}
