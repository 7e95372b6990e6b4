// Prometheus metrics of the outbox relay, served as GET /metrics on its probe server (WORKER_PROBE_PORT)
// beside /health and /ready: what it published, its passes and their failures, whether it holds the lease,
// and when its last pass ended (what the OutboxRelayStalled alert reads), with the process metrics.
import { collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { mirroredCounter } from '../../api/metrics.ts';
import type { RelayCounters, RelayState } from './relay.ts';

/** A pass reads every page changed since the checkpoint: milliseconds idle, seconds on a backlog. */
const passBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

const relayCounters: { key: keyof RelayCounters; name: string; help: string }[] = [
  {
    key: 'published',
    name: 'relay_events_published_total',
    help: 'Events the broker acknowledged from this relay (a resend after a crash counts again)',
  },
  {
    key: 'lost',
    name: 'relay_changes_lost_total',
    help: 'application.changes_lost events sent: changes trimmed from a log before any relay published them',
  },
  { key: 'passes', name: 'relay_passes_total', help: 'Passes completed while holding the lease' },
  {
    key: 'failures',
    name: 'relay_pass_failures_total',
    help: 'Passes ended by an error (database, broker, or the lease lost mid-pass); the relay retries after a pause',
  },
  { key: 'leases', name: 'relay_leases_taken_total', help: 'Times this relay took the publishing lease' },
];

export interface RelayMetrics {
  registry: Registry;
  /** The relay's onPass: each completed pass's duration. */
  passed(ms: number): void;
}

export function createRelayMetrics(
  relay: { counters: RelayCounters; state: RelayState },
  ready: () => Promise<boolean>,
): RelayMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ worker: 'relay' });
  collectDefaultMetrics({ register: registry });
  for (const { key, name, help } of relayCounters) mirroredCounter(registry, name, help, () => relay.counters[key]);
  new Gauge({
    name: 'relay_lease_held',
    help: '1 while this relay holds the publishing lease (one relay at a time), 0 on a standby',
    registers: [registry],
    collect() {
      this.set(relay.state.holding ? 1 : 0);
    },
  });
  new Gauge({
    name: 'relay_last_pass_timestamp_seconds',
    help: 'When this relay last completed a pass (Unix seconds; 0 before its first): everything changed before that pass began is on the topic',
    registers: [registry],
    collect() {
      this.set(relay.state.lastPassAtMs / 1000);
    },
  });
  new Gauge({
    name: 'service_ready',
    help: '1 while the process is ready (the relay: running and reaching MongoDB), else 0',
    registers: [registry],
    async collect() {
      this.set((await ready()) ? 1 : 0);
    },
  });
  const duration = new Histogram({
    name: 'relay_pass_duration_seconds',
    help: 'Completed passes: reading the changed applications, sending what is owed, raising the markers',
    buckets: passBuckets,
    registers: [registry],
  });
  return { registry, passed: (ms) => duration.observe(ms / 1000) };
}
