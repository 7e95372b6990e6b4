// schemathesis (PyPI) in a virtual environment of the project's own, and a bounded run of it against a
// running API's /openapi.json. Node-only, used by scripts/setup.ts and test/security/schemathesis.test.ts.
//   node scripts/schemathesis.ts install                      create the venv and pip install the pinned version
//   node scripts/schemathesis.ts run <baseUrl> <token> [n]    run it (n examples per operation, default 20)
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const venvDir = join(here, '..', 'node_modules', '.cache', 'schemathesis-venv');
export const requirementsFile = join(here, 'schemathesis-requirements.txt');
export const schemathesisBin = join(venvDir, 'bin', 'schemathesis');
export const configFile = join(here, 'schemathesis.toml');

/** The checks we hold the API to (schemathesis 4 names); each is sound for our spec, see RELIABILITY.md. */
export const checks = [
  'not_a_server_error',
  'status_code_conformance',
  'content_type_conformance',
  'response_headers_conformance',
  'response_schema_conformance',
] as const;

export function installed(): boolean {
  return existsSync(schemathesisBin);
}

/** Creates the venv and installs the pinned schemathesis (about a minute the first time; a no-op after). */
export function install(log: (line: string) => void = console.log): void {
  if (installed()) {
    log(`schemathesis: installed (${schemathesisBin})`);
    return;
  }
  log('schemathesis: creating a virtualenv and installing from PyPI...');
  execFileSync('python3', ['-m', 'venv', venvDir], { stdio: 'inherit' });
  const pip = join(venvDir, 'bin', 'pip');
  execFileSync(pip, ['install', '-q', '--disable-pip-version-check', '-r', requirementsFile], { stdio: 'inherit' });
  log(`schemathesis: installed (${schemathesisBin})`);
}

export interface SchemathesisResult {
  code: number | null;
  output: string;
}

/** Runs schemathesis against `${baseUrl}/openapi.json` with a bearer token; bounded by maxExamples and a timeout. */
export function runSchemathesis(
  baseUrl: string,
  token: string,
  options: { maxExamples?: number; timeoutMs?: number; seed?: number; extraArgs?: string[] } = {},
): Promise<SchemathesisResult> {
  const args = [
    '--config-file',
    configFile,
    'run',
    `${baseUrl}/openapi.json`,
    '--url',
    baseUrl,
    '--header',
    `Authorization: Bearer ${token}`,
    '--checks',
    checks.join(','),
    '--max-examples',
    String(options.maxExamples ?? 20),
    '--seed',
    String(options.seed ?? 1),
    // One worker: with several threads CPython 3.11 trips over its own AST recursion counter inside
    // hypothesis ("AST constructor recursion depth mismatch"), measured with schemathesis 4.32.5.
    '--workers',
    '1',
    // No stateful phase: it follows links from GET /api/admins to PATCH our own admin, and a role change
    // ends that admin's sessions (by design), so the rest of the run would only see 401s.
    '--phases',
    'examples,coverage,fuzzing',
    '--request-timeout',
    '10',
    '--no-color',
    '--generation-database',
    'none',
    ...(options.extraArgs ?? []),
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(schemathesisBin, args, {
      // hypothesis keeps a cache (.hypothesis/) in the working directory: keep it out of the repository.
      cwd: venvDir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SCHEMATHESIS_HOOKS: '', NO_COLOR: '1', PYTHONUNBUFFERED: '1' },
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 150_000);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [mode, baseUrl, token, examples] = process.argv.slice(2);
  if (mode === 'install') install();
  else if (mode === 'run' && baseUrl && token) {
    const result = await runSchemathesis(baseUrl, token, { maxExamples: Number(examples ?? 20) });
    process.stdout.write(result.output);
    process.exit(result.code ?? 1);
  } else {
    console.error('usage: node scripts/schemathesis.ts install | run <baseUrl> <accessToken> [maxExamples]');
    process.exit(2);
  }
}
