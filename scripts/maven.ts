// The classpath of a small Maven project (a pom.xml beside its launcher), resolved from Maven Central once
// and cached under node_modules/.cache/<name>; resolved again when a cached jar has gone. Node-only.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const cacheRoot = join(import.meta.dirname, '..', 'node_modules', '.cache');

export function mavenClasspath(pomDir: string, name: string): string {
  const cacheDir = join(cacheRoot, name);
  const classpathFile = join(cacheDir, 'classpath.txt');
  if (existsSync(classpathFile)) {
    const cp = readFileSync(classpathFile, 'utf8').trim();
    if (cp.split(':').every((jar) => existsSync(jar))) return cp;
  }
  mkdirSync(cacheDir, { recursive: true });
  execFileSync(
    'mvn',
    ['-q', '-f', join(pomDir, 'pom.xml'), 'dependency:build-classpath', `-Dmdep.outputFile=${classpathFile}`],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  return readFileSync(classpathFile, 'utf8').trim();
}
