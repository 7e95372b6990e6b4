// /docs renders /openapi.json offline; the spec describes the routes from the same zod schemas.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { createApp } from '../../api/app.ts';
import { createTestApp } from '../support/app.ts';
import { openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
let app: ReturnType<typeof createApp>;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  ({ app } = await createTestApp(database.db));
});
afterAll(() => database.close());

/** Just enough DOM for the page's script: elements with attributes, children and text. */
class FakeNode {
  tag: string;
  attrs = new Map<string, string>();
  children: (FakeNode | string)[] = [];
  hidden = false;
  listeners = new Map<string, (event: unknown) => void>();
  constructor(tag: string) {
    this.tag = tag;
  }
  setAttribute(name: string, value: string) {
    this.attrs.set(name, value);
  }
  append(...nodes: (FakeNode | string)[]) {
    this.children.push(...nodes);
  }
  replaceChildren(...nodes: (FakeNode | string)[]) {
    this.children = nodes;
  }
  addEventListener(type: string, fn: (event: unknown) => void) {
    this.listeners.set(type, fn);
  }
  get dataset() {
    return { text: this.attrs.get('data-text') ?? '' };
  }
  set textContent(text: string) {
    this.children = [text];
  }
  get textContent(): string {
    return this.children.map((child) => (typeof child === 'string' ? child : child.textContent)).join('');
  }
  all(tag: string): FakeNode[] {
    return this.children.flatMap((child) =>
      typeof child === 'string' ? [] : [...(child.tag === tag ? [child] : []), ...child.all(tag)],
    );
  }
}

