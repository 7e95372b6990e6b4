// The edge bundle: `wrangler deploy --dry-run` bundles api/cloudflare.ts offline, and nothing Node-only
// that the Node entry uses (prom-client, @hono/node-server) ends up in it.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { expect, it } from 'vitest';

it('bundles for workerd offline, without the Node-only parts, under 4.5 MiB (1 MiB gzip)', async () => {
  const outdir = mkdtempSync(join(tmpdir(), 'workers-bundle-'));
  try {
    const wrangler = join(import.meta.dirname, '..', '..', 'node_modules', '.bin', 'wrangler');
    const output = await new Promise<string>((resolve, reject) =>
      execFile(
        wrangler,
        ['deploy', '--dry-run', '--outdir', outdir],
        { env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: 'true' }, timeout: 120_000 },
        (error, stdout, stderr) =>
          error ? reject(new Error(`${error.message}\n${stdout}\n${stderr}`)) : resolve(stdout),
      ),
    );
    expect(output).toContain('--dry-run: exiting now.');
    const bundle = join(outdir, 'cloudflare.js');
    const code = readFileSync(bundle);
    const size = statSync(bundle).size;
    const gzip = gzipSync(code).length;
    console.log(`workers bundle: ${(size / 1024).toFixed(0)} KiB, ${(gzip / 1024).toFixed(0)} KiB gzip`);
    // Cloudflare bounds the compressed size (3 MiB on the free plan); the raw bound only catches a
    // dependency dragged in whole (4,091 KiB before the console session, 4,110 KiB with it).
    expect(size).toBeLessThan(4.5 * 1024 * 1024);
    expect(gzip).toBeLessThan(1024 * 1024);
    const text = code.toString();
    for (const nodeOnly of ['prom-client', '@hono/node-server', 'collectDefaultMetrics'])
      expect(text).not.toContain(nodeOnly);
    expect(text).toContain('createApp');
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}, 150_000);
