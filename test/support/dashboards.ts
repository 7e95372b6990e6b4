// The Grafana dashboards' queries (ops/grafana/dashboards), for the tests that run them against a real
// Prometheus: test/ops/prometheus.test.ts (API and workers) and test/e2e/kafka-relay.test.ts (the relay).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const dashboardsDir = join(import.meta.dirname, '..', '..', 'ops/grafana/dashboards');

export interface DashboardQuery {
  dashboard: string;
  panel: string;
  expr: string;
}

/** Every PromQL expression of every provisioned dashboard, with Grafana's interval variable filled in. */
export function dashboardQueries(): DashboardQuery[] {
  return readdirSync(dashboardsDir)
    .filter((file) => file.endsWith('.json'))
    .flatMap((file) => {
      const dashboard = JSON.parse(readFileSync(join(dashboardsDir, file), 'utf8'));
      return (dashboard.panels as { title: string; targets: { expr: string }[] }[]).flatMap((panel) =>
        panel.targets.map((target) => ({
          dashboard: file,
          panel: panel.title,
          expr: target.expr.replaceAll('$__rate_interval', '1m'),
        })),
      );
    });
}
