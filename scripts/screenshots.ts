// `npm run screenshots`: remakes the README's pictures of the admin console. The browser tests drive
// the console as admins use it and keep a screenshot of each main screen under test-results/browser/;
// this runs them and copies the work queue and the three-way conflict dialog to docs/images/.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const shots = join(root, 'test-results', 'browser');
const target = join(root, 'docs', 'images');
const readme = ['console-queue.png', 'console-conflict.png'];

const run = spawnSync(
  process.execPath,
  [
    join(root, 'node_modules', 'vitest', 'vitest.mjs'),
    'run',
    'test/browser/console-flows.test.ts',
    'test/browser/console-pipeline.test.ts',
  ],
  { cwd: root, stdio: 'inherit' },
);
if (run.status !== 0) {
  console.error('the browser tests failed: the pictures are not replaced');
  process.exit(run.status ?? 1);
}
mkdirSync(target, { recursive: true });
for (const name of readme) {
  copyFileSync(join(shots, name), join(target, name));
  console.log(`docs/images/${name}`);
}
