// compose.yaml, loaded by compose-go (the library Docker Compose itself uses: the Compose
// Specification's JSON schema, interpolation, semantic checks) through test/deploy/compose-check, then
// checked against what the services need; and the Dockerfile's basics. No Docker engine runs here.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnv } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { findAmtool, placeholderUrl } from '../../scripts/alertmanager.ts';
import { ensureDeploymentSecrets, writeMetricsTokenFile } from '../../scripts/deploy-keys.ts';
import { findPromtool } from '../../scripts/prometheus.ts';
import { apiConfigSchema, configSchema } from '../../shared/core/config.ts';
import { randomJwtKeys } from '../support/app.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const checker = join(root, 'test/deploy/compose-check');
const read = (file: string) => readFileSync(join(root, file), 'utf8');

function haveGo(): boolean {
  try {
    execFileSync('go', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
// Without Go the compose checks are skipped by name, except in CI.
const noGo = !haveGo() && !process.env.CI;

/** Runs compose-check on a compose file; the first run downloads and compiles compose-go (about 40 s). */
function loadCompose(file: string, env: Record<string, string> = {}) {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) =>
        !/^(JWT_KEYS|LEDGER_|METRICS_TOKEN|ADMIN_|MONGO_|LOG_LEVEL|DB_POOL_MAX|KAFKA_|COMPOSE_PROFILES|OTEL_|PAYMENT_|REDIS_URL)/.test(
          name,
        ),
    ),
  );
  const run = spawnSync('go', ['run', '.', file], {
    cwd: checker,
    env: { ...base, ...env },
    encoding: 'utf8',
    maxBuffer: 16 * 1024 * 1024,
  });
  return { ok: run.status === 0, error: run.stderr, project: run.status === 0 ? JSON.parse(run.stdout) : null };
}

// biome-ignore lint/suspicious/noExplicitAny: the resolved project is checked field by field
type Service = any;
/** A service's environment as the container gets it: unset pass-through variables are absent. */
const envOf = (service: Service): Record<string, string> =>
  Object.fromEntries(Object.entries(service.environment ?? {}).filter(([, value]) => value !== null)) as Record<
    string,
    string
  >;

