// How an idle worker learns that a job may be claimable: a change stream on the jobs collection
// where the server has one, a poll every pollMs as the safety net (delayed jobs, expired leases,
// missed events), and a timer for a due time seen ahead. It only ever asks the worker for a claim
// round. Runtime-neutral: Web APIs only.
import type { ChangeStream, Collection } from 'mongodb';
import { type ServerClock, sleep } from '../../core/clock.ts';
import type { JobDocument } from './job.ts';
import { wakeUpPipeline } from './plans.ts';

export type WakeUp = 'auto' | 'change-stream' | 'poll';

/** What the wake-up needs of its worker. */
export interface WakeUpHost {
  /** Asks for a claim round; 'poll' makes it a search, which is also how expired leases are found. */
  kick(reason: 'event' | 'poll'): void;
  /** Free slots and no due job left: only then do change events matter. */
  idle(): boolean;
  /** A change arrived that may make a job claimable now. */
  changed(): void;
  onError(error: unknown): void;
}

export interface WakeUpSettings {
  collection: Collection<JobDocument>;
  clock: ServerClock;
  pollMs: number;
  /** A server that answers an empty getMore at once (no awaitData) is asked at most this often. */
  paceMs: number;
  /** A change event is acted on this long after it arrives, with any that follow. */
  eventDelayMs: number;
}

/** Change stream with polling fallback, for one worker. */
export class WakeUpSource {
  mode: 'change-stream' | 'poll' = 'poll';
  private closing = false;
  /** Wakes the change-stream reader when a slot frees or a claim round ends. */
  private gate: { promise: Promise<void>; open: () => void } | null = null;
  private pollTimer: ReturnType<typeof setTimeout> | undefined;
  private dueTimer: ReturnType<typeof setTimeout> | undefined;
  private dueAt = Number.POSITIVE_INFINITY;
  private eventTimer: ReturnType<typeof setTimeout> | undefined;
  private stream: ChangeStream | null = null;
  private streamLoop: Promise<void> | null = null;

  private readonly settings: WakeUpSettings;
  private readonly host: WakeUpHost;

  constructor(settings: WakeUpSettings, host: WakeUpHost) {
    this.settings = settings;
    this.host = host;
  }

  /** Opens the change stream unless told to poll, then starts the poll timer. */
  async start(wakeUp: WakeUp): Promise<void> {
    if (wakeUp !== 'poll') {
      try {
        await this.openStream();
      } catch (error) {
        // A standalone mongod refuses $changeStream: 'auto' settles for polling.
        if (wakeUp === 'change-stream') throw error;
        this.host.onError(error);
      }
    }
    this.schedulePoll();
  }

  /** Stops every timer and the change stream, and waits for its reader to return. */
  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.pollTimer);
    clearTimeout(this.dueTimer);
    clearTimeout(this.eventTimer);
    this.openGate();
    const stream = this.stream;
    this.stream = null;
    await stream?.close().catch(() => {});
    await this.streamLoop;
  }

  openGate(): void {
    const gate = this.gate;
    this.gate = null;
    gate?.open();
  }

  private waitGate(): Promise<void> {
    if (!this.gate) {
      let open = () => {};
      const promise = new Promise<void>((resolve) => (open = resolve));
      this.gate = { promise, open };
    }
    return this.gate.promise;
  }

  private schedulePoll(): void {
    if (this.closing) return;
    this.pollTimer = setTimeout(() => {
      this.settings.clock.maybeSync().catch((error) => this.host.onError(error));
      this.host.kick('poll');
      this.schedulePoll();
    }, this.settings.pollMs);
  }

  /** Wakes at a known future due time (a delayed insert or a retry seen on the change stream). */
  private scheduleDue(at: number): void {
    if (this.closing || at >= this.dueAt) return;
    clearTimeout(this.dueTimer);
    this.dueAt = at;
    this.dueTimer = setTimeout(
      () => {
        this.dueAt = Number.POSITIVE_INFINITY;
        this.host.kick('event');
      },
      Math.max(0, at - this.settings.clock.now()) + 5,
    );
  }

  private async openStream(): Promise<void> {
    // A short await keeps run() quick on a replica set, where the first tryNext waits this long.
    const stream = this.settings.collection.watch(wakeUpPipeline, {
      maxAwaitTimeMS: Math.min(this.settings.pollMs, 500),
    });
    try {
      // The aggregate is sent lazily: ask once so that an unsupported server fails here.
      const first = await stream.tryNext();
      if (first) this.onChange(first);
    } catch (error) {
      await stream.close().catch(() => {});
      throw error;
    }
    this.stream = stream;
    this.mode = 'change-stream';
    this.streamLoop = this.readStream(stream);
  }

  private async readStream(stream: ChangeStream): Promise<void> {
    while (!this.closing && this.stream === stream) {
      // Events only matter to a worker with free slots that has run out of due jobs; a busy
      // worker leaves them in the server and reads the backlog in one batch later.
      if (!this.host.idle()) {
        await this.waitGate();
        continue;
      }
      const began = Date.now();
      try {
        const change = await stream.tryNext();
        if (change) {
          this.onChange(change);
          continue;
        }
      } catch (error) {
        if (this.closing || this.stream !== stream) return;
        await this.reopenAfter(stream, error);
        return;
      }
      // mongo-java-server answers an empty getMore at once; a real server waits maxAwaitTimeMS.
      const waited = Date.now() - began;
      if (waited < this.settings.paceMs) await sleep(this.settings.paceMs - waited);
    }
  }

  /**
   * The driver resumes by itself after transient errors; this one ended the stream. Poll
   * meanwhile, then open a new one (which starts a new reader).
   */
  private async reopenAfter(stream: ChangeStream, error: unknown): Promise<void> {
    this.host.onError(error);
    this.stream = null;
    this.mode = 'poll';
    await stream.close().catch(() => {});
    await sleep(this.settings.pollMs);
    if (this.closing) return;
    await this.openStream().catch((reopenError) => this.host.onError(reopenError));
  }

  private onChange(change: unknown): void {
    const event = change as {
      fullDocument?: { runAt?: unknown };
      updateDescription?: { updatedFields?: { runAt?: unknown } };
    };
    const runAt = event.updateDescription?.updatedFields?.runAt ?? event.fullDocument?.runAt;
    if (runAt instanceof Date && runAt.getTime() > this.settings.clock.now()) this.scheduleDue(runAt.getTime());
    else {
      this.host.changed();
      // Workers all see each insert; gathering a few milliseconds of them before claiming means
      // fewer claim rounds, and so fewer rounds in which all but one worker come back empty.
      this.eventTimer ??= setTimeout(() => {
        this.eventTimer = undefined;
        this.host.kick('event');
      }, this.settings.eventDelayMs);
    }
  }
}
