// The suite on a busy machine, as CI may meet it: every core kept busy by another process while the
// README's test command runs several times back to back. A timing assumption shows up here as a failure.
//   npm run test:under-load              3 runs of `npm test` beside `stress-ng --cpu <cores>`
//   npm run test:under-load -- 5         5 runs
// Without stress-ng (Debian's package; `npm run setup` installs it) a Node busy loop per core does the same.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { stopProcess } from './processes.ts';

const runs = Number(process.argv[2] ?? 3);
const cores = availableParallelism();

function startLoad(): ChildProcess[] {
  if (spawnSync('stress-ng', ['--version'], { stdio: 'ignore' }).status === 0)
    return [spawn('stress-ng', ['--cpu', String(cores), '--quiet'], { stdio: 'ignore' })];
  const spin = 'for (;;) {}';
  return Array.from({ length: cores }, () => spawn(process.execPath, ['-e', spin], { stdio: 'ignore' }));
}

function runSuite(): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn('npm', ['test'], { stdio: 'inherit' });
    child.on('exit', (code) => resolve(code ?? 1));
  });
}

const load = startLoad();
console.log(`load: ${load.length === 1 ? `stress-ng --cpu ${cores}` : `${cores} busy loops`}`);
const outcomes: string[] = [];
try {
  for (let run = 1; run <= runs; run++) {
    const started = Date.now();
    const code = await runSuite();
    outcomes.push(
      `run ${run}: ${code === 0 ? 'passed' : `failed (exit ${code})`} in ${Math.round((Date.now() - started) / 1000)} s`,
    );
    console.log(outcomes.at(-1));
  }
} finally {
  await Promise.all(load.map((child) => stopProcess(child, 2_000)));
}
console.log(outcomes.join('\n'));
process.exit(outcomes.every((line) => line.includes('passed')) ? 0 : 1);
