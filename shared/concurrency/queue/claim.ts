// Claiming, for one worker: a search for candidates (due waiting jobs and expired leases) and a
// compare-and-swap per candidate, or a server-side claim when little is due. It decides how to
// search; the worker decides when. Runtime-neutral: Web APIs only.
import type { Collection } from 'mongodb';
import type { ServerClock } from '../../core/clock.ts';
import type { JobDocument } from './job.ts';
import {
  type Candidate,
  candidateProjection,
  claimableFilter,
  claimOrder,
  claimUpdate,
  claimWaitingFilter,
  expiredLeaseFilter,
  failUpdate,
  fencedFilter,
  reclaimStalledUpdate,
} from './plans.ts';
import type { WorkerCounters } from './worker.ts';

export interface ClaimSettings {
  collection: Collection<JobDocument>;
  clock: ServerClock;
  names: readonly string[];
  workerId: string;
  leaseMs: number;
  maxStalledCount: number;
  /** How long the candidates of one search may serve later claims. */
  candidateTtlMs: number;
  counters: WorkerCounters;
}

/** What claiming needs of its worker. */
export interface ClaimHost {
  closing(): boolean;
  freeSlots(): number;
  /** Runs a claimed job. */
  start(doc: JobDocument): void;
  /** Asks for another claim round once this one ends. */
  again(): void;
}

/** Shuffles each run of equal priority in place (Fisher-Yates), keeping priorities in order. */
function shuffleWithinPriority(candidates: Candidate[]): void {
  let start = 0;
  while (start < candidates.length) {
    let end = start + 1;
    while (end < candidates.length && candidates[end]!.priority === candidates[start]!.priority) end++;
    for (let i = end - 1; i > start; i--) {
      const j = start + Math.floor(Math.random() * (i - start + 1));
      [candidates[i], candidates[j]] = [candidates[j]!, candidates[i]!];
    }
    start = end;
  }
}

export class Claimer {
  /** The last search found fewer jobs than it asked for: nothing more is due until something changes. */
  drained = false;
  /** The next round must search (poll tick): it is what finds expired leases. */
  private searchNext = true;
  /** Unclaimed candidates of the last search, in claim order, and when it ran (server clock). */
  private hints: Candidate[] = [];
  private hintsAt = Number.NEGATIVE_INFINITY;
  /** Recent claim conflicts, decaying; while high, candidates are tried in a shuffled order. */
  private contention = 0;

  private readonly settings: ClaimSettings;
  private readonly host: ClaimHost;

  constructor(settings: ClaimSettings, host: ClaimHost) {
    this.settings = settings;
    this.host = host;
  }

  get hasCandidates(): boolean {
    return this.hints.length > 0;
  }

  /** Makes the next round a search. */
  mustSearch(): void {
    this.searchNext = true;
  }

  /** One claim round for up to `free` jobs. */
  async round(free: number): Promise<void> {
    // With little or nothing due, workers woken together would all swap for the same few
    // jobs; a server-side claim lets them queue up instead. A backlog is searched in batches.
    const fresh = this.settings.clock.now() - this.hintsAt <= this.settings.candidateTtlMs;
    if (this.hints.length > 0 && fresh && !this.searchNext) await this.claimHints();
    else if (this.drained && !this.searchNext) await this.claimDirectly(free);
    else await this.search(free);
  }

  /** One findOneAndUpdate per free slot, in claim order, until none is due. */
  private async claimDirectly(free: number): Promise<void> {
    const { collection, clock, counters, leaseMs, workerId } = this.settings;
    for (let i = 0; i < free && !this.host.closing(); i++) {
      const now = clock.now();
      counters.searches++;
      const doc = await collection.findOneAndUpdate(
        claimWaitingFilter(this.settings.names, new Date(now)),
        claimUpdate(crypto.randomUUID(), new Date(now + leaseMs), workerId, new Date(now)),
        { sort: claimOrder, returnDocument: 'after' },
      );
      if (!doc) {
        counters.emptyClaims++;
        return;
      }
      this.host.start(doc);
    }
    // Every slot found a job: there may be a backlog, which a batched search serves better.
    this.drained = false;
    if (this.host.freeSlots() > 0) this.host.again();
  }

