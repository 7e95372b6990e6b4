// Runs Debian's Alertmanager (package prometheus-alertmanager) on this machine with the repository's
// configuration (ops/alertmanager/alertmanager.yml), its three placeholder webhook URLs replaced by real
// ones, no clustering, data in a temp folder, on a free loopback port. Tests use it behind
// scripts/prometheus.ts; `ALERT_PAGE_URL=... ALERT_TICKET_URL=... ALERT_HEARTBEAT_URL=... npm run
// alertmanager` runs it beside a local stack (then `npm run prometheus -- --alertmanager <its address>`).
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './mongo/offline-server.ts';
import { findExecutable, startServerProcess } from './processes.ts';

export const alertmanagerConfigPath = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  'ops/alertmanager/alertmanager.yml',
);

/** Debian installs it as prometheus-alertmanager; upstream's binary is alertmanager. Null if absent. */
export const findAlertmanager = () => findExecutable(['prometheus-alertmanager', 'alertmanager']);
/** `amtool`, from the same package; null if absent. */
export const findAmtool = () => findExecutable(['amtool']);

/** The receivers of ops/alertmanager/alertmanager.yml, each a webhook. */
export const alertReceivers = ['page', 'ticket', 'heartbeat'] as const;
export type AlertReceiver = (typeof alertReceivers)[number];
/** The URL the configuration holds for a receiver until it is replaced. */
export const placeholderUrl = (receiver: AlertReceiver) => `http://alert-receiver.invalid/${receiver}`;

/** The repository's configuration with `urls` in place of the placeholders (those not given stay). */
export function alertmanagerConfig(urls: Partial<Record<AlertReceiver, string>>): string {
  let config = readFileSync(alertmanagerConfigPath, 'utf8');
  for (const receiver of alertReceivers) {
    const url = urls[receiver];
    if (url) config = config.replaceAll(placeholderUrl(receiver), url);
  }
  return config;
}

export interface RunningAlertmanager {
  /** Its API and UI, e.g. http://127.0.0.1:PORT. */
  url: string;
  /** host:port, for Prometheus's alerting targets. */
  address: string;
  process: ChildProcess;
  /** Stops it and removes its data. */
  stop(): Promise<void>;
}

export async function startAlertmanager(urls: Partial<Record<AlertReceiver, string>>): Promise<RunningAlertmanager> {
  const binary = findAlertmanager();
  if (!binary) {
    throw new Error('alertmanager not found: `npm run setup` installs Debian package prometheus-alertmanager');
  }
  const dir = mkdtempSync(join(tmpdir(), 'alertmanager-'));
  const configFile = join(dir, 'alertmanager.yml');
  writeFileSync(configFile, alertmanagerConfig(urls));
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const url = `http://${address}`;
  const server = await startServerProcess({
    name: 'alertmanager',
    binary,
    args: [
      `--config.file=${configFile}`,
      `--storage.path=${join(dir, 'data')}`,
      `--web.listen-address=${address}`,
      // One instance: no gossip port (the default would listen on 0.0.0.0:9094).
      '--cluster.listen-address=',
      '--log.level=warn',
    ],
    dir,
    ready: async () => (await fetch(`${url}/-/ready`)).status === 200,
  });
  return { url, address, process: server.process, stop: server.stop };
}

if (import.meta.main) {
  const running = await startAlertmanager({
    page: process.env.ALERT_PAGE_URL,
    ticket: process.env.ALERT_TICKET_URL,
    heartbeat: process.env.ALERT_HEARTBEAT_URL,
  });
  console.log(`alertmanager on ${running.url} (for Prometheus: --alertmanager ${running.address}); Ctrl-C stops it`);
  const stop = () => running.stop().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
