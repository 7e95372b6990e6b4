// Replay: redoes the effects of the changes a crash may have cut off between a write and its effects,
// from each document's lastChange, behind a durable checkpoint.
import type { Collection } from 'mongodb';
import type { Clock } from '../../core/clock.ts';
import { type WrittenChange, writtenChange } from './effects.ts';
import { versionedLog } from './history.ts';
import { applicationQueries } from './queries.ts';
import type { ApplicationDoc } from './schemas.ts';

/** How far replayChanges has got, durably: one document per replayed collection. */
export const REPLAY_CHECKPOINTS_COLLECTION = 'replay_checkpoints';
const REPLAY_CHECKPOINT_ID = 'applications.lastChange';

export interface ReplayResult {
  /** Documents whose latest change was replayed (changes within the margin count on every run). */
  replayed: number;
  /** Every change stamped before this has been replayed. */
  checkpoint: Date;
}

interface ReplayCheckpoint {
  _id: string;
  at: Date;
}

/** The change a document's lastChange describes, under the version it produced (later writes may have bumped it). */
function replayedChange({ lastChange, changes, ...app }: ApplicationDoc): WrittenChange {
  const from = lastChange.action === 'create' ? null : (lastChange.from ?? app.status);
  // A merge write cannot pin its version: its log entry's position tells it.
  const logged = lastChange.change
    ? versionedLog({ version: app.version, changes }).find((entry) => entry.id === lastChange.change)
    : undefined;
  return writtenChange({ ...app, version: lastChange.version ?? logged?.version ?? app.version }, from, lastChange);
}

/** See Applications.replayChanges. */
export async function replayChanges(
  collection: Collection<ApplicationDoc>,
  clock: Clock,
  recordEffects: (changes: WrittenChange[]) => Promise<void>,
  options: { marginMs: number; batchSize?: number },
): Promise<ReplayResult> {
  const batchSize = options.batchSize ?? 500;
  // Taken before reading: a change stamped before this, minus the margin, has landed by now.
  const safeUntil = new Date(clock.now() - options.marginMs);
  const checkpoints = collection.db.collection<ReplayCheckpoint>(REPLAY_CHECKPOINTS_COLLECTION);
  const saved = await checkpoints.findOne({ _id: REPLAY_CHECKPOINT_ID });
  // No checkpoint yet: replay from the first change ever stamped.
  let checkpoint = saved?.at ?? new Date(0);
  const advance = async (to: Date) => {
    if (to.getTime() <= checkpoint.getTime()) return;
    // $max: a run that lost its lease and finishes late cannot move it back.
    await checkpoints.updateOne({ _id: REPLAY_CHECKPOINT_ID }, { $max: { at: to } }, { upsert: true });
    checkpoint = to;
  };
  let replayed = 0;
  let after: { at: Date; id: string } | undefined;
  for (;;) {
    const docs = await collection
      .find(applicationQueries.changedFrom(checkpoint, after), { projection: applicationQueries.replayProjection })
      .sort(applicationQueries.replayOrder)
      .limit(batchSize)
      .toArray();
    await recordEffects(docs.map(replayedChange));
    replayed += docs.length;
    const last = docs.at(-1);
    if (!last || docs.length < batchSize) break;
    // Everything stamped before the last one is done (ties with it may be in the next batch).
    await advance(new Date(Math.min(last.lastChange.at.getTime(), safeUntil.getTime())));
    after = { at: last.lastChange.at, id: last._id };
  }
  await advance(safeUntil);
  return { replayed, checkpoint };
}
