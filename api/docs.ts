// GET /docs: a page of our own that renders /openapi.json, with its script and style served beside it
// (/docs/docs.js, /docs/docs.css). No CDN and no network beyond this origin (the product runs offline), and
// a strict Content-Security-Policy: only files from this origin run, no inline script or style, no eval.
// Why not Swagger UI, Redoc or Scalar: BENCHMARKS.md (npm run bench:docs-renderers).
import type { Hono } from 'hono';
import { etag } from 'hono/etag';
import type { AppEnv } from './auth.ts';

const style = `body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232b;background:#f6f7f9}
header{background:#1d232b;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#b8c0cc}header a{color:inherit}main{max-width:1100px;margin:0 auto;padding:16px 24px}
input{width:100%;padding:8px;font:inherit;border:1px solid #c5ccd6;border-radius:4px;box-sizing:border-box}
h2{margin:24px 0 8px;font-size:16px;text-transform:uppercase;letter-spacing:.05em;color:#4a5563}
details{background:#fff;border:1px solid #dde2e8;border-radius:4px;margin:6px 0}
summary{cursor:pointer;padding:8px 10px;display:flex;gap:10px;align-items:baseline}
.m{font:bold 12px monospace;padding:2px 6px;border-radius:3px;color:#fff;min-width:52px;text-align:center}
.get{background:#1f63b0}.post{background:#1e7a43}.put{background:#8f5a00}.patch{background:#6b3fae}
.delete{background:#b02a2a}.p{font-family:monospace;font-weight:600}.s{color:#4a5563}
.body{padding:4px 14px 12px;border-top:1px solid #eef1f4}h3{font-size:13px;margin:12px 0 4px}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 8px;border-bottom:1px solid #eef1f4;vertical-align:top}
pre{background:#f2f4f7;padding:8px;border-radius:4px;margin:4px 0;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
.tag{display:inline-block;background:#e8ecf1;border-radius:10px;padding:0 8px;margin-right:4px;font-size:12px}
.err{color:#c94040}
`;

const script = `const specUrl = '/openapi.json';
const el = (tag, attrs, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children.flat(Infinity)) if (child != null) node.append(child instanceof Node ? child : String(child));
  return node;
};
let spec;
// Inline $refs (cycle-safe) so each schema reads on its own.
const resolve = (schema, seen = new Set()) => {
  if (Array.isArray(schema)) return schema.map((item) => resolve(item, seen));
  if (!schema || typeof schema !== 'object') return schema;
  if (typeof schema.$ref === 'string') {
    if (seen.has(schema.$ref)) return { $ref: schema.$ref };
    const target = schema.$ref.replace(/^#\\//, '').split('/').reduce((at, key) => at && at[key], spec);
    return resolve(target, new Set([...seen, schema.$ref]));
  }
  return Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, resolve(v, seen)]));
};
const schemaBlock = (content) =>
  Object.entries(content || {}).map(([type, media]) =>
    el('div', {}, el('div', { class: 's' }, type), el('pre', {}, JSON.stringify(resolve(media.schema), null, 2))));
const operation = (path, method, op) => {
  const params = (op.parameters || []).map((p) => resolve(p));
  const body = op.requestBody ? resolve(op.requestBody) : null;
  const text = [method, path, op.summary, (op.tags || []).join(' ')].join(' ').toLowerCase();
  return el('details', { 'data-text': text },
    el('summary', {}, el('span', { class: 'm ' + method }, method.toUpperCase()), el('span', { class: 'p' }, path),
      el('span', { class: 's' }, op.summary || ''), op.security && op.security.length ? el('span', { class: 'tag' }, 'signed in') : null),
    el('div', { class: 'body' },
      op.description ? el('p', {}, op.description) : null,
      el('div', {}, (op.tags || []).map((t) => el('span', { class: 'tag' }, t))),
      params.length ? [el('h3', {}, 'Parameters'), el('table', {},
        el('tr', {}, el('th', {}, 'name'), el('th', {}, 'in'), el('th', {}, 'required'), el('th', {}, 'schema')),
        params.map((p) => el('tr', {}, el('td', { class: 'p' }, p.name), el('td', {}, p.in), el('td', {}, p.required ? 'yes' : 'no'),
          el('td', {}, el('pre', {}, JSON.stringify(p.schema || {}, null, 2))))))] : null,
      body ? [el('h3', {}, 'Request body' + (body.required ? ' (required)' : '')), schemaBlock(body.content)] : null,
      el('h3', {}, 'Responses'),
      el('table', {}, Object.entries(op.responses || {}).map(([status, res]) =>
        el('tr', {}, el('td', { class: 'p' }, status), el('td', {}, resolve(res).description || '', schemaBlock(resolve(res).content))))),
    ));
};
const render = () => {
  document.title = spec.info.title + ' ' + spec.info.version;
  document.getElementById('title').textContent = spec.info.title + ' ' + spec.info.version;
  const byTag = new Map();
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of ['get', 'post', 'put', 'patch', 'delete', 'head', 'options']) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || 'other';
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, { ...op, parameters: [...(item.parameters || []), ...(op.parameters || [])] }));
    }
  }
  const root = document.getElementById('ops');
  root.replaceChildren(...[...byTag].flatMap(([tag, ops]) => [el('h2', {}, tag), ...ops]));
};
document.getElementById('filter').addEventListener('input', (event) => {
  const q = event.target.value.trim().toLowerCase();
  for (const node of document.querySelectorAll('details')) node.hidden = q !== '' && !node.dataset.text.includes(q);
});
fetch(specUrl, { headers: { accept: 'application/json' } })
  .then((res) => { if (!res.ok) throw new Error(specUrl + ': HTTP ' + res.status); return res.json(); })
  .then((json) => { spec = json; render(); })
  .catch((error) => { document.getElementById('ops').replaceChildren(el('p', { class: 'err' }, String(error))); });
`;

const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API documentation</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs/docs.css">
</head>
<body>
<header><h1 id="title">API documentation</h1><p>Rendered from <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1)</p></header>
<main>
<input id="filter" type="search" placeholder="Filter by path, method, summary or tag" aria-label="Filter operations">
<div id="ops"><p>Loading /openapi.json…</p></div>
</main>
<script src="/docs/docs.js"></script>
</body>
</html>`;

/** Only this origin's files run (no inline script or style, no eval); the script may fetch from this origin only. */
export const docsCsp = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export function docsRoutes(app: Hono<AppEnv>) {
  // The same bytes until the next deploy: revalidated each time, a 304 when unchanged.
  app.use('/docs', etag());
  app.use('/docs/*', etag());
  const headers = (type: string) => ({
    'content-type': type,
    'content-security-policy': docsCsp,
    'cache-control': 'no-cache',
  });
  app.get('/docs', (c) => c.body(page, 200, headers('text/html; charset=utf-8')));
  app.get('/docs/docs.js', (c) => c.body(script, 200, headers('text/javascript; charset=utf-8')));
  app.get('/docs/docs.css', (c) => c.body(style, 200, headers('text/css; charset=utf-8')));
}
