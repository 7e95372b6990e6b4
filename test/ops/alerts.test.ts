// The alert rules (ops/prometheus/alerts.yml) through Debian's promtool: they load (`check rules`), every
// rule's cases in alerts.test.yml pass (`test rules`), every rule has a case that makes it fire, the cases
// fail when a rule's threshold moves (they test the rules, not just their syntax), and every series a rule
// reads is one the API, a worker or the outbox relay exports.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findPromtool } from '../../scripts/prometheus.ts';

const root = join(import.meta.dirname, '..', '..');
const rulesDir = join(root, 'ops/prometheus');
const promtool = findPromtool();
const run = (args: string[], cwd = rulesDir) => spawnSync(promtool!, args, { cwd, encoding: 'utf8' });
const rules = readFileSync(join(rulesDir, 'alerts.yml'), 'utf8');
const cases = readFileSync(join(rulesDir, 'alerts.test.yml'), 'utf8');
const alertNames = [...rules.matchAll(/^\s*- alert: (\w+)$/gm)].map((m) => m[1]!);

describe.skipIf(!promtool)(promtool ? 'alert rules' : 'alert rules (skipped: promtool is not installed)', () => {
  it('load (promtool check rules)', () => {
    const checked = run(['check', 'rules', 'alerts.yml']);
    expect(checked.stderr).toBe('');
    expect(checked.status).toBe(0);
    expect(checked.stdout).toContain(`SUCCESS: ${alertNames.length} rules found`);
  });

  it('pass their cases (promtool test rules), each rule with a case where it fires', () => {
    const tested = run(['test', 'rules', 'alerts.test.yml']);
    expect(tested.stdout + tested.stderr).toContain('SUCCESS');
    expect(tested.status).toBe(0);
    expect(alertNames).toEqual(
      expect.arrayContaining([
        'ApiErrorRate',
        'ApiShedding',
        'NotReady',
        'QueueOldestWaitingJob',
        'DeadLettersGrowing',
        'LeaseLosses',
        'LedgerVerificationFailed',
        'RevocationRefreshFailing',
        'PaymentProviderDown',
        'OutboxRelayStalled',
      ]),
    );
    for (const name of alertNames) {
      // A case for the rule whose expected alerts are not empty.
      const firing = new RegExp(`alertname: ${name}\\n\\s+exp_alerts:\\n\\s+- exp_labels`);
      expect(cases, name).toMatch(firing);
    }
  });

  it('fail when a rule changes: the cases test the thresholds', () => {
    const dir = mkdtempSync(join(tmpdir(), 'alerts-'));
    try {
      cpSync(rulesDir, dir, { recursive: true });
      writeFileSync(
        join(dir, 'alerts.yml'),
        rules.replace(
          'queue_oldest_waiting_age_seconds{job="api"}) > 300',
          'queue_oldest_waiting_age_seconds{job="api"}) > 3000',
        ),
      );
      const tested = run(['test', 'rules', 'alerts.test.yml'], dir);
      expect(tested.status).toBe(1);
      expect(tested.stdout + tested.stderr).toMatch(/QueueOldestWaitingJob/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('read only series the API, the workers and the relay export', () => {
    const exprs = [...rules.matchAll(/expr: (\|\n(?:\s{10}.*\n)+|.*\n)/g)].map((m) => m[1]!).join('\n');
    // Metric names: what is left with an underscore once label matchers and by/on lists are gone.
    const bare = exprs.replace(/\{[^}]*\}/g, '').replace(/\b(by|on) \([^)]*\)/g, '');
    const series = new Set([...bare.matchAll(/\b[a-z]+_[a-z0-9_]+\b/g)].map((m) => m[0]));
    const sources = ['api/metrics.ts', 'workers/metrics.ts', 'workers/ocr/metrics.ts', 'workers/relay/metrics.ts']
      .map((file) => readFileSync(join(root, file), 'utf8'))
      .join('\n');
    expect(series.size).toBeGreaterThanOrEqual(9);
    for (const name of series) {
      if (name === 'up') continue; // Prometheus's own, per target
      expect(sources, name).toContain(`'${name}'`);
    }
  });
});
