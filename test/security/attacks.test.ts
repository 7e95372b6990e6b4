// The attack corpus: each case is refused, and nothing is written (every collection but the rate-limit
// counters is byte-for-byte what it was). Through the app's HTTP interface (app.request), one app on
// the test database, with a viewer, a reviewer, an approver, a disburser and an admin.
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { serve } from '@hono/node-server';
import { SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { createApp } from '../../api/app.ts';
import type { Services } from '../../api/services.ts';
import { parseJwtKeys, type Role, roles } from '../../shared/identity/sessions.ts';
import { formPng } from '../fixtures/documents.ts';
import { createTestApp } from '../support/app.ts';
import { adminsByRole, call, type Reply, TEST_PASSWORD } from '../support/http.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
let app: ReturnType<typeof createApp>;
let services: Services;
let tokens: Record<Role, string>;
let ids: Record<Role, string>;
let signingKey: Uint8Array;
let pendingId: string;
let approvedId: string;

const sample = { applicantName: 'Ada Lovelace', monthlyIncome: 5000, loanAmount: 20_000, termMonths: 36 };

/** Every collection but the rate-limit counters (which count refused requests too, by design). */
async function snapshot(except: string[] = []): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const { name } of await database.db.listCollections().toArray()) {
    if (name === 'rate_limits' || except.includes(name)) continue;
    const docs = await database.db.collection(name).find({}).sort({ _id: 1 }).toArray();
    out[name] = JSON.stringify(docs);
  }
  return out;
}

/** Runs the attack, expects every reply to be a refusal with one of `statuses`, and nothing written. */
async function refusedAndNothingWritten(
  statuses: number[],
  attack: () => Promise<Reply | Reply[]>,
  except: string[] = [],
): Promise<Reply[]> {
  const before = await snapshot(except);
  const replies = [await attack()].flat();
  for (const reply of replies) {
    expect(statuses, JSON.stringify(reply.body)).toContain(reply.status);
    expect(reply.body?.error?.code, JSON.stringify(reply.body)).toEqual(expect.any(String));
  }
  expect(await snapshot(except)).toEqual(before);
  return replies;
}

async function raw(
  method: string,
  path: string,
  init: { headers?: Record<string, string>; body?: BodyInit } = {},
): Promise<Reply> {
  const res = await app.request(path, { method, headers: init.headers, body: init.body });
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  return { status: res.status, headers: res.headers, body };
}

const createAs = (token: string | undefined, body: unknown = sample) =>
  call(app, token, 'POST', '/api/applications', { body });

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app, services } = await createTestApp(database.db, { RATE_LIMIT_PER_MINUTE: '100000' }));
  ({ tokens, ids } = await adminsByRole(app, services, roles));
  signingKey = [...parseJwtKeys(services.config.JWT_KEYS).values()][0]!;
  const pending = await createAs(tokens.admin);
  pendingId = pending.body._id;
  const approved = await createAs(tokens.admin);
  approvedId = approved.body._id;
  let version = 1;
  for (const status of ['under_review', 'approved']) {
    // The approver approves: the admin who created it may not (four eyes).
    const as = status === 'approved' ? tokens.approver : tokens.admin;
    const res = await call(app, as, 'PUT', `/api/applications/${approvedId}`, { body: { status, version } });
    expect(res.status).toBe(200);
    version = res.body.version;
  }
});

afterAll(async () => {
  await database?.close();
});

/** Claims like the ones our tokens carry, for an admin who is (or claims to be) `admin`. */
function claimsFor(role: Role = 'admin') {
  return { sid: crypto.randomUUID(), roles: [role], iatMs: Date.now() };
}

