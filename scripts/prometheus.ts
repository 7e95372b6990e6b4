// Runs Debian's Prometheus on this machine against given targets: a generated config (JSON, which is
// YAML) scraping the API instances and the workers, the repository's alert rules loaded, data in a temp
// folder, on a free loopback port. Tests query it over its HTTP API; `npm run prometheus -- --api
// 127.0.0.1:3000 --ocr 127.0.0.1:8081 --approval 127.0.0.1:8082 [--relay 127.0.0.1:8083] [--alertmanager
// 127.0.0.1:9093]` runs it beside a local stack.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort } from './mongo/offline-server.ts';
import { findExecutable, startServerProcess } from './processes.ts';

export const rulesPath = join(dirname(fileURLToPath(import.meta.url)), '..', 'ops/prometheus/alerts.yml');

/** Debian's `prometheus` (package prometheus); null if absent. */
export const findPrometheus = () => findExecutable(['prometheus', '/usr/bin/prometheus']);
/** `promtool`, from the same package; null if absent. */
export const findPromtool = () => findExecutable(['promtool', '/usr/bin/promtool']);

export interface PrometheusOptions {
  /** host:port targets by job name, e.g. { api: ['127.0.0.1:3001'], ocr: [...], approval: [...] }. */
  targets: Record<string, string[]>;
  /** Sent as `Authorization: Bearer` on every scrape (METRICS_TOKEN). */
  bearerToken?: string;
  /** Scrape and rule evaluation interval (default 1 s: a test sees data at once). */
  intervalS?: number;
  /** Load ops/prometheus/alerts.yml (default true). */
  rules?: boolean;
  /** host:port of Alertmanagers the firing alerts are sent to (scripts/alertmanager.ts); none by default. */
  alertmanagers?: string[];
}

export interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface RunningPrometheus {
  url: string;
  process: ChildProcess;
  /** An instant query; throws with Prometheus's error for an invalid one. */
  query(promql: string): Promise<PromSample[]>;
  /** Stops it and removes its data. */
  stop(): Promise<void>;
}

/** The scrape configuration: one job per target group, metrics at /metrics. */
export function prometheusConfig(options: PrometheusOptions): object {
  const interval = `${options.intervalS ?? 1}s`;
  return {
    global: { scrape_interval: interval, evaluation_interval: interval, scrape_timeout: interval },
    rule_files: options.rules === false ? [] : [rulesPath],
    ...(options.alertmanagers?.length
      ? { alerting: { alertmanagers: [{ static_configs: [{ targets: options.alertmanagers }] }] } }
      : {}),
    scrape_configs: Object.entries(options.targets).map(([job, targets]) => ({
      job_name: job,
      metrics_path: '/metrics',
      static_configs: [{ targets }],
      ...(options.bearerToken ? { authorization: { type: 'Bearer', credentials: options.bearerToken } } : {}),
    })),
  };
}

export async function startPrometheus(options: PrometheusOptions): Promise<RunningPrometheus> {
  const binary = findPrometheus();
  if (!binary) throw new Error('prometheus not found: `npm run setup` installs Debian package prometheus');
  const dir = mkdtempSync(join(tmpdir(), 'prometheus-'));
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(configFile, JSON.stringify(prometheusConfig(options), null, 2));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const server = await startServerProcess({
    name: 'prometheus',
    binary,
    args: [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      // Firing alerts go to the Alertmanagers at every evaluation (default: once a minute), so the first
      // ones, evaluated before the Alertmanagers were discovered, are not held back for a minute.
      `--rules.alert.resend-delay=${options.intervalS ?? 1}s`,
      '--log.level=warn',
    ],
    dir,
    ready: async () => (await fetch(`${url}/-/ready`)).status === 200,
  });
  return {
    url,
    process: server.process,
    async query(promql) {
      const res = await fetch(`${url}/api/v1/query`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ query: promql }),
      });
      const body = (await res.json()) as {
        status: string;
        error?: string;
        data?: { resultType: string; result: unknown };
      };
      if (body.status !== 'success') throw new Error(`${promql}: ${body.error}`);
      const { resultType, result } = body.data!;
      if (resultType === 'scalar') return [{ metric: {}, value: result as [number, string] }];
      return result as PromSample[];
    },
    stop: server.stop,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      api: { type: 'string', multiple: true, default: [] },
      ocr: { type: 'string', multiple: true, default: [] },
      approval: { type: 'string', multiple: true, default: [] },
      relay: { type: 'string', multiple: true, default: [] },
      alertmanager: { type: 'string', multiple: true, default: [] },
    },
  });
  const { alertmanager, ...jobs } = values;
  const targets = Object.fromEntries(Object.entries(jobs).filter(([, list]) => list.length > 0));
  const running = await startPrometheus({
    targets,
    bearerToken: process.env.METRICS_TOKEN,
    intervalS: 5,
    alertmanagers: alertmanager,
  });
  console.log(`prometheus on ${running.url} scraping ${JSON.stringify(targets)}; Ctrl-C stops it`);
  const stop = () => void running.stop().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
