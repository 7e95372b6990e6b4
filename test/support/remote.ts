// Calls to an API process over HTTP: JSON in and out (or a FormData upload), a Bearer token if given.

export interface RemoteReply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: a test reads whichever fields of the JSON it checks
  body: any;
}

export type RemoteCall = (
  token: string | null,
  method: string,
  path: string,
  body?: unknown,
  headers?: Record<string, string>,
) => Promise<RemoteReply>;

export function remoteCaller(origin: () => string): RemoteCall {
  return async (token, method, path, body, headers = {}) => {
    const res = await fetch(`${origin()}${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined && !(body instanceof FormData) ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : body instanceof FormData ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
}
