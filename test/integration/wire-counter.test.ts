// The read-path bench counts database commands on the wire (bench/wire-counter.ts) so that a
// checkout it cannot change is counted like the current one. Through the counter, a real driver
// must work unchanged and every command it sends must be counted once, by name.
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { commandName, messageSplitter, startWireCounter, type WireCounter } from '../../bench/wire-counter.ts';
import { mongoUrl, openTestDatabase, type TestDatabase } from '../support/mongo.ts';

let database: TestDatabase;
let counter: WireCounter;
let client: MongoClient;

beforeAll(async () => {
  database = await openTestDatabase(import.meta.filename);
  const target = new URL(mongoUrl().replace(/^mongodb(\+srv)?:/, 'http:'));
  counter = await startWireCounter(target.hostname, Number(target.port || 27017));
  client = await new MongoClient(`mongodb://127.0.0.1:${counter.port}/?directConnection=true`).connect();
});
afterAll(async () => {
  await client?.close();
  await counter?.close();
  await database?.close();
});

it('forwards a driver unchanged and counts each command it sends once, by name', async () => {
  const collection = client.db(database.name).collection<{ _id: number; n: number }>('counted');
  counter.counts.clear();
  await collection.insertMany(Array.from({ length: 3 }, (_, i) => ({ _id: i, n: i })));
  for (let i = 0; i < 4; i++) expect(await collection.findOne({ _id: i % 3 })).toEqual({ _id: i % 3, n: i % 3 });
  await collection.updateOne({ _id: 1 }, { $set: { n: 10 } });
  // A large document travels in several TCP chunks: still one command.
  await collection.insertOne({ _id: 99, n: 0, blob: 'x'.repeat(3_000_000) } as never);
  const counts = Object.fromEntries(counter.counts);
  expect(counts).toMatchObject({ insert: 2, find: 4, update: 1 });
  expect(
    Object.keys(counts).filter((name) => !['insert', 'find', 'update', 'hello', 'isMaster', 'ismaster'].includes(name)),
  ).toEqual([]);
});

it('names a command whatever the chunking: split across chunks, or two in one chunk', () => {
  const message = (name: string) => {
    // OP_MSG: header, flagBits, section kind 0 with a document whose first key is the command.
    const key = Buffer.from(`${name}\0`);
    const document = Buffer.concat([Buffer.alloc(4), Buffer.from([0x10]), key, Buffer.alloc(4), Buffer.from([0])]);
    document.writeInt32LE(document.length, 0);
    const body = Buffer.concat([Buffer.alloc(4), Buffer.from([0]), document]);
    const header = Buffer.alloc(16);
    header.writeInt32LE(16 + body.length, 0);
    header.writeInt32LE(2013, 12);
    return Buffer.concat([header, body]);
  };
  expect(commandName(message('aggregate'))).toBe('aggregate');
  const seen: string[] = [];
  const feed = messageSplitter((name) => seen.push(name));
  const two = Buffer.concat([message('find'), message('getMore')]);
  feed(two.subarray(0, 7));
  feed(two.subarray(7, 40));
  feed(two.subarray(40));
  expect(seen).toEqual(['find', 'getMore']);
});
