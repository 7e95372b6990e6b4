// The outbox relay's MongoDB side (shared/loans/applications/outbox.ts) with a publish function in place of
// Kafka: what a pass publishes, in what order, what a relay that dies between the broker's acknowledgement and
// its marker publishes again (the same events), a change landing late within the margin, and a log trimmed
// past the marker (changes_lost). test/e2e/kafka-relay.test.ts runs the same code against a real broker.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { changeEntry } from '../../shared/loans/applications/history.ts';
import {
  OUTBOX_PUBLISHED_COLLECTION,
  type OutboxMessage,
  OutboxRelay,
  type PublishedMarker,
} from '../../shared/loans/applications/outbox.ts';
import {
  APPLICATIONS_COLLECTION,
  type ApplicationDoc,
  applicationIndexes,
  applicationQueries,
} from '../../shared/loans/applications.ts';
import { openTestDatabase, type TestDatabase, target } from '../support/mongo.ts';

const MARGIN_MS = 5_000;

describe(`outbox relay (MongoDB side) on ${target().kind}`, () => {
  let database: TestDatabase;
  const clock = { now: () => Date.now() };

  beforeAll(async () => {
    database = await openTestDatabase(import.meta.filename, { indexes: [applicationIndexes] });
  });
  afterAll(async () => {
    await database.close();
  });

  const applications = () => database.db.collection<ApplicationDoc>(APPLICATIONS_COLLECTION);
  const markers = () => database.db.collection<PublishedMarker>(OUTBOX_PUBLISHED_COLLECTION);
  const reset = async () => {
    await applications().deleteMany({});
    await markers().deleteMany({});
    await database.db.collection('replay_checkpoints').deleteMany({});
  };

  /** An application at `versions`, its log holding the last `logged` of them, stamped `at`. */
  async function insertApplication(id: string, versions: number, at = new Date(), logged = versions) {
    const changes = Array.from({ length: logged }, (_, index) => {
      const version = versions - logged + index + 1;
      return changeEntry({ version, at, by: 'admin-1', action: version === 1 ? 'create' : 'update', paths: [] });
    });
    await applications().insertOne({
      _id: id,
      applicantName: id,
      monthlyIncome: 1,
      loanAmount: 1,
      termMonths: 12,
      status: 'pending',
      version: versions,
      createdAt: at,
      updatedAt: at,
      createdBy: 'admin-1',
      updatedBy: 'admin-1',
      lastChange: { at, actor: 'admin-1', action: 'update', version: versions },
      changes,
      changeHead: changes.at(-1)?.id,
    } as ApplicationDoc);
  }

  /** One more version, written as the repository writes it (applicationQueries.change), stamped `at`. */
  async function change(id: string, path: string, value: unknown, at = new Date()) {
    const entry = changeEntry({ at, by: 'admin-2', action: 'update', paths: [{ path, new: value }] });
    await applications().updateOne(
      { _id: id },
      applicationQueries.change(
        { [path]: value, lastChange: { at, actor: 'admin-2', action: 'update' } } as Partial<ApplicationDoc>,
        entry,
        100,
      ),
    );
  }

  const relayInto = (sink: OutboxMessage[], options: { failAfterSend?: boolean } = {}) =>
    new OutboxRelay(database.db, clock, {
      marginMs: MARGIN_MS,
      batchSize: 2,
      publish: async (messages) => {
        sink.push(...messages);
        if (options.failAfterSend) throw new Error('killed after the broker acknowledged');
      },
    });

  it('publishes every version of every application, in order per key, and nothing again', async () => {
    await reset();
    for (const id of ['APP-a', 'APP-b', 'APP-c']) await insertApplication(id, 3);
    const sink: OutboxMessage[] = [];
    const relay = relayInto(sink);
    const result = await relay.pass();
    expect(result.published).toBe(9);
    for (const id of ['APP-a', 'APP-b', 'APP-c']) {
      const events = sink.filter((message) => message.key === id).map((message) => message.event);
      expect(events.map((event) => event.id)).toEqual([`${id}:1`, `${id}:2`, `${id}:3`]);
    }
    expect(await markers().find({}).sort({ _id: 1 }).toArray()).toEqual([
      { _id: 'APP-a', version: 3 },
      { _id: 'APP-b', version: 3 },
      { _id: 'APP-c', version: 3 },
    ]);
    // Nothing new: nothing sent. One change: exactly its event, with what it changed.
    expect((await relay.pass()).published).toBe(0);
    await change('APP-b', 'contact.phone', '+44 1');
    const after = await relay.pass();
    expect(after.published).toBe(1);
    expect(sink.at(-1)).toMatchObject({
      key: 'APP-b',
      event: { id: 'APP-b:4', version: 4, action: 'update', changes: [{ path: 'contact.phone', new: '+44 1' }] },
    });
  });

  it('a relay that dies after the send and before its marker: the next one sends the same events again', async () => {
    await reset();
    await insertApplication('APP-d', 2);
    const lost: OutboxMessage[] = [];
    await expect(relayInto(lost, { failAfterSend: true }).pass()).rejects.toThrow(/killed/);
    expect(lost.map((message) => message.event.id)).toEqual(['APP-d:1', 'APP-d:2']);
    expect(await markers().countDocuments({})).toBe(0);
    await change('APP-d', 'notes', {});
    const again: OutboxMessage[] = [];
    await relayInto(again).pass();
    // The duplicates are the same events (same ids, same bytes); the new change follows them.
    expect(again.map((message) => message.event.id)).toEqual(['APP-d:1', 'APP-d:2', 'APP-d:3']);
    expect(again.slice(0, 2).map((message) => JSON.stringify(message.event))).toEqual(
      lost.map((message) => JSON.stringify(message.event)),
    );
    expect(await markers().findOne({ _id: 'APP-d' })).toEqual({ _id: 'APP-d', version: 3 });
  });

  it('a change stamped before the last pass that lands after it is published (within the margin)', async () => {
    await reset();
    await insertApplication('APP-e', 1);
    const sink: OutboxMessage[] = [];
    const relay = relayInto(sink);
    await relay.pass();
    // Stamped half a margin ago by a writer whose write lands only now.
    await change('APP-e', 'purpose', 'roof', new Date(Date.now() - MARGIN_MS / 2));
    await relay.pass();
    expect(sink.map((message) => message.event.id)).toEqual(['APP-e:1', 'APP-e:2']);
  });

  it('a log trimmed past the marker: one changes_lost for the missing versions, then the logged ones', async () => {
    await reset();
    await insertApplication('APP-f', 2);
    await markers().insertOne({ _id: 'APP-f', version: 2 });
    // 150 versions by now, the log holding the last 100 (MERGE_HISTORY_VERSIONS).
    await applications().deleteOne({ _id: 'APP-f' });
    await insertApplication('APP-f', 150, new Date(), 100);
    const sink: OutboxMessage[] = [];
    const result = await relayInto(sink).pass();
    expect(result).toMatchObject({ published: 101, lost: 1 });
    expect(sink[0]!.event).toEqual({
      id: 'APP-f:lost:3-50',
      type: 'application.changes_lost',
      applicationId: 'APP-f',
      fromVersion: 3,
      version: 50,
    });
    expect(sink.slice(1).map((message) => message.event.version)).toEqual(
      Array.from({ length: 100 }, (_, i) => 51 + i),
    );
  });
});