function signed(
  claims: Record<string, unknown>,
  options: { alg?: string; kid?: string; key?: Uint8Array; iat?: number; exp?: number; nbf?: number } = {},
) {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: options.alg ?? 'HS256', kid: options.kid ?? 'test', typ: 'JWT' })
    .setSubject(ids.admin)
    .setJti(crypto.randomUUID())
    .setIssuer('loan-admin')
    .setAudience('loan-admin')
    .setIssuedAt(options.iat ?? now)
    .setExpirationTime(options.exp ?? now + 600);
  if (options.nbf !== undefined) jwt.setNotBefore(options.nbf);
  return jwt.sign(options.key ?? signingKey);
}

const b64url = (text: string) => btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

describe('forged and misused tokens: 401 on a mutating request, nothing written', () => {
  it('the corpus is sound: a token we sign the same way as the app is accepted', async () => {
    const res = await call(app, await signed(claimsFor()), 'GET', '/api/auth/me');
    expect(res.status).toBe(200);
  });

  it('alg none (unsigned), with and without our kid', async () => {
    const unsigned = new UnsecuredJWT(claimsFor())
      .setSubject(ids.admin)
      .setJti('j')
      .setIssuer('loan-admin')
      .setAudience('loan-admin')
      .setIssuedAt()
      .setExpirationTime('10m')
      .encode();
    const [, payload] = unsigned.split('.');
    const withKid = `${b64url(JSON.stringify({ alg: 'none', kid: 'test', typ: 'JWT' }))}.${payload}.`;
    await refusedAndNothingWritten([401], async () => [await createAs(unsigned), await createAs(withKid)]);
  });

  it('algorithm confusion: HS512/HS384 with our secret, RS256 header over an HMAC signature, HS256 keyed by a public key', async () => {
    const publicKeyPem =
      '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\n' +
      'q9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n-----END PUBLIC KEY-----\n';
    const hs256 = await signed(claimsFor());
    const [, payload, signature] = hs256.split('.');
    const rs256Header = `${b64url(JSON.stringify({ alg: 'RS256', kid: 'test', typ: 'JWT' }))}.${payload}.${signature}`;
    await refusedAndNothingWritten([401], async () => [
      await createAs(await signed(claimsFor(), { alg: 'HS512' })),
      await createAs(await signed(claimsFor(), { alg: 'HS384' })),
      await createAs(rs256Header),
      await createAs(await signed(claimsFor(), { key: new TextEncoder().encode(publicKeyPem) })),
    ]);
  });

  it("a tampered payload: a viewer's token with roles raised to admin (signature kept)", async () => {
    const [header, payload, signature] = tokens.viewer.split('.');
    const claims = JSON.parse(atob(payload!.replace(/-/g, '+').replace(/_/g, '/')));
    const raised = `${header}.${b64url(JSON.stringify({ ...claims, roles: ['admin'] }))}.${signature}`;
    const sub = `${header}.${b64url(JSON.stringify({ ...claims, sub: ids.admin }))}.${signature}`;
    await refusedAndNothingWritten([401], async () => [await createAs(raised), await createAs(sub)]);
  });

  it('expired (past the 5 s tolerance), not yet valid (nbf or iat a minute ahead), wrong issuer or audience, missing claims', async () => {
    const now = Math.floor(Date.now() / 1000);
    const replies = await refusedAndNothingWritten([401], async () => [
      await createAs(await signed(claimsFor(), { iat: now - 1_000, exp: now - 10 })),
      await createAs(await signed(claimsFor(), { nbf: now + 60 })),
      await createAs(await signed(claimsFor(), { iat: now + 60, exp: now + 600 })),
      await createAs(
        await new SignJWT(claimsFor())
          .setProtectedHeader({ alg: 'HS256', kid: 'test' })
          .setSubject(ids.admin)
          .setJti('j')
          .setIssuer('someone-else')
          .setAudience('loan-admin')
          .setIssuedAt()
          .setExpirationTime('5m')
          .sign(signingKey),
      ),
      await createAs(
        await new SignJWT(claimsFor())
          .setProtectedHeader({ alg: 'HS256', kid: 'test' })
          .setSubject(ids.admin)
          .setJti('j')
          .setIssuer('loan-admin')
          .setAudience('another-app')
          .setIssuedAt()
          .setExpirationTime('5m')
          .sign(signingKey),
      ),
      await createAs(await signed({ roles: ['admin'] })), // no sid, no iatMs
    ]);
    expect(replies[0]!.body.error.code).toBe('token_expired');
  });

  it('an unknown kid, a kid that is a path or a prototype key, and no kid at all', async () => {
    const other = crypto.getRandomValues(new Uint8Array(32));
    await refusedAndNothingWritten([401], async () => [
      await createAs(await signed(claimsFor(), { kid: 'rotated-away', key: other })),
      await createAs(await signed(claimsFor(), { kid: '../../../../dev/null', key: other })),
      await createAs(await signed(claimsFor(), { kid: '__proto__', key: other })),
      await createAs(await signed(claimsFor(), { kid: 'constructor', key: other })),
      await createAs(
        await new SignJWT(claimsFor())
          .setProtectedHeader({ alg: 'HS256' })
          .setSubject(ids.admin)
          .setJti('j')
          .setIssuer('loan-admin')
          .setAudience('loan-admin')
          .setIssuedAt()
          .setExpirationTime('5m')
          .sign(signingKey),
      ),
    ]);
  });

  it('a revoked token (after logout) and every token of an admin after logout-all', async () => {
    // An admin of its own: logout-all ends every session of that account, which no other test may share.
    const { ids: own } = await adminsByRole(app, services, ['reviewer'], 'logout.example.com');
    const email = (await services.admins.get(own.reviewer))!.email;
    const login = async () =>
      (await call(app, undefined, 'POST', '/api/auth/login', { body: { email, password: TEST_PASSWORD } })).body as {
        accessToken: string;
        refreshToken: string;
      };
    const one = await login();
    const two = await login();
    expect((await call(app, one.accessToken, 'POST', '/api/auth/logout')).status).toBe(204);
    const replies = await refusedAndNothingWritten([401], async () => [await createAs(one.accessToken)]);
    expect(replies[0]!.body.error.code).toBe('token_revoked');
    expect((await call(app, two.accessToken, 'POST', '/api/auth/logout-all')).status).toBe(204);
    const all = await refusedAndNothingWritten([401], async () => [await createAs(two.accessToken)]);
    expect(all[0]!.body.error.code).toBe('token_revoked');
  });

  it('refresh-token reuse: refused, and the whole family (its newest tokens included) is revoked', async () => {
    const { ids: own } = await adminsByRole(app, services, ['approver'], 'reuse.example.com');
    const email = (await services.admins.get(own.approver))!.email;
    const first = (await call(app, undefined, 'POST', '/api/auth/login', { body: { email, password: TEST_PASSWORD } }))
      .body;
    const second = (
      await call(app, undefined, 'POST', '/api/auth/refresh', { body: { refreshToken: first.refreshToken } })
    ).body;
    expect(second.accessToken).toEqual(expect.any(String));
    const sessionsBefore = await database.db.collection('sessions').countDocuments();
    // The reuse itself writes the family's revocation (the defence); it issues nothing.
    const reuse = await call(app, undefined, 'POST', '/api/auth/refresh', {
      body: { refreshToken: first.refreshToken },
    });
    expect(reuse.status).toBe(401);
    expect(reuse.body.error.code).toBe('refresh_reused');
    expect(reuse.body.accessToken).toBeUndefined();
    expect(await database.db.collection('sessions').countDocuments()).toBe(sessionsBefore);
    await refusedAndNothingWritten([401], async () => [
      await call(app, undefined, 'POST', '/api/auth/refresh', { body: { refreshToken: second.refreshToken } }),
      await call(app, second.accessToken, 'PUT', `/api/applications/${pendingId}`, {
        body: { status: 'under_review', version: 1 },
      }),
      await call(app, undefined, 'POST', '/api/auth/refresh', {
        body: { refreshToken: `${first.refreshToken.split('.')[0]}.guess` },
      }),
    ]);
  });
});