  /**
   * One search for more candidates than free slots, then a compare-and-swap per candidate.
   * The search costs a scan; the swaps are by {_id, lockToken}.
   */
  private async search(free: number): Promise<void> {
    this.searchNext = false;
    const now = this.settings.clock.now();
    // Under contention a wider window, tried in a shuffled order, spreads workers apart.
    const contended = this.contention > 0.5;
    const limit = Math.min(contended ? 16 * free + 16 : 4 * free + 16, 1_000);
    this.settings.counters.searches++;
    const candidates = (await this.settings.collection
      .find(claimableFilter(this.settings.names, new Date(now)), {
        sort: claimOrder,
        limit,
        projection: candidateProjection,
      })
      .toArray()) as Candidate[];
    this.drained = candidates.length < limit;
    // Workers that search at once see the same candidates in the same order; once they collide,
    // each tries them in its own order within a priority (order among equals is FIFO-ish anyway).
    if (contended) shuffleWithinPriority(candidates);
    this.hints = candidates;
    this.hintsAt = now;
    await this.claimHints();
    // Candidates lost to other workers but more may be due: search again.
    if (!this.drained && this.hints.length === 0 && this.host.freeSlots() > 0) this.host.again();
  }

  /**
   * Claims from the candidates of the last search while they are fresh: a slot that frees soon
   * after a search needs no new scan. A candidate someone else took costs one refused swap.
   */
  private async claimHints(): Promise<void> {
    const conflictsBefore = this.settings.counters.claimConflicts;
    while (this.hints.length > 0 && !this.host.closing()) {
      const want = this.host.freeSlots();
      if (want <= 0) break;
      const batch = this.hints.splice(0, want);
      const claimed = await Promise.all(batch.map((candidate) => this.claim(candidate)));
      for (const doc of claimed) if (doc) this.host.start(doc);
      // Mostly taken already: other workers are working through the same candidates, so the
      // rest are likely gone too; a new search is cheaper than swapping for each of them.
      const lost = claimed.filter((doc) => !doc).length;
      if (lost > 0 && lost * 2 >= batch.length) {
        this.hints = [];
        if (this.host.freeSlots() > 0) this.host.again();
      }
    }
    this.contention = this.contention * 0.8 + (this.settings.counters.claimConflicts - conflictsBefore);
  }

  private async claim(candidate: Candidate): Promise<JobDocument | null> {
    const { collection, clock, counters } = this.settings;
    const now = clock.now();
    const token = crypto.randomUUID();
    const lockedUntil = new Date(now + this.settings.leaseMs);
    if (candidate.state === 'active') return this.takeOverStalled(candidate, token, lockedUntil, now);
    const doc = await collection.findOneAndUpdate(
      fencedFilter(candidate._id, candidate.lockToken),
      claimUpdate(token, lockedUntil, this.settings.workerId, new Date(now)),
      { returnDocument: 'after' },
    );
    if (!doc) counters.claimConflicts++;
    return doc;
  }

  /** An expired lease: claimed again, or failed as stalled once it stalled too often. */
  private async takeOverStalled(
    candidate: Candidate,
    token: string,
    lockedUntil: Date,
    now: number,
  ): Promise<JobDocument | null> {
    const { collection, counters, maxStalledCount } = this.settings;
    const filter = expiredLeaseFilter(candidate._id, candidate.lockToken, new Date(now));
    if (candidate.stalledCount >= maxStalledCount) {
      const error = {
        name: 'StalledError',
        message: `job stalled more than ${maxStalledCount} time(s)`,
        at: new Date(now),
      };
      const result = await collection.updateOne(filter, failUpdate(token, error, false));
      if (result.modifiedCount) counters.stalledFailed++;
      return null;
    }
    const doc = await collection.findOneAndUpdate(
      filter,
      reclaimStalledUpdate(token, lockedUntil, this.settings.workerId, new Date(now)),
      { returnDocument: 'after' },
    );
    if (doc) counters.stalledReclaimed++;
    else counters.claimConflicts++;
    return doc;
  }
}