describe('/docs', () => {
  it('is an HTML page naming /openapi.json, whose script and style are files of this origin', async () => {
    const res = await app.request('/docs');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await res.text();
    expect(html).toContain('/openapi.json');
    // Nothing loaded from elsewhere: no src/href to another origin.
    expect(html).not.toMatch(/\b(src|href)=["']?(https?:)?\/\//i);
    expect([...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)].map((m) => [m[1], m[2]])).toEqual([
      [' src="/docs/docs.js"', ''],
    ]);
    expect([...html.matchAll(/<link[^>]+stylesheet[^>]*>/g)].map((m) => m[0])).toEqual([
      '<link rel="stylesheet" href="/docs/docs.css">',
    ]);
    for (const [path, type] of [
      ['/docs/docs.js', /^text\/javascript/],
      ['/docs/docs.css', /^text\/css/],
    ] as const) {
      const asset = await app.request(path);
      expect(asset.status).toBe(200);
      expect(asset.headers.get('content-type')).toMatch(type);
      expect((await asset.text()).length).toBeGreaterThan(1000);
    }
  });

  it("carries a strict CSP: this origin's files only, no inline script or style, no eval", async () => {
    for (const path of ['/docs', '/docs/docs.js', '/docs/docs.css']) {
      const res = await app.request(path);
      const csp = res.headers.get('content-security-policy') ?? '';
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("script-src 'self';");
      expect(csp).toContain("style-src 'self';");
      expect(csp).toContain("connect-src 'self'");
      expect(csp).not.toMatch(/unsafe-|nonce-|sha256-/);
    }
    const html = await (await app.request('/docs')).text();
    // Inline style elements, event handlers and style attributes would be blocked by this CSP.
    expect(html).not.toMatch(/<style|\son[a-z]+=|\sstyle=/i);
  });

  it('revalidates: the same page and files answer 304 to their ETag', async () => {
    for (const path of ['/docs', '/docs/docs.js', '/docs/docs.css']) {
      const res = await app.request(path);
      const tag = res.headers.get('etag');
      expect(tag).toBeTruthy();
      expect(res.headers.get('cache-control')).toBe('no-cache');
      expect((await app.request(path, { headers: { 'if-none-match': tag! } })).status).toBe(304);
    }
  });

  it("the page's script renders every operation of the spec", async () => {
    const script = await (await app.request('/docs/docs.js')).text();
    const spec = await (await app.request('/openapi.json')).json();
    const byId = new Map([
      ['title', new FakeNode('h1')],
      ['ops', new FakeNode('div')],
      ['filter', new FakeNode('input')],
    ]);
    const details: FakeNode[] = [];
    const fetched: string[] = [];
    const document = {
      title: '',
      createElement: (tag: string) => {
        const node = new FakeNode(tag);
        if (tag === 'details') details.push(node);
        return node;
      },
      getElementById: (id: string) => byId.get(id),
      querySelectorAll: () => details,
    };
    const fetch = async (url: string) => {
      fetched.push(url);
      return app.request(url);
    };
    runInNewContext(script, { document, fetch, Node: FakeNode });
    const ops = byId.get('ops')!;
    // The page renders once its fetch resolves: wait for that, however long a busy machine takes.
    await vi.waitFor(() => expect(ops.all('details').length).toBeGreaterThan(0), { timeout: 30_000, interval: 10 });

    expect(fetched).toEqual(['/openapi.json']);
    const rendered = ops.all('details');
    const expected = Object.entries(spec.paths as Record<string, Record<string, { summary?: string }>>).flatMap(
      ([path, item]) => Object.entries(item).map(([method, op]) => ({ path, method, summary: op.summary ?? '' })),
    );
    expect(rendered.length).toBe(expected.length);
    const texts = rendered.map((node) => node.textContent);
    for (const { path, method, summary } of expected) {
      expect(texts.some((t) => t.includes(method.toUpperCase()) && t.includes(path) && t.includes(summary))).toBe(true);
    }
    const createAdmin = texts.find((t) => t.startsWith('POST/api/admins'));
    // The request body schema is shown with its $refs resolved: the fields and their constraints.
    expect(createAdmin).toContain('"password"');
    expect(createAdmin).toContain('"minLength": 12');
    expect(createAdmin).toContain('409');
    expect(byId.get('title')?.textContent).toContain(spec.info.title);

    // The filter box hides what does not match.
    byId.get('filter')!.listeners.get('input')!({ target: { value: 'queue-stats' } });
    expect(details.filter((node) => !node.hidden).map((node) => node.attrs.get('data-text'))).toEqual([
      expect.stringContaining('/api/admin/queue-stats'),
    ]);
  });
});

describe('/openapi.json', () => {
  it('describes the auth and admin routes, with bearer security on protected ones', async () => {
    const res = await app.request('/openapi.json');
    expect(res.status).toBe(200);
    const spec = await res.json();
    expect(spec.openapi).toBe('3.1.0');
    expect(Object.keys(spec.paths)).toEqual(
      expect.arrayContaining([
        '/api/auth/login',
        '/api/auth/refresh',
        '/api/auth/logout',
        '/api/auth/logout-all',
        '/api/auth/me',
        '/api/admin/queue-stats',
        '/api/admins',
        '/api/admins/{id}',
      ]),
    );
    expect(spec.paths['/api/auth/login'].post.security).toBeUndefined();
    // A Bearer token, or the console's cookie session.
    expect(spec.paths['/api/auth/me'].get.security).toEqual([{ bearerAuth: [] }, { cookieAuth: [] }]);
    expect(spec.components.securitySchemes.cookieAuth).toMatchObject({
      type: 'apiKey',
      in: 'cookie',
      name: 'la_access',
    });
    expect(spec.paths['/api/admins/{id}'].patch.parameters).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: 'id', in: 'path', required: true })]),
    );
    expect(Object.keys(spec.paths['/api/admins'].post.responses)).toEqual(
      expect.arrayContaining(['201', '400', '401', '403', '409']),
    );
    expect(spec.components.schemas.QueueStats.required).toEqual(
      expect.arrayContaining([
        'pending',
        'processing',
        'completed',
        'failed',
        'delayed',
        'oldestWaitingAgeMs',
        'byName',
      ]),
    );
    expect(spec.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
    // Operational endpoints outside the API contract are not in the spec.
    expect(spec.paths['/docs']).toBeUndefined();
    expect(spec.paths['/metrics']).toBeUndefined();
  });
});

/**
 * What the spec promises per operation (tags, summary, parameters, request body, responses with their
 * headers and schemas, security) and which components exist: compared with a fixture taken from the code
 * before the routes were restructured, so a refactor cannot drop a parameter, a status or a security scheme.
 */
function specContract(spec: {
  paths: Record<string, Record<string, unknown>>;
  components: { schemas?: Record<string, unknown>; securitySchemes?: Record<string, unknown> };
}) {
  return {
    paths: spec.paths,
    schemas: Object.keys(spec.components.schemas ?? {}).sort(),
    securitySchemes: spec.components.securitySchemes,
  };
}

describe('/openapi.json contract', () => {
  it('describes the same operations, parameters, responses and security as the fixture', async () => {
    const spec = await (await app.request('/openapi.json')).json();
    const fixture = JSON.parse(
      readFileSync(join(import.meta.dirname, '..', 'fixtures', 'openapi-contract.json'), 'utf8'),
    );
    const contract = specContract(spec);
    expect(Object.keys(contract.paths).sort()).toEqual(Object.keys(fixture.paths).sort());
    expect(contract).toEqual(fixture);
  });
});