describe('NoSQL operator injection, prototype keys: 400, nothing written', () => {
  it('operators in JSON bodies: login, create, PUT, batch-update, admin create and patch', async () => {
    const before = await snapshot();
    const cases: [string, string, unknown][] = [
      ['POST', '/api/auth/login', { email: { $ne: null }, password: { $ne: null } }],
      ['POST', '/api/auth/login', { email: { $regex: '.*' }, password: 'x' }],
      ['POST', '/api/auth/login', { email: 'admin@example.com', password: { $gt: '' } }],
      ['POST', '/api/auth/refresh', { refreshToken: { $ne: '' } }],
      ['POST', '/api/applications', { ...sample, applicantName: { $gt: '' } }],
      ['POST', '/api/applications', { ...sample, $where: 'sleep(1000)' }],
      ['PUT', `/api/applications/${pendingId}`, { version: { $gt: 0 }, status: 'under_review' }],
      ['PUT', `/api/applications/${pendingId}`, { version: 1, status: { $in: ['approved'] } }],
      ['PUT', `/api/applications/${pendingId}`, { version: 1, $set: { status: 'approved' } }],
      ['POST', '/api/applications/batch-update', { applicationIds: [{ $ne: null }], status: 'under_review' }],
      ['POST', '/api/applications/batch-update', { applicationIds: { $regex: '.*' }, status: 'under_review' }],
      ['POST', '/api/admins', { email: 'x@example.com', password: 'a long enough pw', roles: { $in: ['admin'] } }],
      ['PATCH', `/api/admins/${ids.viewer}`, { roles: ['viewer'], $set: { roles: ['admin'] } }],
    ];
    for (const [method, path, body] of cases) {
      const res = await call(app, tokens.admin, method, path, { body });
      expect(res.status, `${method} ${path} ${JSON.stringify(body)}`).toBe(400);
    }
    expect(await snapshot()).toEqual(before);
  });

  it('operators in query strings and path parameters', async () => {
    await refusedAndNothingWritten([400, 404], async () => {
      const replies: Reply[] = [];
      for (const query of [
        'status[$ne]=pending',
        `status=${encodeURIComponent('{"$ne":null}')}`,
        'sort[$where]=1',
        `cursor=${encodeURIComponent('{"$gt":""}')}`,
        'limit[$gt]=0',
        '$where=sleep(100)',
      ]) {
        replies.push(await call(app, tokens.admin, 'GET', `/api/applications?${query}`));
      }
      for (const id of [
        '$ne',
        encodeURIComponent('{"$regex":".*"}'),
        'APP-%24where',
        encodeURIComponent('{"$gt":""}'),
      ]) {
        replies.push(await call(app, tokens.admin, 'GET', `/api/applications/${id}`));
        replies.push(
          await call(app, tokens.admin, 'PUT', `/api/applications/${id}`, {
            body: { version: 1, status: 'under_review' },
          }),
        );
        replies.push(await call(app, tokens.admin, 'GET', `/api/documents/${id}`));
        replies.push(await call(app, tokens.admin, 'PATCH', `/api/admins/${id}`, { body: { disabled: true } }));
      }
      return replies;
    });
  });

  it('an operator-looking query key on a lenient query (/api/admins) is ignored as an unknown name, not passed on', async () => {
    const plain = await call(app, tokens.admin, 'GET', '/api/admins');
    const injected = await call(app, tokens.admin, 'GET', `/api/admins?after[$gt]=&${encodeURIComponent('$where')}=1`);
    expect(injected.status).toBe(200);
    expect(injected.body).toEqual(plain.body);
  });

  it('__proto__ and constructor keys in every JSON body, and no prototype is polluted', async () => {
    const bodies: [string, string, string][] = [
      ['POST', '/api/auth/login', '{"email":"a@example.com","password":"x","__proto__":{"roles":["admin"]}}'],
      [
        'POST',
        '/api/applications',
        `{"applicantName":"x","monthlyIncome":1,"loanAmount":1000,"termMonths":1,"__proto__":{"status":"approved"}}`,
      ],
      [
        'POST',
        '/api/applications',
        `{"applicantName":"x","monthlyIncome":1,"loanAmount":1000,"termMonths":1,"constructor":{"prototype":{"isAdmin":true}}}`,
      ],
      ['PUT', `/api/applications/${pendingId}`, '{"version":1,"__proto__":{"status":"approved"}}'],
      [
        'POST',
        '/api/applications/batch-update',
        `{"applicationIds":["${pendingId}"],"status":"under_review","__proto__":{"status":"approved"}}`,
      ],
      [
        'POST',
        '/api/admins',
        '{"email":"p@example.com","password":"a long enough pw","roles":["viewer"],"__proto__":{"roles":["admin"]}}',
      ],
      ['PATCH', `/api/admins/${ids.viewer}`, '{"disabled":false,"constructor":{"prototype":{"roles":["admin"]}}}'],
    ];
    const replies = await refusedAndNothingWritten([400], async () => {
      const out: Reply[] = [];
      for (const [method, path, body] of bodies) out.push(await call(app, tokens.admin, method, path, { body }));
      return out;
    });
    expect(replies).toHaveLength(bodies.length);
    const probe = {} as Record<string, unknown>;
    expect(probe.status).toBeUndefined();
    expect(probe.roles).toBeUndefined();
    expect(probe.isAdmin).toBeUndefined();
  });
});

