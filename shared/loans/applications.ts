// Loan applications, one module per concern under applications/: the status machine, the schemas and
// stored document, the collection's queries and indexes, list cursors, this instance's list cache, update preconditions, the
// effects that follow a write, replay, and the repository. Importers use this one entry.
export * from './applications/cursors.ts';
export { recordEffects, type WrittenChange } from './applications/effects.ts';
export * from './applications/history.ts';
export {
  type ApplicationChange,
  ApplicationListCache,
  type CachedPage,
  type ListCacheOptions,
  type ListPageQuery,
  type StatusCounts,
} from './applications/list-cache.ts';
export * from './applications/merge.ts';
export {
  ApplicationPatches,
  type MergedChange,
  type PatchBase,
  type PatchOptions,
  type PatchResult,
  patchQueries,
} from './applications/patches.ts';
export type { Precondition } from './applications/preconditions.ts';
export { APPLICATIONS_COLLECTION, applicationIndexes, applicationQueries } from './applications/queries.ts';
export { REPLAY_CHECKPOINTS_COLLECTION, type ReplayResult } from './applications/replay.ts';
export {
  Applications,
  type ApplicationsOptions,
  type BatchItemResult,
  type BatchOutcome,
  type BatchResult,
  type ListQuery,
  type ListResult,
} from './applications/repository.ts';
export * from './applications/schemas.ts';
export * from './applications/status.ts';
