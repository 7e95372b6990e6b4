// Runs Debian's Alertmanager (package prometheus-alertmanager) on this machine with the repository's
// configuration (ops/alertmanager/alertmanager.yml), its three placeholder webhook URLs replaced by real
// ones, no clustering, data in a temp folder, on a free loopback port. Tests use it behind
// scripts/prometheus.ts; `ALERT_PAGE_URL=... ALERT_TICKET_URL=... ALERT_HEARTBEAT_URL=... npm run
// alertmanager` runs it beside a local stack (then `npm run prometheus -- --alertmanager <its address>`).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from '../shared/core/clock.ts';
import { freePort } from './mongo/offline-server.ts';
import { stopProcess } from './processes.ts';

export const alertmanagerConfigPath = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  'ops/alertmanager/alertmanager.yml',
);

function find(names: string[]): string | null {
  for (const candidate of names) {
    try {
      execFileSync(candidate, ['--version'], { stdio: 'ignore' });
      return candidate;
    } catch {}
  }
  return null;
}

/** Debian installs it as prometheus-alertmanager; upstream's binary is alertmanager. Null if absent. */
export const findAlertmanager = () => find(['prometheus-alertmanager', 'alertmanager']);
/** `amtool`, from the same package; null if absent. */
export const findAmtool = () => find(['amtool']);

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
  const child = spawn(
    binary,
    [
      `--config.file=${configFile}`,
      `--storage.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      // One instance: no gossip port (the default would listen on 0.0.0.0:9094).
      '--cluster.listen-address=',
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-64 * 1024);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const address = `127.0.0.1:${port}`;
  const url = `http://${address}`;
  const stop = async () => {
    await stopProcess(child, 5_000);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  while ((await fetch(`${url}/-/ready`).catch(() => null))?.status !== 200) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`alertmanager did not start (${child.exitCode ?? 'timed out'}):\n${output}`);
    }
    await sleep(50);
  }
  return { url, address, process: child, stop };
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