describe('malformed bodies: a 4xx, never a 500 or a hang, nothing written', () => {
  const post = (body: BodyInit, type = 'application/json', path = '/api/applications') =>
    raw('POST', path, { headers: { authorization: `Bearer ${tokens.admin}`, 'content-type': type }, body });

  it('over BODY_LIMIT_BYTES over real HTTP: 413 with Content-Length, chunked, and a lying Content-Length is cut at its word', async () => {
    const big = JSON.stringify({ ...sample, purpose: 'x'.repeat(2 * 1024 * 1024) });
    const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 });
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    const { port } = server.address() as AddressInfo;
    const headers = { authorization: `Bearer ${tokens.admin}`, 'content-type': 'application/json' };
    const viaFetch = async (body: BodyInit): Promise<Reply> => {
      const res = await fetch(`http://127.0.0.1:${port}/api/applications`, {
        method: 'POST',
        headers,
        body,
        duplex: 'half',
      } as RequestInit);
      return { status: res.status, headers: res.headers, body: await res.json() };
    };
    /** A request whose Content-Length says 10 bytes while 2 MiB follow: the server reads 10. */
    const lying = () =>
      new Promise<Reply>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1');
        let text = '';
        // The answer to the 10-byte request; the bytes after them are a malformed next request, which
        // Node's parser refuses by closing the connection (ECONNRESET on our side, after the answer).
        const settle = () => {
          const end = text.indexOf('\r\n\r\n');
          if (end > 0 && text.includes('}', end)) {
            socket.destroy();
            resolve({
              status: Number(text.slice(9, 12)),
              headers: new Headers(),
              body: JSON.parse(text.slice(text.indexOf('{', end), text.indexOf('}}', end) + 2)),
            });
            return true;
          }
          return false;
        };
        socket.on('data', (chunk) => {
          text += chunk.toString();
          settle();
        });
        socket.on('error', (error) => {
          if (settle()) return;
          // Node's parser met the extra bytes before the app answered: its bare 400, then the reset.
          if (/^HTTP\/1\.1 4\d\d /.test(text)) {
            resolve({
              status: Number(text.slice(9, 12)),
              headers: new Headers(),
              body: { error: { code: 'node_http_parser' } },
            });
          } else reject(new Error(`${error}; received: ${text.slice(0, 300)}`));
        });
        socket.write(
          `POST /api/applications HTTP/1.1\r\nHost: x\r\nAuthorization: ${headers.authorization}\r\n` +
            `Content-Type: application/json\r\nContent-Length: 10\r\n\r\n${big}`,
        );
      });
    try {
      await refusedAndNothingWritten([400, 413], async () => {
        const sized = await viaFetch(big);
        const chunked = await viaFetch(
          new ReadableStream({
            start(controller) {
              const bytes = new TextEncoder().encode(big);
              for (let i = 0; i < bytes.length; i += 64 * 1024) controller.enqueue(bytes.slice(i, i + 64 * 1024));
              controller.close();
            },
          }),
        );
        expect(sized.status).toBe(413);
        expect(chunked.status).toBe(413);
        return [sized, chunked, await lying()];
      });
    } finally {
      server.close();
    }
  });

  it('deeply nested JSON (10,000 and 100,000 levels of arrays and objects): 400 within a second each', async () => {
    const replies = await refusedAndNothingWritten([400], async () => {
      const out: Reply[] = [];
      for (const depth of [10_000, 100_000]) {
        for (const [open, close] of [
          ['[', ']'],
          ['{"a":', '}'],
        ] as const) {
          const started = performance.now();
          out.push(await post(`${open.repeat(depth)}1${close.repeat(depth)}`));
          expect(performance.now() - started).toBeLessThan(1_000);
          const nestedField = `{"applicantName":${'['.repeat(depth)}${']'.repeat(depth)},"monthlyIncome":1,"loanAmount":1000,"termMonths":1}`;
          out.push(await post(nestedField));
        }
      }
      return out;
    });
    expect(replies).toHaveLength(8);
  });

  it('invalid UTF-8 in a JSON body, in a path and in a query: 400, nothing stored', async () => {
    const prefix = new TextEncoder().encode('{"applicantName":"');
    const suffix = new TextEncoder().encode('","monthlyIncome":1,"loanAmount":1000,"termMonths":1}');
    const bodies = [
      [0xff, 0xfe],
      [0xc3, 0x28], // a 2-byte sequence broken
      [0xed, 0xa0, 0x80], // a lone surrogate encoded
      [0xc0, 0xaf], // an overlong '/'
    ].map((bad) => new Uint8Array([...prefix, ...bad, ...suffix]));
    await refusedAndNothingWritten([400, 404], async () => {
      const out: Reply[] = [];
      for (const body of bodies) out.push(await post(body));
      out.push(await call(app, tokens.admin, 'GET', '/api/applications/APP-%FF%FE%FD%FC%FB%FA%F9%F8'));
      out.push(await call(app, tokens.admin, 'GET', '/api/applications?status=%FF'));
      out.push(await call(app, tokens.admin, 'PUT', '/api/applications/%C0%AF', { body: { version: 1 } }));
      return out;
    });
  });

  it('wrong content types: 415 for text/plain, form-urlencoded, multipart or none on JSON routes, JSON on the upload', async () => {
    const json = JSON.stringify(sample);
    await refusedAndNothingWritten([415], async () => [
      await post(json, 'text/plain'),
      await post(json, 'application/x-www-form-urlencoded'),
      await post(json, 'multipart/form-data; boundary=x'),
      await post(json, 'application/json-patch+json'),
      await post(json, 'text/json'),
      await raw('POST', '/api/applications', { headers: { authorization: `Bearer ${tokens.admin}` }, body: json }),
      await post(JSON.stringify({ file: 'x' }), 'application/json', `/api/applications/${pendingId}/documents`),
      await raw('POST', '/api/auth/login', {
        headers: { 'content-type': 'text/plain' },
        body: '{"email":"a@b.c","password":"x"}',
      }),
    ]);
  });
});

