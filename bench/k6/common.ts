// What both k6 scenarios share: the target, the load admins' logins (made by bench/load-scenario.ts's
// prepareLoadData or `npm run seed`-style fixtures: load0..loadN-1@example.com, one password), and
// the application ids to work on. k6 1.x runs TypeScript directly: `k6 run bench/k6/admins.ts`.
import http, { type RefinedResponse, type ResponseType } from 'k6/http';

export const BASE_URL = __ENV.BASE_URL ?? 'http://127.0.0.1';
export const ADMINS = Number(__ENV.ADMINS ?? 1000);
export const PASSWORD = __ENV.LOAD_PASSWORD ?? 'load test password';
export const json = { headers: { 'content-type': 'application/json' } };

/** Logs every admin in (setup runs once, before the VUs): 50 logins per batch. */
export function loginAll(admins: number): string[] {
  const tokens: string[] = [];
  for (let start = 0; start < admins; start += 50) {
    const batch = [];
    for (let i = start; i < Math.min(admins, start + 50); i++) {
      batch.push({
        method: 'POST',
        url: `${BASE_URL}/api/auth/login`,
        body: JSON.stringify({ email: `load${i}@example.com`, password: PASSWORD }),
        params: { ...json, tags: { kind: 'login' } },
      });
    }
    for (const res of http.batch(batch)) {
      if (res.status !== 200) throw new Error(`login failed: ${res.status} ${String(res.body)}`);
      tokens.push(parse<{ accessToken: string }>(res).accessToken);
    }
  }
  return tokens;
}

export interface AppRef {
  _id: string;
  status: string;
  version: number;
}

/** Up to `limit` applications in the given status, through the API (so the ids are the API's). */
export function applications(token: string, status: string, limit: number): AppRef[] {
  const res = http.get(`${BASE_URL}/api/applications?limit=${Math.min(200, limit)}&status=${status}`, {
    headers: { authorization: `Bearer ${token}` },
    tags: { kind: 'setup' },
  });
  if (res.status !== 200) throw new Error(`list failed: ${res.status}`);
  return parse<{ items: AppRef[] }>(res).items;
}

/** A response's JSON body, typed by the caller (k6's own res.json() returns an untyped JSONValue). */
export const parse = <T>(res: RefinedResponse<ResponseType | undefined>): T => JSON.parse(String(res.body)) as T;

export const pick = <T>(list: T[]): T => list[Math.floor(Math.random() * list.length)]!;
