// The console's one door to the API: same-origin fetches on the session cookie, the CSRF token on every
// state-changing request, one refresh when the access cookie has expired, and the API's error body
// ({error: {code, message, details}, current}) turned into an ApiError.
import type { Role } from '../../shared/identity/roles.ts';

export interface ConsoleSession {
  adminId: string;
  roles: Role[];
  csrfToken: string;
  expiresIn: number;
}
export interface Me {
  id: string;
  email: string;
  name: string;
  roles: Role[];
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    readonly current?: unknown,
  ) {
    super(message);
  }
}

let csrfToken = '';
let onSignedOut: (code: string) => void = () => {};
let refreshing: Promise<boolean> | null = null;

export const setCsrfToken = (token: string) => {
  csrfToken = token;
};
/** Called once when the session is gone (expired beyond refresh, revoked, signed out elsewhere). */
export const whenSignedOut = (listener: (code: string) => void) => {
  onSignedOut = listener;
};

async function send(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const init: RequestInit = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (method !== 'GET' && method !== 'HEAD') (init.headers as Record<string, string>)['X-CSRF-Token'] = csrfToken;
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    // An application's PATCH is a JSON Merge Patch; a caller names another type where a route wants one.
    (init.headers as Record<string, string>)['Content-Type'] ??=
      method === 'PATCH' ? 'application/merge-patch+json' : 'application/json';
  }
  return fetch(path, init);
}

/** One refresh at a time, whoever asks: rotated refresh tokens must not be spent twice. */
export function refreshSession(): Promise<boolean> {
  refreshing ??= (async () => {
    try {
      const response = await send('POST', '/api/console/session/refresh');
      if (!response.ok) return false;
      const session = (await response.json()) as ConsoleSession;
      csrfToken = session.csrfToken;
      return true;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function failure(response: Response): Promise<ApiError> {
  const body = (await response.json().catch(() => null)) as {
    error?: { code?: string; message?: string; details?: unknown };
    current?: unknown;
  } | null;
  return new ApiError(
    response.status,
    body?.error?.code ?? `http_${response.status}`,
    body?.error?.message ?? response.statusText,
    body?.error?.details,
    body?.current,
  );
}

/** A JSON call. A 401 refreshes the session once and retries; a second 401 signs the console out. */
export async function api<T>(
  method: string,
  path: string,
  body?: unknown,
  headers?: Record<string, string>,
): Promise<T> {
  let response = await send(method, path, body, headers);
  if (response.status === 401 && !path.startsWith('/api/console/session')) {
    if (await refreshSession()) response = await send(method, path, body, headers);
  }
  if (!response.ok) {
    const error = await failure(response);
    if (error.status === 401 && !path.startsWith('/api/console/session')) onSignedOut(error.code);
    throw error;
  }
  return (response.status === 204 ? undefined : await response.json()) as T;
}

export const get = <T>(path: string) => api<T>('GET', path);

export async function signIn(email: string, password: string): Promise<ConsoleSession> {
  const session = await api<ConsoleSession>('POST', '/api/console/session', { email, password });
  csrfToken = session.csrfToken;
  return session;
}

/** The session this page already has (a reload), or null. */
export async function currentSession(): Promise<ConsoleSession | null> {
  try {
    const session = await api<ConsoleSession>('GET', '/api/console/session');
    csrfToken = session.csrfToken;
    return session;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && (await refreshSession())) {
      return api<ConsoleSession>('GET', '/api/console/session');
    }
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  }
}

export const signOut = () => api<void>('DELETE', '/api/console/session').catch(() => undefined);

/** A fresh idempotency key: one per intent (a double click reuses it, a new intent makes a new one). */
export const newIdempotencyKey = () => crypto.randomUUID();
