// The outbox relay's throughput: how fast a backlog of application changes reaches a real Kafka broker
// (single-node KRaft from scripts/kafka/broker.ts), side by side with the bare producer sending the same
// events (no MongoDB), per relay batch size. Each cell: a fresh database with BENCH_APPLICATIONS applications
// of BENCH_VERSIONS versions each (change logs as the API writes them), a fresh topic, one relay pass loop
// (workers/relay/relay.ts, the same code as `npm run relay`) until every application's marker is at its
// version. MongoDB commands per event are counted with the driver's command monitoring.
//
//   npm run bench:kafka-relay
//   BENCH_APPLICATIONS=500 BENCH_VERSIONS=4 npm run bench:kafka-relay    # a quicker run
// Uses MONGO_URL when set, otherwise starts the offline server.
import { ProduceAcks, Producer, stringSerializers } from '@platformatic/kafka';
import { createLogger } from '../api/log.ts';
import { startKafkaBroker } from '../scripts/kafka/broker.ts';
import { demoApplication } from '../scripts/seed.ts';
import { sleep } from '../shared/core/clock.ts';
import { ensureIndexes } from '../shared/core/db.ts';
import { changeEntry } from '../shared/loans/applications/history.ts';
import { changeEvent, OUTBOX_PUBLISHED_COLLECTION } from '../shared/loans/applications/outbox.ts';
import { APPLICATIONS_COLLECTION, type ApplicationDoc, applicationIndexes } from '../shared/loans/applications.ts';
import { ensureTopic, startRelay } from '../workers/relay/relay.ts';
import { countingClient, markdownTable, printPreamble, round, startBenchServer } from './support.ts';

const APPLICATIONS = Number(process.env.BENCH_APPLICATIONS ?? 2_000);
const VERSIONS = Number(process.env.BENCH_VERSIONS ?? 5);
const BATCHES = [100, 500, 2_000];
const EVENTS = APPLICATIONS * VERSIONS;

/** An application at `VERSIONS` with one change-log entry per version, as the API's writes leave it. */
function loggedApplication(n: number, now: number): ApplicationDoc {
  const doc = demoApplication(n, now);
  const changes = Array.from({ length: VERSIONS }, (_, index) =>
    changeEntry({
      version: index + 1,
      at: new Date(now - (VERSIONS - index) * 1_000),
      by: 'bench',
      action: index === 0 ? 'create' : 'update',
      paths: index === 0 ? [] : [{ path: 'contact.phone', old: `+44 ${index}`, new: `+44 ${index + 1}` }],
    }),
  );
  const at = changes.at(-1)!.at;
  return {
    ...doc,
    version: VERSIONS,
    updatedAt: at,
    lastChange: { at, actor: 'bench', action: 'update', version: VERSIONS },
    changes,
    changeHead: changes.at(-1)!.id,
  };
}

const server = await startBenchServer();
const broker = await startKafkaBroker();
printPreamble(
  `Outbox relay to Kafka: ${EVENTS} events (${APPLICATIONS} applications x ${VERSIONS} versions)`,
  'npm run bench:kafka-relay (BENCH_APPLICATIONS, BENCH_VERSIONS)',
  server,
);
console.log(`Kafka: single-node KRaft (org.apache.kafka:kafka_2.13 4.1.1) at ${broker.brokers}, -Xmx512m\n`);
const logger = createLogger('warn');
const rows: (string | number)[][] = [];
try {
  // The bare producer: the same events, no database, one send per 500 (what the relay's default batch sends).
  {
    const topic = `bench.producer-${Date.now()}`;
    const config = {
      KAFKA_BROKERS: [broker.brokers],
      KAFKA_TOPIC: topic,
      KAFKA_TOPIC_PARTITIONS: 12,
      KAFKA_CLIENT_ID: 'bench',
    };
    await ensureTopic(config);
    const producer = new Producer({
      clientId: 'bench',
      bootstrapBrokers: [broker.brokers],
      serializers: stringSerializers,
      idempotent: true,
      acks: ProduceAcks.ALL,
    });
    const now = Date.now();
    const docs = Array.from({ length: APPLICATIONS }, (_, n) => loggedApplication(n, now));
    const messages = docs.flatMap((doc) =>
      doc.changes!.map((entry, index) => {
        const event = changeEvent(doc._id, { ...entry, version: index + 1 });
        return { topic, key: doc._id, value: JSON.stringify(event), headers: new Map([['event-id', event.id]]) };
      }),
    );
    const started = performance.now();
    for (let i = 0; i < messages.length; i += 500) await producer.send({ messages: messages.slice(i, i + 500) });
    const seconds = (performance.now() - started) / 1000;
    await producer.close();
    rows.push(['bare producer (no database)', 500, EVENTS, round(seconds, 2), Math.round(EVENTS / seconds), '-']);
  }
  for (const batch of BATCHES) {
    const dbName = `bench_relay_${batch}_${Date.now()}`;
    const counting = countingClient(server.url, { maxPoolSize: 20 });
    await counting.client.connect();
    const db = counting.client.db(dbName);
    await ensureIndexes(db, [applicationIndexes]);
    const now = Date.now();
    const collection = db.collection<ApplicationDoc>(APPLICATIONS_COLLECTION);
    for (let start = 0; start < APPLICATIONS; start += 1_000) {
      await collection.insertMany(
        Array.from({ length: Math.min(1_000, APPLICATIONS - start) }, (_, i) => loggedApplication(start + i, now)),
      );
    }
    counting.reset();
    const clock = { now: () => Date.now() };
    const started = performance.now();
    const relay = await startRelay(
      db,
      clock,
      {
        KAFKA_BROKERS: [broker.brokers],
        KAFKA_TOPIC: `bench.relay-${batch}-${Date.now()}`,
        KAFKA_TOPIC_PARTITIONS: 12,
        KAFKA_CLIENT_ID: 'bench-relay',
        KAFKA_RELAY_POLL_MS: 20,
        KAFKA_RELAY_BATCH: batch,
        KAFKA_RELAY_MARGIN_MS: 10_000,
        KAFKA_RELAY_LEASE_MS: 15_000,
      },
      logger,
    );
    const markers = db.collection(OUTBOX_PUBLISHED_COLLECTION);
    while ((await markers.countDocuments({ version: VERSIONS })) < APPLICATIONS) await sleep(20);
    const seconds = (performance.now() - started) / 1000;
    await relay.stop();
    if (relay.counters.published !== EVENTS) {
      throw new Error(`batch ${batch}: published ${relay.counters.published}, expected ${EVENTS}`);
    }
    // The commands of the waiting loop above are not the relay's: count them out (one count per poll).
    const commands = counting.total() - (counting.counts.get('count') ?? 0) - (counting.counts.get('aggregate') ?? 0);
    rows.push([
      'relay (MongoDB -> Kafka)',
      batch,
      EVENTS,
      round(seconds, 2),
      Math.round(EVENTS / seconds),
      round(commands / EVENTS, 3),
    ]);
    await db.dropDatabase();
    await counting.client.close();
  }
  console.log(markdownTable(['what', 'batch', 'events', 'seconds', 'events/s', 'MongoDB commands / event'], rows));
  console.log(
    `\nmachine load average at the end: ${(await import('node:os'))
      .loadavg()
      .map((l) => round(l, 1))
      .join(', ')}`,
  );
} finally {
  await broker.stop();
  await server.stop();
}
process.exit(0);
