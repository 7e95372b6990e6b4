// One-time set-up after `npm ci`: fetches what the offline MongoDB server needs from Maven Central.
// (Node itself comes from the `node` devDependency: npm scripts run on Node 24 even where the
// machine's node is older.)
import { execFileSync } from 'node:child_process';
import { resolveClasspath } from './mongo/offline-server.ts';

function have(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

console.log(`node ${process.version}`);
if (!have('java', ['-version']) || !have('mvn', ['-v'])) {
  console.log('java or mvn not found: the offline MongoDB server needs Java 17+ and Maven.');
  console.log('Set MONGO_URL to a MongoDB server, or run a Docker engine for testcontainers, instead.');
  process.exit(process.env.MONGO_URL ? 0 : 1);
}
const classpath = resolveClasspath();
console.log(`offline MongoDB server ready (${classpath.split(':').length} jars)`);
