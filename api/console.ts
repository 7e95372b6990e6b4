// The admin console, served by the API itself: one page at /console/ and its content-hashed assets
// under /console/assets/. The assets come from the build step (scripts/build-console.ts), compiled
// into this bundle, so Node, Deno and workerd serve the same bytes without reading files. The page
// runs under a strict Content-Security-Policy: its own scripts and styles only, requests to this
// origin only, nothing framed from or by anyone else.
import type { Context, Hono } from 'hono';
import type { AppEnv } from './auth.ts';
import { consoleAssets, consoleIndex } from './console-assets.gen.ts';
import { HttpError } from './http-errors.ts';

export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

export function consoleRoutes(app: Hono<AppEnv>) {
  const page = (c: Context<AppEnv>) => {
    c.header('Content-Security-Policy', CONSOLE_CSP);
    c.header('Cache-Control', 'no-cache');
    return c.html(consoleIndex);
  };
  app.get('/', (c) => c.redirect('/console/', 302));
  app.get('/console', (c) => c.redirect('/console/', 301));
  app.get('/console/', page);
  app.get('/console/assets/:name', (c) => {
    const asset = consoleAssets[c.req.param('name')];
    if (!asset) throw new HttpError(404, 'not_found', 'No such console asset.');
    // Names carry their content's hash: a new build is a new name, so an asset never changes.
    return c.body(asset.body, 200, {
      'Content-Type': asset.type,
      'Cache-Control': 'public, max-age=31536000, immutable',
      'Content-Security-Policy': CONSOLE_CSP,
    });
  });
}