describe.skipIf(noGo)(noGo ? 'compose.yaml (skipped: go is not installed)' : 'compose.yaml', () => {
  const jwtKeys = randomJwtKeys('k1');
  const keys = { JWT_KEYS: jwtKeys, LEDGER_KEYS: randomJwtKeys('ledger1') };
  let services: Record<string, Service>;
  // biome-ignore lint/suspicious/noExplicitAny: see Service
  let project: any;

  beforeAll(() => {
    // Secrets set in the shell pass through (and win over the keys service's file).
    const loaded = loadCompose(join(root, 'compose.yaml'), {
      ...keys,
      METRICS_TOKEN: 'a-metrics-token-of-32-characters',
    });
    expect(loaded.error).toBe('');
    project = loaded.project;
    services = project.services;
  }, 240_000);

  it('is valid against the Compose Specification and names every service', () => {
    expect(Object.keys(services).sort()).toEqual([
      'alertmanager',
      'api',
      'approval',
      'grafana',
      'keys',
      'mongo',
      'nginx',
      'ocr',
      'prometheus',
    ]);
  });

  it('starts Kafka and the outbox relay only with the kafka profile, the relay pointed at that broker', () => {
    expect(services.kafka).toBeUndefined();
    expect(services.relay).toBeUndefined();
    const loaded = loadCompose(join(root, 'compose.yaml'), { ...keys, COMPOSE_PROFILES: 'kafka' });
    expect(loaded.error).toBe('');
    const { kafka, relay } = loaded.project.services;
    expect(kafka.environment.KAFKA_ADVERTISED_LISTENERS).toBe('PLAINTEXT://kafka:9092');
    expect(kafka.environment.KAFKA_PROCESS_ROLES).toBe('broker,controller');
    expect(relay.command.at(-1)).toBe('workers/relay/main.ts');
    expect(existsSync(join(root, relay.command.at(-1)))).toBe(true);
    expect(relay.depends_on.kafka.condition).toBe('service_healthy');
    const env = envOf(relay);
    expect(env.KAFKA_BROKERS).toBe('kafka:9092');
    // The relay's environment passes the same config schema it checks at start.
    const config = configSchema.parse(env);
    expect(config.KAFKA_BROKERS).toEqual(['kafka:9092']);
    expect(config.KAFKA_TOPIC).toBe('loan-admin.application-changes');
    // Probes and metrics as the workers have them, scraped by Prometheus's relay job.
    expect(config.WORKER_PROBE_PORT).toBeGreaterThan(0);
    expect(relay.healthcheck.test.join(' ')).toContain(`127.0.0.1:${config.WORKER_PROBE_PORT}/ready`);
    expect(relay.environment).toHaveProperty('METRICS_TOKEN');
    expect(read('ops/prometheus/prometheus.yml')).toMatch(
      new RegExp(
        `job_name: relay\\n\\s+dns_sd_configs:\\n\\s+- names: \\[relay\\]\\n\\s+type: A\\n\\s+port: ${config.WORKER_PROBE_PORT}\\n`,
      ),
    );
  }, 120_000);

  it('is rejected by the same loader when a key is misspelt (the schema is really applied)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'compose-'));
    try {
      writeFileSync(join(dir, 'compose.yaml'), read('compose.yaml').replace('replicas: 3', 'replcas: 3'));
      const loaded = loadCompose(join(dir, 'compose.yaml'), keys);
      expect(loaded.ok).toBe(false);
      expect(loaded.error).toMatch(/replcas/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it('loads with no secret in the shell or .env: nothing to do by hand before `docker compose up -d`', () => {
    const loaded = loadCompose(join(root, 'compose.yaml'));
    expect(loaded.error).toBe('');
    const env = envOf(loaded.project.services.api);
    // Unset stays unset (an empty value would hide the volume's): the keys service's file supplies them.
    for (const name of ['JWT_KEYS', 'LEDGER_KEYS', 'METRICS_TOKEN']) expect(env[name], name).toBeUndefined();
  }, 120_000);

  it('makes the secrets once into a volume that every API instance and worker reads, after the keys service', () => {
    const keys = services.keys;
    const [node, scriptPath, file, owner, tokenFile, tokenOwner] = keys.command;
    // The token alone, for Prometheus's user (nobody) in the same volume.
    expect(dirname(tokenFile)).toBe(dirname(file));
    expect(tokenOwner).toBe('65534:65534');
    expect(node).toBe('node');
    expect(existsSync(join(root, scriptPath))).toBe(true);
    expect(owner).toBe('1000:1000'); // the image's `node` user reads what root wrote
    expect(keys.restart).toBe('no');
    expect(keys.image).toBe(services.api.image);
    const secretsVolume = keys.volumes.find((v: { target: string }) => v.target === dirname(file));
    expect(secretsVolume).toMatchObject({ type: 'volume' });
    expect(Object.keys(project.volumes)).toContain(secretsVolume.source);
    for (const name of ['api', 'ocr', 'approval']) {
      const service = services[name];
      expect(service.depends_on.keys.condition, name).toBe('service_completed_successfully');
      expect(service.command.slice(0, 2), name).toEqual(['node', `--env-file-if-exists=${file}`]);
      expect(service.volumes, name).toContainEqual(
        expect.objectContaining({
          type: 'volume',
          source: secretsVolume.source,
          target: dirname(file),
          read_only: true,
        }),
      );
    }
    // What the script writes is what the API needs: its environment plus the file passes the API schema.
    const dir = mkdtempSync(join(tmpdir(), 'keys-'));
    try {
      const envFile = join(dir, 'app.env');
      expect(ensureDeploymentSecrets(envFile).sort()).toEqual(['JWT_KEYS', 'LEDGER_KEYS', 'METRICS_TOKEN']);
      const first = readFileSync(envFile, 'utf8');
      expect(statSync(envFile).mode & 0o777).toBe(0o600);
      expect(ensureDeploymentSecrets(envFile)).toEqual([]); // a restart keeps the same keys
      expect(readFileSync(envFile, 'utf8')).toBe(first);
      const secrets = parseEnv(first);
      const apiEnv = Object.fromEntries(Object.entries(envOf(services.api)).filter(([k]) => k !== 'JWT_KEYS'));
      const config = apiConfigSchema.parse({ ...apiEnv, ...secrets });
      expect(config.JWT_KEYS).toBe(secrets.JWT_KEYS);
      expect(config.METRICS_TOKEN).toMatch(/^[0-9a-f]{64}$/);
      expect(secrets.LEDGER_KEYS).toMatch(/^l1:[A-Za-z0-9+/]{43}=$/); // kid:base64 of 32 bytes
      // A file that already has a key keeps it and gets only the missing ones.
      const partial = join(dir, 'partial.env');
      writeFileSync(partial, `JWT_KEYS=${jwtKeys}`);
      expect(ensureDeploymentSecrets(partial).sort()).toEqual(['LEDGER_KEYS', 'METRICS_TOKEN']);
      expect(parseEnv(readFileSync(partial, 'utf8')).JWT_KEYS).toBe(jwtKeys);
      const token = join(dir, 'metrics-token');
      writeMetricsTokenFile(envFile, token);
      expect(readFileSync(token, 'utf8')).toBe(secrets.METRICS_TOKEN);
      expect(statSync(token).mode & 0o777).toBe(0o400);
      writeMetricsTokenFile(envFile, token); // a restart rewrites it
      expect(readFileSync(token, 'utf8')).toBe(secrets.METRICS_TOKEN);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('does not open /metrics through nginx (nginx.conf answers it itself; test/deploy/nginx.test.ts runs it)', () => {
    expect(read('nginx.conf')).toMatch(/location ~\* \^\/metrics\(\/\|\$\) \{[^}]*return 404/);
  });

  it('runs MongoDB as a single-node replica set, initiated by its healthcheck, on a volume', () => {
    const mongo = services.mongo;
    expect(mongo.image).toMatch(/^mongo:\d/);
    expect(mongo.command.join(' ')).toContain('--replSet rs0');
    const check = mongo.healthcheck.test.join(' ');
    expect(check).toContain('rs.initiate');
    expect(check).toContain("host: 'mongo:27017'");
    expect(mongo.volumes).toContainEqual(expect.objectContaining({ type: 'volume', target: '/data/db' }));
    expect(Object.keys(project.volumes)).toContain(mongo.volumes[0].source);
  });

  it('runs three API replicas whose environment passes the API config schema', () => {
    const api = services.api;
    expect(api.deploy.replicas).toBe(3);
    expect(api.command[0]).toBe('node');
    expect(api.command.at(-1)).toBe('api/node.ts');
    expect(api.depends_on.mongo.condition).toBe('service_healthy');
    expect(api.healthcheck.test.join(' ')).toContain('/ready');
    const env = envOf(api);
    const config = apiConfigSchema.parse(env);
    expect(config.TRUST_PROXY).toBe(true); // behind nginx: the client address comes from X-Real-IP
    expect(config.JWT_KEYS).toBe(jwtKeys);
    expect(config.LEDGER_KEYS).toBe(keys.LEDGER_KEYS);
    expect(env.LEDGER_SIGNING_KID).toBeUndefined();
    expect(new URL(config.MONGO_URL).host).toBe('mongo:27017');
    expect(new URL(config.MONGO_URL).searchParams.get('replicaSet')).toBe('rs0');
    expect(env.ADMIN_EMAIL).toBeUndefined(); // unset stays unset (an empty string would fail the schema)
    expect(api.healthcheck.test.join(' ')).toContain(`127.0.0.1:${config.PORT}/`);
  });

  it('runs the OCR and approval workers, scalable, with probes on WORKER_PROBE_PORT', () => {
    for (const name of ['ocr', 'approval']) {
      const worker = services[name];
      expect(worker.deploy.replicas).toBeGreaterThanOrEqual(1);
      expect(worker.depends_on.mongo.condition).toBe('service_healthy');
      expect(existsSync(join(root, worker.command.at(-1)))).toBe(true);
      expect(worker.command.at(-1)).toBe(`workers/${name}/main.ts`);
      const config = configSchema.parse(envOf(worker));
      expect(config.WORKER_PROBE_PORT).toBeGreaterThan(0);
      expect(worker.healthcheck.test.join(' ')).toContain(`127.0.0.1:${config.WORKER_PROBE_PORT}/ready`);
      expect(worker.image).toBe(services.api.image); // one image, several commands
    }
  });

  const mountOf = (service: Service, target: string) =>
    service.volumes.find((v: { target: string }) => v.target === target);

  it('runs Prometheus on the repository config and alert rules, scraping every API and worker replica with the token', () => {
    const prometheus = services.prometheus;
    expect(prometheus.image).toMatch(/^prom\/prometheus:v\d/);
    for (const [file, target] of [
      ['ops/prometheus/prometheus.yml', '/etc/prometheus/prometheus.yml'],
      ['ops/prometheus/alerts.yml', '/etc/prometheus/alerts.yml'],
    ]) {
      expect(relative(root, mountOf(prometheus, target!).source), target).toBe(file);
      expect(mountOf(prometheus, target!).read_only).toBe(true);
    }
    const config = read('ops/prometheus/prometheus.yml');
    expect(config).toContain('- /etc/prometheus/alerts.yml');
    // Each job finds its service's replicas by DNS, on the port the service listens on.
    const ports = {
      api: envOf(services.api).PORT,
      ocr: envOf(services.ocr).WORKER_PROBE_PORT,
      approval: envOf(services.approval).WORKER_PROBE_PORT,
    };
    for (const [job, port] of Object.entries(ports)) {
      expect(config, job).toMatch(
        new RegExp(
          `job_name: ${job}\\n\\s+dns_sd_configs:\\n\\s+- names: \\[${job}\\]\\n\\s+type: A\\n\\s+port: ${port}\\n`,
        ),
      );
      // The workers get the API's token (shell or .env) too, else all read the volume's.
      expect(services[job].environment, job).toHaveProperty('METRICS_TOKEN');
    }
    // The fourth: the relay's job (its service only with the kafka profile; checked with it above).
    expect(config.match(/credentials_file: \/tmp\/metrics-token/g)).toHaveLength(4);
    const script = prometheus.command.join(' ');
    expect(script).toContain(`${services.keys.command[4]} > /tmp/metrics-token`);
    expect(script).toContain('"$METRICS_TOKEN"'); // $$ in compose.yaml: the container's shell expands it
    expect(envOf(prometheus).METRICS_TOKEN).toBe('a-metrics-token-of-32-characters');
    expect(mountOf(prometheus, '/run/loan-admin')).toMatchObject({ type: 'volume', read_only: true });
    expect(prometheus.depends_on.keys.condition).toBe('service_completed_successfully');
    expect(prometheus.ports).toContainEqual(expect.objectContaining({ target: 9090, host_ip: '127.0.0.1' }));
  });

  it.skipIf(!findPromtool())('has a Prometheus config that promtool accepts (skipped without promtool)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'prometheus-config-'));
    try {
      writeFileSync(join(dir, 'token'), 'x');
      const config = read('ops/prometheus/prometheus.yml')
        .replace('/etc/prometheus/alerts.yml', join(root, 'ops/prometheus/alerts.yml'))
        .replaceAll('/tmp/metrics-token', join(dir, 'token'));
      writeFileSync(join(dir, 'prometheus.yml'), config);
      const checked = spawnSync(findPromtool()!, ['check', 'config', join(dir, 'prometheus.yml')], {
        encoding: 'utf8',
      });
      const rules = (read('ops/prometheus/alerts.yml').match(/^\s*- alert:/gm) ?? []).length;
      expect(rules).toBeGreaterThan(0);
      expect(checked.stdout + checked.stderr).toContain(`SUCCESS: ${rules} rules found`);
      expect(checked.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!findAmtool())(
    "runs Alertmanager on the repository configuration, its receivers from the environment, as Prometheus's target (skipped without amtool)",
    () => {
      const alertmanager = services.alertmanager;
      expect(alertmanager.image).toMatch(/^prom\/alertmanager:v\d/);
      const mount = mountOf(alertmanager, '/etc/alertmanager/alertmanager.yml');
      expect(relative(root, mount.source)).toBe('ops/alertmanager/alertmanager.yml');
      expect(mount.read_only).toBe(true);
      expect(alertmanager.ports).toContainEqual(expect.objectContaining({ target: 9093, host_ip: '127.0.0.1' }));
      expect(read('ops/prometheus/prometheus.yml')).toMatch(
        /alertmanagers:\n\s+- static_configs:\n\s+- targets: \[alertmanager:9093\]/,
      );
      for (const name of ['ALERT_PAGE_URL', 'ALERT_TICKET_URL', 'ALERT_HEARTBEAT_URL']) {
        expect(alertmanager.environment, name).toHaveProperty(name);
      }
      // The service's own start command, run here up to its exec: with two URLs set and one not, the file
      // it writes names them, keeps the third placeholder, and amtool accepts it.
      const script = alertmanager.command.join(' ') as string;
      expect(script).toContain('exec /bin/alertmanager --config.file=/tmp/alertmanager.yml');
      const dir = mkdtempSync(join(tmpdir(), 'alertmanager-config-'));
      try {
        const render = script
          .slice(0, script.indexOf(' && exec '))
          .replace('/etc/alertmanager/alertmanager.yml', join(root, 'ops/alertmanager/alertmanager.yml'))
          .replace('/tmp/alertmanager.yml', join(dir, 'alertmanager.yml'));
        const rendered = spawnSync('/bin/sh', ['-c', render], {
          encoding: 'utf8',
          env: { ALERT_PAGE_URL: 'https://pager.example.com/hook', ALERT_TICKET_URL: 'https://tickets.example.com/in' },
        });
        expect(rendered.status, rendered.stderr).toBe(0);
        const config = readFileSync(join(dir, 'alertmanager.yml'), 'utf8');
        expect(config).toContain('url: https://pager.example.com/hook');
        expect(config).toContain('url: https://tickets.example.com/in');
        expect(config).toContain(`url: ${placeholderUrl('heartbeat')}`);
        for (const receiver of ['page', 'ticket'] as const) expect(config).not.toContain(placeholderUrl(receiver));
        const checked = spawnSync(findAmtool()!, ['check-config', join(dir, 'alertmanager.yml')], { encoding: 'utf8' });
        expect(checked.stdout + checked.stderr).toContain('SUCCESS');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it('runs Grafana with the repository dashboards and a data source that names the prometheus service', () => {
    const grafana = services.grafana;
    expect(grafana.image).toMatch(/^grafana\/grafana:\d/);
    expect(relative(root, mountOf(grafana, '/etc/grafana/provisioning').source)).toBe('ops/grafana/provisioning');
    const dashboards = mountOf(grafana, '/etc/grafana/dashboards');
    expect(relative(root, dashboards.source)).toBe('ops/grafana/dashboards');
    expect(read('ops/grafana/provisioning/dashboards/loan-admin.yml')).toMatch(
      /^\s+path: \/etc\/grafana\/dashboards$/m,
    );
    const datasource = read('ops/grafana/provisioning/datasources/prometheus.yml');
    expect(datasource).toMatch(/^\s+url: http:\/\/prometheus:9090$/m);
    const uid = /^\s+uid: (\S+)$/m.exec(datasource)![1];
    const files = readdirSync(join(root, 'ops/grafana/dashboards'));
    expect(files.sort()).toEqual(['api.json', 'money.json', 'queue-workers.json']);
    const uids = new Set<string>();
    for (const file of files) {
      const dashboard = JSON.parse(read(`ops/grafana/dashboards/${file}`));
      uids.add(dashboard.uid);
      for (const panel of dashboard.panels) {
        expect(panel.datasource, `${file} ${panel.title}`).toEqual({ type: 'prometheus', uid });
        for (const target of panel.targets) expect(target.datasource.uid).toBe(uid);
      }
    }
    expect(uids.size).toBe(files.length);
    expect(grafana.depends_on.prometheus.condition).toBe('service_healthy');
    expect(envOf(grafana).GF_SECURITY_ADMIN_PASSWORD).toBeUndefined(); // unset stays unset
    expect(envOf(grafana).GF_AUTH_ANONYMOUS_ENABLED).toBe('false');
    expect(grafana.ports).toContainEqual(expect.objectContaining({ target: 3000, host_ip: '127.0.0.1' }));
  });

  it('puts nginx on port 80 with the repository nginx.conf, after the API is healthy', () => {
    const nginx = services.nginx;
    expect(nginx.ports).toContainEqual(expect.objectContaining({ target: 80, published: '80' }));
    const mount = nginx.volumes.find((v: { target: string }) => v.target === '/etc/nginx/nginx.conf');
    expect(relative(root, mount.source)).toBe('nginx.conf');
    expect(mount.read_only).toBe(true);
    expect(nginx.depends_on.api.condition).toBe('service_healthy');
    // The upstream names the API service and the port it listens on.
    const port = envOf(services.api).PORT;
    expect(read('nginx.conf')).toMatch(new RegExp(`^\\s*server api:${port} `, 'm'));
    expect(nginx.healthcheck.test.join(' ')).toContain('/health');
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');
  const lines = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
  const stages = lines.reduce<string[][]>((acc, line) => {
    if (/^FROM\s/i.test(line)) acc.push([]);
    acc.at(-1)?.push(line);
    return acc;
  }, []);
  const runtime = stages.at(-1) ?? [];
  const ignored = read('.dockerignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));

  it('is multi-stage, on Node 24 slim, with production dependencies from the lockfile', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:24-slim$/m);
    for (const stage of stages) expect(stage[0]).toMatch(/^FROM \$\{NODE_IMAGE\} AS \w+$/);
    expect(lines.some((l) => /^RUN npm ci --omit=dev\b/.test(l))).toBe(true);
    expect(runtime.some((l) => /^COPY --from=\w+ \/app\/node_modules /.test(l))).toBe(true);
  });

  it('builds the console in a stage of its own from sources .dockerignore lets through, and the runtime carries it', () => {
    const build = stages.find((stage) => stage.some((l) => /^RUN .*node scripts\/build-console\.ts/.test(l)));
    expect(build).toBeDefined();
    for (const source of ['console', 'shared', 'scripts/build-console.ts']) {
      expect(
        build!.some((l) => l.startsWith(`COPY ${source} `)),
        source,
      ).toBe(true);
      expect(ignored, source).not.toContain(source);
    }
    expect(runtime.some((l) => /^COPY --from=\w+ \/app\/api\/console-assets\.gen\.ts \.\/api\/$/.test(l))).toBe(true);
  });

  it('runs as a non-root user with a healthcheck and the API as its command', () => {
    const user = runtime.filter((l) => /^USER\s/.test(l)).at(-1);
    expect(user).toBeDefined();
    expect(user).not.toMatch(/^USER\s+(root|0)(:|$)/);
    const last = (directive: string) => runtime.filter((l) => l.startsWith(`${directive} `)).at(-1) ?? '';
    expect(last('HEALTHCHECK')).toMatch(/CMD .*\/health/);
    expect(JSON.parse(last('CMD').slice(4))).toEqual(['node', 'api/node.ts']);
    // USER comes before CMD and HEALTHCHECK in the stage, so both run unprivileged.
    expect(runtime.indexOf(user!)).toBeLessThan(runtime.indexOf(last('CMD')));
  });

  it('copies only sources that exist and that .dockerignore lets through', () => {
    const copies = runtime.filter((l) => /^COPY\s/.test(l) && !/--from=/.test(l));
    expect(copies.length).toBeGreaterThan(0);
    for (const copy of copies) {
      const sources = copy.split(/\s+/).slice(1, -1);
      for (const source of sources) {
        expect(existsSync(join(root, source)), source).toBe(true);
        expect(ignored, source).not.toContain(source);
      }
    }
    for (const secret of ['node_modules', '.git', '.env', '.data']) expect(ignored).toContain(secret);
  });

  it('needs only `dependencies` at run time: every package the image runs is installed by --omit=dev', () => {
    const pkg = JSON.parse(read('package.json'));
    const packageOf = (specifier: string) =>
      specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!;
    const files = (dir: string): string[] =>
      readdirSync(join(root, dir)).flatMap((name) => {
        const path = join(dir, name);
        return statSync(join(root, path)).isDirectory() ? files(path) : path.endsWith('.ts') ? [path] : [];
      });
    // api/cloudflare.ts is bundled by wrangler for Cloudflare, not run by the image.
    const runtimeFiles = ['api', 'shared', 'workers']
      .flatMap(files)
      .filter((f) => !f.endsWith('.test.ts') && f !== 'api/cloudflare.ts');
    const missing = new Set<string>();
    for (const file of runtimeFiles) {
      const source = read(file);
      for (const match of source.matchAll(/(?:from|import\(|require\.resolve\()\s*'([^']+)'/g)) {
        const specifier = match[1]!;
        if (specifier.startsWith('.') || specifier.startsWith('node:') || specifier.startsWith('cloudflare:')) continue;
        if (!pkg.dependencies[packageOf(specifier)]) missing.add(`${file}: ${specifier}`);
      }
    }
    expect([...missing]).toEqual([]);
    expect(runtimeFiles.length).toBeGreaterThan(20);
  });
});
