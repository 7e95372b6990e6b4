// One-time set-up after `npm ci`: everything the tests need that npm does not bring.
// (Node itself comes from the `node` devDependency: npm scripts run on Node 24 even where the
// machine's node is older; wrangler/workerd and Deno come from npm too.)
//   - the offline MongoDB server's jars (Maven Central)
//   - nginx (Debian) for the load-balancer tests, DejaVu fonts (Debian) for the OCR test documents,
//     chromium (Debian) for the browser tests, prometheus (Debian: prometheus and promtool) for the
//     alert rules and the metrics tests, prometheus-alertmanager (Debian: the alertmanager and amtool)
//     for the alert routing tests, redis-server (Debian) for the optional Redis adapters' tests and
//     bench/redis.ts
//   - schemathesis (PyPI) in a virtualenv for the API fuzzing test
//   - compose-go (Go module proxy) for validating compose.yaml
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findAlertmanager, findAmtool } from './alertmanager.ts';
import { findChromium } from './browser.ts';
import { resolveKafkaClasspath } from './kafka/broker.ts';
import { resolveClasspath } from './mongo/offline-server.ts';
import { findNginx } from './nginx/nginx.ts';
import { findPrometheus, findPromtool } from './prometheus.ts';
import { findRedisServer } from './redis.ts';
import { install as installSchemathesis } from './schemathesis.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function have(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

console.log(`node ${process.version}`);

// Debian packages, installed only where missing (root and apt-get needed; otherwise say what is skipped).
const debian = [
  { name: 'nginx', present: () => findNginx() !== null, needFor: 'the nginx tests (test/deploy/nginx.test.ts)' },
  {
    name: 'fonts-dejavu-core',
    present: () => existsSync('/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf'),
    needFor: 'the OCR test documents (test/fixtures/documents.ts)',
  },
  {
    name: 'chromium',
    present: () => findChromium() !== null,
    needFor: 'the browser tests (test/browser/, driven by playwright-core)',
  },
  {
    name: 'prometheus',
    present: () => findPrometheus() !== null && findPromtool() !== null,
    needFor: 'the alert rules and the metrics tests (test/ops/)',
  },
  {
    name: 'prometheus-alertmanager',
    present: () => findAlertmanager() !== null && findAmtool() !== null,
    needFor: 'the alert routing tests (test/ops/alertmanager.test.ts)',
  },
  {
    name: 'redis-server',
    present: () => findRedisServer() !== null,
    needFor: 'the optional Redis adapters (test/integration/redis-*.test.ts, bench/redis.ts)',
  },
  {
    name: 'stress-ng',
    present: () => have('stress-ng', ['--version']),
    needFor: 'npm run test:under-load (the suite while every core is busy)',
  },
];
const missing = debian.filter((pkg) => !pkg.present());
if (missing.length === 0) console.log(`debian packages: ${debian.map((p) => p.name).join(', ')} present`);
else if (process.getuid?.() === 0 && have('apt-get', ['--version'])) {
  const names = missing.map((pkg) => pkg.name);
  console.log(`debian packages: installing ${names.join(', ')} with apt-get...`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', ...names], { stdio: 'inherit', env });
  for (const pkg of missing) if (!pkg.present()) console.log(`${pkg.name}: apt-get ran but it is still missing`);
} else {
  for (const pkg of missing)
    console.log(`${pkg.name}: not installed and not root with apt-get: needed for ${pkg.needFor}`);
}

if (have('python3', ['--version'])) installSchemathesis();
else console.log('schemathesis: python3 not found; test/security/schemathesis.test.ts will be skipped');

if (have('go', ['version'])) {
  execFileSync('go', ['mod', 'download'], { cwd: join(root, 'test/deploy/compose-check'), stdio: 'inherit' });
  console.log('compose-go: downloaded (validates compose.yaml in test/deploy/compose.test.ts)');
} else console.log('go not found: the compose.yaml checks will be skipped');

if (!have('java', ['-version']) || !have('mvn', ['-v'])) {
  console.log('java or mvn not found: the offline MongoDB server needs Java 17+ and Maven.');
  console.log('Set MONGO_URL to a MongoDB server, or run a Docker engine for testcontainers, instead.');
  process.exit(process.env.MONGO_URL ? 0 : 1);
}
const classpath = resolveClasspath();
console.log(`offline MongoDB server ready (${classpath.split(':').length} jars)`);
// Apache Kafka (KRaft, one node) for the outbox relay's test and benchmark, and `npm run kafka`.
const kafkaClasspath = resolveKafkaClasspath();
console.log(`Kafka broker ready (${kafkaClasspath.split(':').length} jars)`);
