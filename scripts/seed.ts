// Demo data: `npm run seed -- --applications 100000` inserts that many applications quickly
// (unordered bulk inserts of 5,000), with a progress bar. Reads MONGO_URL/MONGO_DB like the API.
import { parseArgs } from 'node:util';
import type { Db } from 'mongodb';
import { loadConfig } from '../shared/core/config.ts';
import { connect, ensureIndexes } from '../shared/core/db.ts';
import {
  APPLICATIONS_COLLECTION,
  type ApplicationDoc,
  type ApplicationStatus,
  applicationIndexes,
  changeEntry,
  newApplicationId,
} from '../shared/loans/applications.ts';
import { progress } from './progress.ts';

const firstNames = ['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Margaret', 'Ken', 'Radia', 'Tim'];
const lastNames = ['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Hamilton', 'Thompson', 'Perlman'];
const purposes = ['home improvement', 'car', 'education', 'debt consolidation', 'small business'];
// Mostly new work, some in flight, a few finished: what a back office looks like on a Monday.
const statusMix: ApplicationStatus[] = [
  'pending',
  'pending',
  'pending',
  'pending',
  'under_review',
  'under_review',
  'approved',
  'rejected',
];

export function demoApplication(n: number, now: number): ApplicationDoc {
  const at = new Date(now - (n % 100_000) * 60_000);
  // The change log starts at creation, as Applications.create starts it: PATCH merges from version 1 on.
  const created = changeEntry({ version: 1, at, by: 'seed', action: 'create', paths: [] });
  const pick = <T>(list: readonly T[], salt: number) => list[(n * 7919 + salt) % list.length]!;
  const monthlyIncome = 1_500 + ((n * 37) % 120) * 100;
  return {
    _id: newApplicationId(),
    applicantName: `${pick(firstNames, 1)} ${pick(lastNames, 2)}`,
    email: `applicant${n}@example.com`,
    monthlyIncome,
    loanAmount: 1_000 + ((n * 53) % 200) * 500,
    termMonths: pick([12, 24, 36, 48, 60], 3),
    purpose: pick(purposes, 4),
    identityNumber: `ID-${String(100000 + n).slice(-6)}`,
    status: pick(statusMix, 5),
    version: 1,
    createdAt: at,
    updatedAt: at,
    createdBy: 'seed',
    updatedBy: 'seed',
    lastChange: { at, actor: 'seed', action: 'create' },
    changes: [created],
    changeHead: created.id,
  };
}

export async function seedApplications(db: Db, count: number, onProgress?: (done: number) => void): Promise<number> {
  await ensureIndexes(db, [applicationIndexes]);
  const collection = db.collection<ApplicationDoc>(APPLICATIONS_COLLECTION);
  const chunk = 5_000;
  const now = Date.now();
  let done = 0;
  while (done < count) {
    const size = Math.min(chunk, count - done);
    await collection.insertMany(
      Array.from({ length: size }, (_, i) => demoApplication(done + i, now)),
      { ordered: false },
    );
    done += size;
    onProgress?.(done);
  }
  return done;
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { applications: { type: 'string', default: '1000' } } });
  const count = Number(values.applications);
  if (!Number.isInteger(count) || count < 0) {
    console.error('usage: npm run seed -- --applications N   (N >= 0)');
    process.exit(2);
  }
  const config = loadConfig(process.env);
  const database = await connect(config);
  const bar = progress('applications', count);
  await seedApplications(database.db, count, (done) => bar.update(done));
  const ms = bar.done();
  console.log(
    `seeded ${count.toLocaleString('en-US')} applications into ${config.MONGO_DB} in ${(ms / 1000).toFixed(1)} s`,
  );
  await database.close();
}
