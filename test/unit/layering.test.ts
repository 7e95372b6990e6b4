// The house rules, checked on the source: shared/ imports nothing from api/ or workers/; inside shared/
// each group imports only the groups below it (core <- concurrency <- identity <- loans); and nothing
// under api/ or shared/ imports a Node-only module except behind the Node entry.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
/** Files that run only on Node: the Node entry and what only it imports. */
const nodeOnly = new Set(['api/node.ts', 'api/metrics.ts', 'api/otel.ts', 'api/redis.ts']);
/** The OpenTelemetry SDK stays behind the Node entry: shared/ and the app use @opentelemetry/api alone. */
const nodeOnlyPackages = [
  'prom-client',
  '@hono/node-server',
  'undici',
  'tesseract.js',
  'pdfjs-dist',
  '@opentelemetry/sdk-trace-base',
  '@opentelemetry/context-async-hooks',
  '@opentelemetry/exporter-trace-otlp-http',
  '@opentelemetry/resources',
  '@opentelemetry/core',
  'redis',
];

function sources(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => relative(root, join(entry.parentPath, entry.name)));
}

function imports(file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8');
  return [...text.matchAll(/^\s*(?:import|export)[^'"]*from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1]!);
}

describe('layering', () => {
  it('shared/ imports nothing from api/ or workers/', () => {
    for (const file of sources('shared')) {
      for (const spec of imports(file)) expect(spec, `${file} imports ${spec}`).not.toMatch(/\/(api|workers)\//);
    }
  });

  it('each group of shared/ imports only itself and the groups below it', () => {
    // Lowest first: a group may import the ones before it, never one after it.
    const groups = ['core', 'concurrency', 'identity', 'loans'];
    const files = sources('shared');
    expect(
      files.filter((file) => !groups.includes(file.split('/')[1]!)),
      'files outside the groups',
    ).toEqual([]);
    for (const file of files) {
      const rank = groups.indexOf(file.split('/')[1]!);
      for (const spec of imports(file).filter((s) => s.startsWith('.'))) {
        const target = relative(root, join(root, file, '..', spec));
        const targetRank = groups.indexOf(target.split('/')[1]!);
        expect(target.startsWith('shared/') && targetRank >= 0, `${file} imports ${spec}`).toBe(true);
        expect(targetRank, `${file} (${groups[rank]}) imports ${target} (${groups[targetRank]})`).toBeLessThanOrEqual(
          rank,
        );
      }
    }
  });

  it('the Redis adapters are loaded only when REDIS_URL is set: no static import of api/redis.ts', () => {
    for (const file of [...sources('shared'), ...sources('api')]) {
      expect(imports(file), `${file} imports api/redis.ts`).not.toContain('./redis.ts');
    }
    expect(readFileSync(join(root, 'api/node.ts'), 'utf8')).toMatch(/REDIS_URL \? \(await import\('\.\/redis\.ts'\)\)/);
  });

  it('api/ and shared/ use no Node-only module outside the Node entry', () => {
    const checked = [...sources('shared'), ...sources('api')].filter((file) => !nodeOnly.has(file));
    expect(checked.length).toBeGreaterThan(20);
    for (const file of checked) {
      for (const spec of imports(file)) {
        expect(spec, `${file} imports ${spec}`).not.toMatch(/^node:/);
        expect(
          nodeOnlyPackages.some((p) => spec === p || spec.startsWith(`${p}/`)),
          `${file} imports ${spec}`,
        ).toBe(false);
      }
    }
  });
});
