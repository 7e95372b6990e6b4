// Starts a single-node Apache Kafka (KRaft: broker and controller in one JVM) on 127.0.0.1 free ports, in a
// temporary directory, from the Maven Central jars in pom.xml (resolved by `npm run setup`). Used by the outbox
// relay's test and benchmark and by `npm run kafka`; Node-only, never imported by api/ or shared/.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Admin } from '@platformatic/kafka';
import { mavenClasspath } from '../maven.ts';
import { freePort } from '../mongo/offline-server.ts';

const here = dirname(fileURLToPath(import.meta.url));

/** Resolves the broker's jars through Maven once (about 30 s on a cold ~/.m2) and caches the classpath. */
export function resolveKafkaClasspath(): string {
  return mavenClasspath(here, 'kafka-broker');
}

export interface KafkaBroker {
  /** `127.0.0.1:port`, the value of KAFKA_BROKERS. */
  brokers: string;
  port: number;
  pid: number;
  /** SIGTERM (a controlled shutdown), SIGKILL after 15 s; the data directory is removed. */
  stop(): Promise<void>;
}

export interface KafkaBrokerOptions {
  /** Java heap; 512m holds the tests and the benchmark. */
  heap?: string;
  /** Partitions of a topic created automatically or without a count. */
  partitions?: number;
  /** The client port (default: a free one). */
  port?: number;
  /** Keep the data here instead of a temporary directory (kept on stop). */
  dataDir?: string;
}

/** A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what kafka-storage random-uuid prints). */
function clusterId(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('base64url');
}

function serverProperties(dir: string, port: number, controllerPort: number, partitions: number): string {
  return [
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names=CONTROLLER',
    'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'inter.broker.listener.name=PLAINTEXT',
    `log.dirs=${join(dir, 'data')}`,
    `num.partitions=${partitions}`,
    'offsets.topic.replication.factor=1',
    'offsets.topic.num.partitions=4',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'share.coordinator.state.topic.replication.factor=1',
    'share.coordinator.state.topic.min.isr=1',
    'group.initial.rebalance.delay.ms=0',
    'num.network.threads=2',
    'num.io.threads=4',
    '',
  ].join('\n');
}

/** Formats the storage, starts the broker and resolves once it answers a metadata request. */
export async function startKafkaBroker(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
  const classpath = resolveKafkaClasspath();
  const dir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'loan-admin-kafka-'));
  mkdirSync(dir, { recursive: true });
  const [port, controllerPort] = [options.port ?? (await freePort()), await freePort()];
  const properties = join(dir, 'server.properties');
  writeFileSync(properties, serverProperties(dir, port, controllerPort, options.partitions ?? 4));
  const jvm = [`-Xmx${options.heap ?? '512m'}`, '-Xms64m', '-XX:+UseSerialGC', '-Djava.awt.headless=true'];
  // A short-lived JVM: the C1 compiler only starts it faster.
  execFileSync(
    'java',
    [
      ...jvm,
      '-XX:TieredStopAtLevel=1',
      '-cp',
      classpath,
      'kafka.tools.StorageTool',
      'format',
      '--ignore-formatted',
      '-t',
      clusterId(),
      '-c',
      properties,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const child = spawn('java', [...jvm, '-cp', classpath, 'kafka.Kafka', properties], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const orphanGuard = () => child.kill('SIGKILL');
  process.once('exit', orphanGuard);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      process.off('exit', orphanGuard);
      resolve();
    }),
  );
  const brokers = `127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    }
    if (!options.dataDir) rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitForBroker(brokers, () => child.exitCode !== null || child.signalCode !== null, 120_000);
  } catch (error) {
    await stop();
    throw new Error(`Kafka did not start: ${(error as Error).message}\n${output}`);
  }
  return { brokers, port, pid: child.pid ?? -1, stop };
}

/** Polls a metadata request until the broker lists itself. */
async function waitForBroker(brokers: string, gone: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (gone()) throw new Error('the broker process exited');
    const admin = new Admin({
      clientId: 'loan-admin-start',
      bootstrapBrokers: [brokers],
      retries: 0,
      connectTimeout: 1_000,
    });
    try {
      const metadata = await admin.metadata({ topics: [] });
      if (metadata.brokers.size > 0) return;
    } catch {
      // not listening yet
    } finally {
      await admin.close().catch(() => {});
    }
    if (Date.now() > deadline) throw new Error(`no answer within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
