// Waiting in tests: one sleep, and one poll that names what it waited for when it gives up.

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** Names the condition in the error. */
  what?: string;
  /** Appended to the error (a process's output, say): read only when the wait fails. */
  detail?: () => string;
}

/** Reads until `done(value)` holds; returns that value, or throws with the last value after `timeoutMs`. */
export async function waitForValue<T>(
  read: () => T | Promise<T>,
  done: (value: T) => boolean,
  { timeoutMs = 15_000, intervalMs = 50, what = 'condition', detail }: WaitOptions = {},
): Promise<T> {
  const started = performance.now();
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (performance.now() - started > timeoutMs) {
      const last = typeof value === 'boolean' ? '' : `; last value ${JSON.stringify(value)}`;
      throw new Error(`${what}: not met within ${timeoutMs} ms${last}${detail ? `\n${detail()}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

/** Polls `check` until it holds; returns how long that took in ms. */
export async function waitFor(check: () => boolean | Promise<boolean>, options: WaitOptions = {}): Promise<number> {
  const started = performance.now();
  await waitForValue(check, (held) => held, options);
  return performance.now() - started;
}
