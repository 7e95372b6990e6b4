// The console's build, held to what the admin gets: at most 100 KiB of gzipped JavaScript, a page that
// loads only this origin's content-hashed assets (no inline script or style for the CSP to allow), and
// a bundle that takes from shared/ only modules with no server code behind them.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { buildConsole, type ConsoleBuild } from '../../scripts/build-console.ts';

const root = join(import.meta.dirname, '..', '..');
let built: ConsoleBuild;
beforeAll(async () => {
  built = await buildConsole();
}, 60_000);

it('ships at most 100 KiB of gzipped JavaScript', () => {
  const js = built.assets.filter((asset) => asset.name.endsWith('.js'));
  expect(js.length).toBe(1);
  expect(js.reduce((sum, asset) => sum + asset.gzipBytes, 0)).toBeLessThanOrEqual(100 * 1024);
});

it('loads its content-hashed assets from this origin, with no inline script or style', () => {
  const refs = [...built.index.matchAll(/(?:src|href)="([^"]+)"/g)].map((match) => match[1]!);
  expect(refs.filter((ref) => ref !== 'data:,')).toEqual(built.assets.map((asset) => `/console/assets/${asset.name}`));
  for (const asset of built.assets) expect(asset.name).toMatch(/^console\.[\w-]{12}\.(js|css)$/);
  expect(built.index).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
  expect(built.index).not.toMatch(/<style|style="/);
});

it('imports from shared/ only modules that need no server (no database driver, no tokens, no Node)', () => {
  const files = readdirSync(join(root, 'console', 'src'), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && /\.tsx?$/.test(entry.name))
    .map((entry) => join(entry.parentPath, entry.name));
  const allowed = [
    'shared/identity/rbac.ts',
    'shared/identity/roles.ts',
    'shared/loans/applications/status.ts',
    // rbac.ts raises its refusals as these values
    'shared/core/errors.ts',
  ];
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    for (const [, kind, spec] of text.matchAll(/^\s*import (type )?[^'"]*from\s+['"]([^'"]+)['"]/gm)) {
      if (!spec!.startsWith('.')) {
        expect(spec, `${relative(root, file)} imports the package ${spec}`).toMatch(/^preact(\/hooks)?$/);
        continue;
      }
      const target = relative(root, join(file, '..', spec!));
      if (target.startsWith('console/') || kind) continue;
      expect(allowed, `${relative(root, file)} imports ${target}`).toContain(target);
    }
  }
});
