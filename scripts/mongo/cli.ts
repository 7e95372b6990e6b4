// `npm run mongo`: the offline MongoDB server (mongo-java-server, see README: MongoDB targets) on its
// own, for a shell, a seed or an API started by hand. Prints MONGO_URL; Ctrl-C (or SIGTERM) stops it.
import { parseArgs } from 'node:util';
import { startOfflineServer } from './offline-server.ts';

const usage = `Usage: npm run mongo -- [--port <port>] [--data <file>] [--heap <size>]

Starts the offline MongoDB wire server (mongo-java-server; needs Java 17+ and, once, Maven) and
prints its MONGO_URL. Stops on Ctrl-C or SIGTERM.

  --port <port>   listen on this port on 127.0.0.1 (default: a free port)
  --data <file>   keep the data in this H2 file across restarts (default: in memory, lost on stop)
  --heap <size>   Java heap, e.g. 512m or 2g (default: 1g)
  --help          this text`;

let options: { port?: string; data?: string; heap?: string; help?: boolean };
try {
  options = parseArgs({
    options: {
      port: { type: 'string' },
      data: { type: 'string' },
      heap: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  }).values;
} catch (error) {
  console.error(`${(error as Error).message}\n\n${usage}`);
  process.exit(2);
}
if (options.help) {
  console.log(usage);
  process.exit(0);
}
const port = options.port === undefined ? undefined : Number(options.port);
if (port !== undefined && !(Number.isInteger(port) && port > 0 && port < 65_536)) {
  console.error(`--port must be a port number (1-65535), not "${options.port}"\n\n${usage}`);
  process.exit(2);
}
if (options.heap !== undefined && !/^\d+[kmg]$/i.test(options.heap)) {
  console.error(`--heap must be a size such as 512m or 2g, not "${options.heap}"\n\n${usage}`);
  process.exit(2);
}

const server = await startOfflineServer({ port, file: options.data, heap: options.heap ?? '1g' });
console.log(
  `offline MongoDB listening (pid ${server.pid})${options.data ? `, data in ${options.data}` : ', in memory'}`,
);
console.log(`MONGO_URL=${server.url}`);

let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  console.log(`${signal}: stopping the offline MongoDB...`);
  await server.stop();
  process.exit(0);
};
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));