describe('document names: path traversal', () => {
  const upload = (filename: string, token = tokens.admin) => {
    const form = new FormData();
    form.append('file', new Blob([formPng() as Uint8Array<ArrayBuffer>], { type: 'image/png' }), filename);
    return app.request(`/api/applications/${pendingId}/documents`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      body: form,
    });
  };

  it('an upload named ../../etc/passwd (and worse) is stored under a safe name; the download is that document', async () => {
    const names = [
      '../../etc/passwd',
      '..\\..\\windows\\win.ini',
      '/etc/shadow',
      'a"\r\nX-Injected: 1.png',
      '%2e%2e%2fpasswd',
      '....//....//x.png',
    ];
    for (const name of names) {
      const res = await upload(name);
      expect(res.status, name).toBe(202);
      const { documentId } = await res.json();
      const stored = await database.db.collection('documents.files').findOne({ _id: documentId });
      expect(stored?.filename, name).toMatch(/^[A-Za-z0-9][A-Za-z0-9._-]*\.png$/);
      expect(stored?.filename).not.toContain('..');
      const download = await app.request(`/api/documents/${documentId}`, {
        headers: { authorization: `Bearer ${tokens.admin}` },
      });
      expect(download.status).toBe(200);
      expect(download.headers.get('content-disposition')).toBe(`attachment; filename="${stored?.filename}"`);
      expect(download.headers.get('x-injected')).toBeNull();
      expect(new Uint8Array(await download.arrayBuffer())).toEqual(formPng());
    }
  });

  it('a download by a path instead of a document id is 400/404 and never returns a file of the server', async () => {
    await refusedAndNothingWritten([400, 404], async () => {
      const out: Reply[] = [];
      for (const path of [
        '/api/documents/..%2F..%2F..%2F..%2Fetc%2Fpasswd',
        '/api/documents/%2Fetc%2Fpasswd',
        '/api/documents/....%2F%2Fetc%2Fpasswd',
        '/api/documents/DOC-..%2F..%2Fetc%2Fpasswd',
        '/api/documents/../../etc/passwd',
        '/api/documents/DOC-00000000-0000-0000-0000-000000000000',
      ]) {
        const res = await raw('GET', path, { headers: { authorization: `Bearer ${tokens.admin}` } });
        expect(JSON.stringify(res.body)).not.toContain('root:');
        out.push(res);
      }
      return out;
    });
  });
});

