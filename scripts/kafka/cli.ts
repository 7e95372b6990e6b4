// `npm run kafka`: a single-node Kafka (KRaft) on 127.0.0.1 for development, until Ctrl-C; prints the
// KAFKA_BROKERS value to give the relay. `--port N` fixes the port (default: a free one).
import { parseArgs } from 'node:util';
import { startKafkaBroker } from './broker.ts';

const { values } = parseArgs({ options: { port: { type: 'string' } } });
const port = values.port === undefined ? undefined : Number(values.port);
if (port !== undefined && !(Number.isInteger(port) && port > 0 && port < 65_536)) {
  console.error('usage: npm run kafka -- [--port N]   (1-65535)');
  process.exit(2);
}
const broker = await startKafkaBroker({ port });
console.log(`Kafka listening: KAFKA_BROKERS=${broker.brokers} (pid ${broker.pid}); Ctrl-C stops it`);
const stop = () => void broker.stop().then(() => process.exit(0));
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
