// Every collection's indexes, created idempotently at start-up by each entry (ensureIndexes).
import type { IndexPlan } from './db.ts';

export const allIndexes: IndexPlan[] = [];