describe('role escalation through every mutating route', () => {
  const tricks: Record<string, string>[] = [
    {},
    { 'x-forwarded-for': '127.0.0.1', 'x-real-ip': '127.0.0.1', 'x-forwarded-host': 'localhost' },
    { 'x-forwarded-user': 'admin', 'x-remote-user': 'admin', 'x-roles': 'admin', 'x-user-role': 'admin' },
    { 'x-http-method-override': 'GET', 'x-original-url': '/health', 'x-rewrite-url': '/health' },
  ];

  /** Every mutating operation of the served spec, with a body that asks for more than the caller has. */
  async function mutatingOperations(): Promise<{ method: string; path: string; body?: unknown }[]> {
    const spec = (await (await app.request('/openapi.json')).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const bodies: Record<string, unknown> = {
      'POST /api/applications': { ...sample, roles: ['admin'], status: 'approved' },
      'PUT /api/applications/{id}': { status: 'approved', version: 3, roles: ['admin'] },
      'POST /api/applications/batch-update': { applicationIds: [pendingId], status: 'approved', roles: ['admin'] },
      'POST /api/admins': { email: 'evil@example.com', password: 'a long enough password', roles: ['admin'] },
      'PATCH /api/admins/{id}': { roles: ['admin'] },
      'POST /api/auth/login': { email: 'evil@example.com', password: 'x', roles: ['admin'] },
      'POST /api/auth/refresh': { refreshToken: 'x.y', roles: ['admin'] },
      'PUT /api/applications/{id}/presence': { editing: true, adminId: ids.admin, roles: ['admin'] },
    };
    const operations: { method: string; path: string; body?: unknown }[] = [];
    for (const [template, methods] of Object.entries(spec.paths)) {
      for (const method of Object.keys(methods)) {
        if (!['post', 'put', 'patch', 'delete'].includes(method)) continue;
        const key = `${method.toUpperCase()} ${template}`;
        const id = template.startsWith('/api/admins/')
          ? ids.viewer
          : template.includes('disburse')
            ? approvedId
            : pendingId;
        operations.push({ method: method.toUpperCase(), path: template.replace('{id}', id), body: bodies[key] });
      }
    }
    return operations;
  }

  it('a viewer and a reviewer, with extra fields and forwarded or override headers: refused on every route, nothing written', async () => {
    // The callers' sessions are live: a refusal must be about their roles, not a dead token.
    for (const role of ['viewer', 'reviewer'] as const) {
      expect((await call(app, tokens[role], 'GET', '/api/auth/me')).status, role).toBe(200);
    }
    const operations = await mutatingOperations();
    const paths = operations.map((o) => `${o.method} ${o.path}`);
    // Sanity: the routes that matter are all there.
    for (const expected of [
      '/api/admins',
      `/api/admins/${ids.viewer}`,
      `/api/applications/${approvedId}/disburse`,
      '/api/applications/batch-update',
    ]) {
      expect(
        paths.some((p) => p.endsWith(` ${expected}`)),
        expected,
      ).toBe(true);
    }
    // Session routes change only the caller's own session: they are not escalation paths. Upload is a
    // reviewer's right (applications:edit), so for a reviewer it is not one either; nor is saying (or
    // unsaying) that they are editing an application (presence), which marks only the caller.
    const own = new Set([
      '/api/auth/logout',
      '/api/auth/logout-all',
      '/api/console/session',
      '/api/console/session/refresh',
      // The payment provider's callback takes no session at all (roles mean nothing to it): only its HMAC
      // signature counts, refused with 401 (test/api/disburse-payments.test.ts); 404 here, where none is set.
      '/api/payments/webhook',
    ]);
    const replies = await refusedAndNothingWritten([400, 401, 403, 415], async () => {
      const out: Reply[] = [];
      for (const role of ['viewer', 'reviewer'] as const) {
        for (const operation of operations) {
          if (own.has(operation.path)) continue;
          if (role === 'reviewer' && /\/(documents|presence)$/.test(operation.path)) continue;
          for (const headers of tricks) {
            const reply = await call(app, tokens[role], operation.method, operation.path, {
              body: operation.body,
              headers,
            });
            out.push({ ...reply, body: { ...reply.body, operation: `${role} ${operation.method} ${operation.path}` } });
          }
        }
      }
      return out;
    }, ['sessions', 'revocations']);
    // Each refusal is the right kind: no route let a viewer or reviewer through to a write.
    for (const reply of replies) {
      expect(reply.status, reply.body.operation).not.toBe(200);
      // Outside the session routes (a login with a wrong password is a 401), a live token is never a 401.
      if (!reply.body.operation.includes(' /api/auth/')) expect(reply.status, reply.body.operation).not.toBe(401);
    }
    expect(replies.length).toBeGreaterThan(40);
    // The admins' roles are what they were; the viewer still is one.
    const me = await call(app, tokens.viewer, 'GET', '/api/auth/me');
    expect(me.body.roles).toEqual(['viewer']);
    expect((await services.admins.get(ids.reviewer))?.roles).toEqual(['reviewer']);
  });

  it('the legitimate path is open: an admin can do what the viewer could not (the refusals were about roles)', async () => {
    const { ids: own } = await adminsByRole(app, services, ['disburser'], 'legit.example.com');
    const res = await call(app, tokens.admin, 'PATCH', `/api/admins/${own.disburser}`, {
      body: { roles: ['disburser', 'viewer'] },
    });
    expect(res.status).toBe(200);
    expect(res.body.roles).toEqual(['disburser', 'viewer']);
    expect((await services.admins.get(own.disburser))?.roles).toEqual(['disburser', 'viewer']);
  });
});
