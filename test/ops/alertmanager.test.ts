// Where alerts go: the repository's Alertmanager configuration (ops/alertmanager/alertmanager.yml) through
// Debian's amtool (it loads; every rule of ops/prometheus/alerts.yml reaches the receiver its severity
// names), then Debian's Alertmanager and Prometheus started by the project's scripts: the always-firing
// Watchdog travels Prometheus -> Alertmanager -> the heartbeat webhook (a receiver this test runs), and a
// process that is NotReady holds back its own tickets (inhibition) but not another process's.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  alertmanagerConfig,
  alertmanagerConfigPath,
  findAlertmanager,
  findAmtool,
  type RunningAlertmanager,
  startAlertmanager,
} from '../../scripts/alertmanager.ts';
import { findPrometheus, type RunningPrometheus, rulesPath, startPrometheus } from '../../scripts/prometheus.ts';

const amtool = findAmtool();
const runnable = Boolean(amtool && findAlertmanager() && findPrometheus());
const amtoolRun = (args: string[]) => spawnSync(amtool!, args, { encoding: 'utf8' });

/** Each alert rule's name and severity label, as alerts.yml writes them. */
function ruleSeverities(): { name: string; severity: string }[] {
  const rules = readFileSync(rulesPath, 'utf8')
    .split(/^\s*- alert: /m)
    .slice(1);
  return rules.map((rule) => ({
    name: rule.slice(0, rule.indexOf('\n')).trim(),
    severity: rule.match(/^\s+severity: (\w+)$/m)?.[1] ?? '(none)',
  }));
}

describe.skipIf(!amtool)(amtool ? 'alert routing' : 'alert routing (skipped: amtool is not installed)', () => {
  it('loads (amtool check-config), as it is and with real receiver URLs', () => {
    const dir = mkdtempSync(join(tmpdir(), 'amtool-'));
    try {
      const rendered = join(dir, 'alertmanager.yml');
      writeFileSync(rendered, alertmanagerConfig({ page: 'https://pager.example.com/hook' }));
      expect(readFileSync(rendered, 'utf8')).toContain('https://pager.example.com/hook');
      for (const file of [alertmanagerConfigPath, rendered]) {
        const checked = amtoolRun(['check-config', file]);
        expect(checked.stdout + checked.stderr, file).toContain('SUCCESS');
        expect(checked.status).toBe(0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sends every alert rule to the receiver its severity names: page -> pager, ticket -> tickets', () => {
    const rules = ruleSeverities();
    expect(rules.length).toBeGreaterThanOrEqual(12);
    const expected: Record<string, string> = { page: 'pager', ticket: 'tickets' };
    for (const { name, severity } of rules) {
      const receiver = name === 'Watchdog' ? 'heartbeat' : expected[severity];
      expect(receiver, `${name}: severity ${severity} is neither page nor ticket`).toBeDefined();
      const routed = amtoolRun([
        'config',
        'routes',
        'test',
        `--config.file=${alertmanagerConfigPath}`,
        `alertname=${name}`,
        `severity=${severity}`,
      ]);
      expect(routed.status, routed.stderr).toBe(0);
      expect(routed.stdout.trim(), name).toBe(receiver);
    }
    expect(rules.filter((rule) => rule.severity === 'page').length).toBeGreaterThan(0);
    expect(rules.filter((rule) => rule.severity === 'ticket').length).toBeGreaterThan(0);
  });
});

interface Delivery {
  path: string;
  body: { status: string; alerts: { status: string; labels: Record<string, string> }[] };
}

describe.skipIf(!runnable)(
  runnable
    ? 'Prometheus -> Alertmanager -> webhooks'
    : 'Prometheus -> Alertmanager -> webhooks (skipped: prometheus, alertmanager or amtool is not installed)',
  () => {
    let receiver: Server;
    const deliveries: Delivery[] = [];
    let alertmanager: RunningAlertmanager;
    let prometheus: RunningPrometheus;

    beforeAll(async () => {
      receiver = createServer((req, res) => {
        let body = '';
        req.on('data', (chunk) => {
          body += chunk;
        });
        req.on('end', () => {
          deliveries.push({ path: req.url ?? '', body: JSON.parse(body) });
          res.writeHead(200).end();
        });
      });
      await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
      const { port } = receiver.address() as { port: number };
      const hook = (name: string) => `http://127.0.0.1:${port}/${name}`;
      alertmanager = await startAlertmanager({
        page: hook('page'),
        ticket: hook('ticket'),
        heartbeat: hook('heartbeat'),
      });
      // No scrape targets: only the Watchdog has something to fire on.
      prometheus = await startPrometheus({ targets: {}, alertmanagers: [alertmanager.address] });
    }, 60_000);

    afterAll(async () => {
      await prometheus?.stop();
      await alertmanager?.stop();
      await new Promise((resolve) => receiver?.close(resolve));
    });

    it("Watchdog reaches the heartbeat webhook (the path a dead man's switch watches), and nothing else is sent", async () => {
      await vi.waitFor(
        () => {
          const beat = deliveries.find((d) => d.path === '/heartbeat');
          expect(beat?.body.alerts.map((a) => a.labels.alertname)).toEqual(['Watchdog']);
          expect(beat?.body.status).toBe('firing');
        },
        { timeout: 60_000, interval: 200 },
      );
      expect(deliveries.filter((d) => d.path !== '/heartbeat')).toEqual([]);
    }, 90_000);

    it('a NotReady process holds back its own tickets, not those of another process', async () => {
      const post = await fetch(`${alertmanager.url}/api/v2/alerts`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify([
          { labels: { alertname: 'NotReady', severity: 'page', job: 'ocr', instance: 'o:8081' } },
          { labels: { alertname: 'LeaseLosses', severity: 'ticket', job: 'ocr', instance: 'o:8081' } },
          { labels: { alertname: 'LeaseLosses', severity: 'ticket', job: 'approval', instance: 'p:8081' } },
        ]),
      });
      expect(post.status).toBe(200);
      await vi.waitFor(
        async () => {
          const res = await fetch(`${alertmanager.url}/api/v2/alerts?filter=alertname%3D%22LeaseLosses%22`);
          const alerts = (await res.json()) as {
            labels: Record<string, string>;
            status: { state: string; inhibitedBy: string[] };
          }[];
          const state = Object.fromEntries(alerts.map((a) => [a.labels.job, a.status.state]));
          expect(state).toEqual({ ocr: 'suppressed', approval: 'active' });
          expect(alerts.find((a) => a.labels.job === 'ocr')!.status.inhibitedBy).toHaveLength(1);
        },
        { timeout: 30_000, interval: 200 },
      );
    });
  },
);
