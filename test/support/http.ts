// Calling the app as a logged-in admin of a given role, through HTTP semantics (app.request).
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import type { Role } from '../../shared/identity/sessions.ts';

type App = ReturnType<typeof createApp>;

export interface Reply {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: JSON answers are checked field by field
  body: any;
}

export const TEST_PASSWORD = 'a long enough test password';

/** Creates one admin per role and logs each in; returns their access tokens and ids. */
export async function adminsByRole(app: App, services: Services, roles: readonly Role[], domain = 'example.com') {
  const tokens = {} as Record<Role, string>;
  const ids = {} as Record<Role, string>;
  for (const role of roles) {
    const email = `${role}-${crypto.randomUUID().slice(0, 8)}@${domain}`;
    ids[role] = (await services.admins.create({ email, password: TEST_PASSWORD, roles: [role] }))._id;
    const res = await app.request('/api/auth/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: TEST_PASSWORD }),
    });
    tokens[role] = (await res.json()).accessToken;
  }
  return { tokens, ids };
}

export async function call(
  app: App,
  token: string | undefined,
  method: string,
  path: string,
  options: { body?: unknown; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const res = await app.request(path, {
    method,
    headers: { ...headers, ...options.headers },
    body:
      options.body === undefined
        ? undefined
        : typeof options.body === 'string'
          ? options.body
          : JSON.stringify(options.body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}

/** `call` bound to an app and its admins' tokens: `as` picks the role (admin by default). */
export function callerFor(app: App, tokens: Record<Role, string>) {
  return (
    method: string,
    path: string,
    options: { as?: Role; body?: unknown; headers?: Record<string, string> } = {},
  ) => call(app, tokens[options.as ?? 'admin'], method, path, options);
}
