// This instance's cache of application list pages and totals (shared/concurrency/ttl-cache.ts does the
// caching): what a list query is keyed by, and which entries a change of an application drops. A page
// entry holds the answer as the API sends it (its serialised body and ETag), so a hit costs neither.
import { type CacheRead, TtlCache } from '../../concurrency/ttl-cache.ts';
import type { Clock } from '../../core/clock.ts';
import { listPlan } from './cursors.ts';
import type { SortOption } from './schemas.ts';
import type { ApplicationStatus } from './status.ts';

/** A list answer as sent: the body, its entity tag, and when its oldest part was read. */
export interface CachedPage {
  body: string;
  etag: string;
  readAt: number;
}

/** An application now in `status`, coming from `from` (null or absent: created, or the status did not move). */
export interface ApplicationChange {
  status: ApplicationStatus;
  from?: ApplicationStatus | null;
}

/** What names a list page: the normalised query. */
export interface ListPageQuery {
  status?: ApplicationStatus;
  sort?: SortOption;
  /** A search (trimmed): part of the key, so each search has pages of its own. */
  q?: string;
  limit: number;
  page?: number;
  cursor?: string;
  withTotal: boolean;
}

export interface ListCacheOptions {
  clock: Clock;
  /** How long a page serves, from when its query was sent (ms); 0: every list is read (LIST_CACHE_MS). */
  pageMs: number;
  /** How long a total serves (ms); 0: every list with a total counts (LIST_TOTAL_CACHE_MS). */
  totalMs: number;
  /** Pages kept at most, the oldest evicted first (LIST_CACHE_MAX_ENTRIES); totals are at most one per status. */
  maxEntries: number;
}

/** An entry's tag: the status its list filters on, undefined for all of them. */
type StatusFilter = ApplicationStatus | undefined;

/** How many applications are in each status (every status present), and their sum. */
export interface StatusCounts {
  counts: Record<ApplicationStatus, number>;
  total: number;
}

export class ApplicationListCache {
  private readonly pages: TtlCache<CachedPage, StatusFilter>;
  private readonly totals: TtlCache<number, StatusFilter>;
  private readonly statusCounts: TtlCache<StatusCounts>;

  constructor(options: ListCacheOptions) {
    const { clock, maxEntries } = options;
    this.pages = new TtlCache({ clock, ttlMs: options.pageMs, maxEntries, readAtOf: (page) => page.readAt });
    this.totals = new TtlCache({ clock, ttlMs: options.totalMs, maxEntries: 64 });
    // The counts by status are a list answer like the pages: the same bound (LIST_CACHE_MS), one entry.
    this.statusCounts = new TtlCache({ clock, ttlMs: options.pageMs, maxEntries: 1 });
  }

  /**
   * The page `query` names: from this instance's memory while fresh, else from `load` (one load per page
   * at a time). A cursor is decoded first, so it and a query naming the same list share an entry, and a
   * contradicting query is refused (ValidationError) whatever the cache holds.
   */
  page(
    query: ListPageQuery,
    load: (signal?: AbortSignal) => Promise<CachedPage>,
    signal?: AbortSignal,
  ): Promise<CacheRead<CachedPage>> {
    const plan = listPlan(query);
    const key = JSON.stringify([
      plan.status ?? null,
      plan.sort,
      plan.q ?? null,
      query.cursor ?? null,
      plan.skip,
      query.limit,
      query.withTotal,
    ]);
    return this.pages.get(key, plan.status, load, signal);
  }

  /** The number of applications in each status: from memory while fresh, else from `load` (one at a time). */
  counts(
    load: (signal?: AbortSignal) => Promise<StatusCounts>,
    signal?: AbortSignal,
  ): Promise<CacheRead<StatusCounts>> {
    return this.statusCounts.get('counts', undefined, load, signal);
  }

  /** The total of a status (undefined: of all), shared by the pages that show it. */
  total(
    status: ApplicationStatus | undefined,
    load: () => Promise<number>,
  ): Promise<{ value: number; sentAt: number }> {
    return this.totals.get(status ?? '', status, load);
  }

  /**
   * Drops every page and total a change may alter: those of all statuses and those filtered on its status
   * or the one it left, and the counts by status (a feed's event does not tell a creation from an edit, so
   * every change drops them). A read in flight for one of them answers its waiters but is not kept.
   */
  changed(change: ApplicationChange): void {
    const concerned = (filter: StatusFilter) =>
      filter === undefined || filter === change.status || (change.from != null && filter === change.from);
    this.pages.drop(concerned);
    this.totals.drop(concerned);
    this.statusCounts.clear();
  }

  clear(): void {
    this.pages.clear();
    this.totals.clear();
    this.statusCounts.clear();
  }

  /** Pages held now (fresh or not yet evicted). */
  get size(): number {
    return this.pages.size;
  }
}
