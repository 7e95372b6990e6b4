// Lease keeping, apart from claiming and outcomes (as BullMQ keeps lock renewal in its own lock
// manager): while a handler runs, its job's lease is renewed every heartbeatMs by a write fenced on
// the claim's token. A refused renewal, or a deadline passed without a confirmed one, aborts the
// handler, since another worker may now hold the job. Runtime-neutral: Web APIs only.
import type { Collection } from 'mongodb';
import type { ServerClock } from '../../core/clock.ts';
import type { JobDocument } from './job.ts';
import { fencedFilter, heartbeatUpdate } from './plans.ts';

export interface LeaseSettings {
  collection: Collection<JobDocument>;
  clock: ServerClock;
  leaseMs: number;
  heartbeatMs: number;
  /** Called once per lease lost while its handler ran. */
  onLost: () => void;
  onError: (error: unknown) => void;
}

/** The lease on one claimed job: the claim's token, its deadline, and the handler's abort signal. */
export class Lease {
  readonly token: string;
  readonly controller = new AbortController();
  /** Handed back to waiting by close(): the handler's outcome is not written. */
  released = false;
  private lockedUntil: number;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private deadline: ReturnType<typeof setTimeout> | undefined;

  private readonly doc: JobDocument;
  private readonly settings: LeaseSettings;

  constructor(doc: JobDocument, settings: LeaseSettings) {
    this.doc = doc;
    this.settings = settings;
    this.token = doc.lockToken;
    this.lockedUntil = doc.lockedUntil?.getTime() ?? settings.clock.now() + settings.leaseMs;
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Arms the deadline and renews every heartbeatMs until stopped. */
  keep(): void {
    this.armDeadline();
    this.heartbeat = setInterval(() => void this.renew(), this.settings.heartbeatMs);
  }

  stop(): void {
    clearInterval(this.heartbeat);
    clearTimeout(this.deadline);
  }

  /** Stops renewing and aborts the handler; the caller hands the job back to waiting. */
  release(reason: Error): void {
    this.released = true;
    this.stop();
    this.controller.abort(reason);
  }

  /** Aborts the handler when the lease deadline passes without a confirmed renewal. */
  private armDeadline(): void {
    clearTimeout(this.deadline);
    this.deadline = setTimeout(
      () => this.lose('lease deadline passed without renewal'),
      Math.max(0, this.lockedUntil - this.settings.clock.now()),
    );
  }

  private lose(reason: string): void {
    if (this.signal.aborted) return;
    this.settings.onLost();
    this.stop();
    this.controller.abort(new Error(`lease lost: ${reason}`));
  }

  private async renew(): Promise<void> {
    if (this.signal.aborted) return;
    const until = this.settings.clock.now() + this.settings.leaseMs;
    try {
      const result = await this.settings.collection.updateOne(
        fencedFilter(this.doc._id, this.token),
        heartbeatUpdate(new Date(until)),
      );
      if (this.signal.aborted || this.released) return;
      if (result.matchedCount === 0) this.lose('another worker holds the job');
      else {
        this.lockedUntil = until;
        this.armDeadline();
      }
    } catch (error) {
      this.settings.onError(error); // the deadline timer aborts the handler if renewals keep failing
    }
  }
}
